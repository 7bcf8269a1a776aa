"""Evaluation: the paper's ranking metrics (``metrics``), the protocol that runs a ranker over a
split (``protocol``, with the simulator's true reward) and plots (``plots``)."""
