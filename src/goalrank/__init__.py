"""GoalRank: a generator-only ranker trained against a group-relative reference policy."""

__version__ = "0.1.0"
