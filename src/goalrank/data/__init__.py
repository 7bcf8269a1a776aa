"""From raw interaction logs to list-wise ranking samples (paper §4.1.1, App. D.1)."""
