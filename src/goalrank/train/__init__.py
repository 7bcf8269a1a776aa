"""Training: the loop (``loop``), run-time plumbing (``runtime``), DDP (``distributed``), training
runs (``run``) and the training-step benchmark (``bench``)."""
