"""Evaluation: the paper's ranking metrics (``metrics``), the protocol that runs a ranker over a
split (``protocol``) and the report of a trained run (``report``)."""
