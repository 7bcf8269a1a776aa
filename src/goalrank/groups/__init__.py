"""Group construction (paper §3.3, App. C): auxiliary policies propose lists, a group keeps K distinct ones."""

from goalrank.groups.auxiliary import (
    LoggedPolicy,
    PopularityPolicy,
    RewardBeamPolicy,
    ScorerPolicy,
    ScorerShufflePolicy,
)
from goalrank.groups.build import (
    POLICY_NAMES,
    GroupConfig,
    allocate,
    build_group,
    duplicate_mask,
    fill_duplicates,
    spaced_subset,
)
from goalrank.groups.context import GroupContext, GroupPolicy, random_lists
from goalrank.groups.policies import (
    AutoregressivePolicy,
    DiversityPolicy,
    GumbelPolicy,
    MarkovPolicy,
    RandomPolicy,
    SubstitutionPolicy,
    TreePolicy,
)

__all__ = [
    "POLICY_NAMES",
    "AutoregressivePolicy",
    "DiversityPolicy",
    "GroupConfig",
    "GroupContext",
    "GroupPolicy",
    "GumbelPolicy",
    "LoggedPolicy",
    "MarkovPolicy",
    "PopularityPolicy",
    "RandomPolicy",
    "RewardBeamPolicy",
    "ScorerPolicy",
    "ScorerShufflePolicy",
    "SubstitutionPolicy",
    "TreePolicy",
    "allocate",
    "build_group",
    "duplicate_mask",
    "fill_duplicates",
    "random_lists",
    "spaced_subset",
]
