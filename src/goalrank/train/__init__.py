"""Training: losses (losses.py), per-model objectives (objectives.py), the loop and run folders."""
