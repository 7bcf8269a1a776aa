"""Trained runs on disk: the run folder's files (``folder``), checkpoint I/O (``checkpoint``), the
model registry (``registry``) and rebuilding a trained model from its folder (``load``)."""
