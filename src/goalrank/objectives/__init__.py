"""Training objectives: the losses (``losses``) and what each kind of model minimises on one batch.

- ``reward``: BCE of the list-wise reward model on logged lists (paper App. B).
- ``ranker``: BCE of item-wise scores (generator-only baselines) and self-trained models.
- ``group_relative``: GoalRank (paper §3.2–3.3, Eq. 4–5), configured by ``reference``.

Below ``train`` and above ``groups``: the model registry (``runs.registry``) names each model's
objective factory, and the service loads runs without importing the training loop.
"""
