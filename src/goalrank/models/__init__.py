"""Rankers: GoalRank's generator and the paper's baselines, all behind one interface (base.py)."""
