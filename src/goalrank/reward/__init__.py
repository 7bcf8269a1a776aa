"""The list-wise reward model r(u, l) (paper App. B): the evaluator shared by every method."""

from goalrank.reward.model import RewardConfig, RewardModel

__all__ = ["RewardConfig", "RewardModel"]
