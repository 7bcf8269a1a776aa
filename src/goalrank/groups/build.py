"""Build a group of K distinct lists per request from a weighted mix of the auxiliary policies.

Paper §3.3 "Group construction": the group G_u unites lists from several ranking policies (App. C)
so that its rewards spread widely enough for their order to survive the reward model's bias
(Eq. 3). Optionally (§3.3, "as an additional option") a larger pool is built, ranked by reward,
and K uniformly spaced lists are kept, which widens the reward gaps further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from goalrank.config import check
from goalrank.errors import ConfigError
from goalrank.groups.auxiliary import (
    LoggedPolicy,
    PopularityPolicy,
    RewardBeamPolicy,
    ScorerPolicy,
    ScorerShufflePolicy,
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

POLICY_TYPES: tuple[type[GroupPolicy], ...] = (
    AutoregressivePolicy,
    TreePolicy,
    GumbelPolicy,
    MarkovPolicy,
    RandomPolicy,
    ScorerPolicy,
    ScorerShufflePolicy,
    RewardBeamPolicy,
    PopularityPolicy,
    LoggedPolicy,
    SubstitutionPolicy,
    DiversityPolicy,
)
# Run order matters: substitution and diversity come last so that they see the other lists.
POLICY_NAMES: tuple[str, ...] = tuple(policy.name for policy in POLICY_TYPES)
SCORER_POLICIES = (ScorerPolicy.name, ScorerShufflePolicy.name)  # need group.scorer_run


def _default_mix() -> dict[str, float]:
    """Every policy once, but the two that need a pretrained scorer run (opt-in with group.scorer_run)."""
    return {name: 1.0 for name in POLICY_NAMES if name not in SCORER_POLICIES}


@dataclass
class GroupConfig:
    """How groups are built (config section ``group``).

    group_size: K, lists per request (paper Table 3: 8–20 works best).
    mix: policy name → non-negative weight; K is split by largest-remainder rounding. The default
        weighs every policy equally except ``scorer`` and ``scorer_shuffle``, which need a
        pretrained run. A ``group.mix.NAME=w`` override replaces the whole default mix by the
        names given.
    scorer_run: run folder of a trained item-wise ranker (e.g. ``--model dnn``), loaded frozen
        for the ``scorer`` policies; "" for none.
    autoregressive, …, diversity: each policy's own knobs (``goalrank.groups.policies`` and
        ``goalrank.groups.auxiliary``), nested under its name: ``group.markov.top=12``.
    max_fill_rounds: rounds of drawing random lists to replace duplicates.
    spaced_pool_size: when set (> group_size), build this many distinct lists, rank them by
        reward and keep group_size uniformly spaced ones, best and worst included.
    """

    group_size: int = 20
    mix: dict[str, float] = field(default_factory=_default_mix)
    autoregressive: AutoregressivePolicy = field(default_factory=AutoregressivePolicy)
    tree: TreePolicy = field(default_factory=TreePolicy)
    gumbel: GumbelPolicy = field(default_factory=GumbelPolicy)
    markov: MarkovPolicy = field(default_factory=MarkovPolicy)
    random: RandomPolicy = field(default_factory=RandomPolicy)
    scorer: ScorerPolicy = field(default_factory=ScorerPolicy)
    scorer_shuffle: ScorerShufflePolicy = field(default_factory=ScorerShufflePolicy)
    reward_beam: RewardBeamPolicy = field(default_factory=RewardBeamPolicy)
    popularity: PopularityPolicy = field(default_factory=PopularityPolicy)
    logged: LoggedPolicy = field(default_factory=LoggedPolicy)
    substitution: SubstitutionPolicy = field(default_factory=SubstitutionPolicy)
    diversity: DiversityPolicy = field(default_factory=DiversityPolicy)
    scorer_run: str = ""
    max_fill_rounds: int = 10
    spaced_pool_size: int | None = None

    def __post_init__(self) -> None:
        check(self.group_size >= 2, "group.group_size", ">= 2", self.group_size)
        if not isinstance(self.mix, dict):
            raise ConfigError(f"group.mix={self.mix!r}: expected a table of policy name = weight")
        unknown = sorted(set(self.mix) - set(POLICY_NAMES))
        check(not unknown, "group.mix", f"policy names among {list(POLICY_NAMES)}", unknown)
        self.mix = {name: _weight(name, weight) for name, weight in self.mix.items()}
        check(sum(self.mix.values()) > 0, "group.mix", "at least one positive weight", self.mix)
        scorer_policies = [name for name in SCORER_POLICIES if self.mix.get(name, 0.0) > 0]
        check(not scorer_policies or bool(self.scorer_run), "group.scorer_run",
              f"a trained item-wise ranker's run folder, as group.mix uses {scorer_policies}", self.scorer_run)
        check(self.max_fill_rounds >= 1, "group.max_fill_rounds", ">= 1", self.max_fill_rounds)
        check(
            self.spaced_pool_size is None or self.spaced_pool_size > self.group_size,
            "group.spaced_pool_size", f"unset or > group.group_size={self.group_size}", self.spaced_pool_size,
        )

    def check_fits(self, num_candidates: int, list_len: int) -> None:
        """ConfigError unless N candidates have as many distinct lists of length L as a group needs.

        Called when a run starts (the dataset gives N and L), so a group too large is refused
        before the run folder exists, not at the first training step.
        """
        field, size = (("group.spaced_pool_size", self.spaced_pool_size) if self.spaced_pool_size is not None
                       else ("group.group_size", self.group_size))
        capacity = math.perm(num_candidates, list_len)
        check(capacity >= size, field, f"at most {capacity}, the number of distinct lists of length {list_len} "
              f"from {num_candidates} candidates", size)

    def policies(self) -> dict[str, GroupPolicy]:
        """Every policy with its knobs, in run order (POLICY_NAMES)."""
        policies = {policy.name: policy for policy in (
            self.autoregressive, self.tree, self.gumbel, self.markov, self.random, self.scorer,
            self.scorer_shuffle, self.reward_beam, self.popularity, self.logged, self.substitution,
            self.diversity)}
        return {name: policies[name] for name in POLICY_NAMES}

    def uses(self, *names: str) -> bool:
        """Whether the mix gives any of the policies ``names`` a positive weight."""
        return any(self.mix.get(name, 0.0) > 0 for name in names)


def _weight(name: str, value: object) -> float:
    """A mix weight as a finite float >= 0 (TOML gives numbers, ``key=value`` overrides give strings)."""
    try:
        weight = float(value) if isinstance(value, (int, float, str)) else math.nan
    except ValueError as exc:
        raise ConfigError(f"group.mix.{name}={value!r}: expected a number") from exc
    check(math.isfinite(weight) and weight >= 0, f"group.mix.{name}", "a finite number >= 0", value)
    return weight


def allocate(num_lists: int, mix: dict[str, float]) -> dict[str, int]:
    """Split ``num_lists`` across policies ∝ weight by largest-remainder rounding, in run order.

    Each policy gets the floor of its quota; the lists left over go to the largest fractional
    parts, ties to the policy earlier in POLICY_NAMES, so the split is deterministic.
    """
    names = [name for name in POLICY_NAMES if mix.get(name, 0.0) > 0]
    total = sum(mix[name] for name in names)
    quotas = [num_lists * mix[name] / total for name in names]
    counts = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(names)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: num_lists - sum(counts)]:
        counts[i] += 1
    return dict(zip(names, counts, strict=True))


def duplicate_mask(group: torch.Tensor) -> torch.Tensor:
    """(B, K) True where a list equals an earlier list of the same request.

    Exact pairwise comparison, O(B·K²·L) booleans: for the group sizes of the paper (K ≤ 100)
    this is small, and unlike a hash of the L positions it can never report a false duplicate.
    """
    same = (group[:, :, None] == group[:, None]).all(dim=3)  # (B, K, K)
    earlier = torch.ones(group.shape[1], group.shape[1], dtype=torch.bool, device=group.device).tril(-1)
    return (same & earlier).any(dim=2)


def fill_duplicates(ctx: GroupContext, group: torch.Tensor, max_rounds: int) -> torch.Tensor:
    """Replace repeated lists with fresh random ones until every request's K lists are distinct.

    The first occurrence of a list is kept, so lists earlier in the group (e.g. ``ctx.existing``)
    survive. Random lists of N candidates rarely collide (N=50, L=6 gives 1.1e10 lists), so a
    few rounds suffice; after ``max_rounds`` a ConfigError asks for a smaller group.
    """
    for _ in range(max_rounds):
        repeated = duplicate_mask(group)  # (B, K)
        if not repeated.any():
            return group
        group = torch.where(repeated[..., None], random_lists(ctx, group.shape[1]), group)
    if duplicate_mask(group).any():
        raise ConfigError(
            f"group.max_fill_rounds={max_rounds}: could not find {group.shape[1]} distinct lists of"
            f" length {ctx.list_len} among {ctx.num_candidates} candidates; lower group.group_size"
            " or raise group.max_fill_rounds"
        )
    return group


def spaced_subset(ctx: GroupContext, pool: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B, K, L): the pool (B, P, L) ranked by reward, K uniformly spaced ranks kept (paper §3.3).

    Ranks round(i·(P−1)/(K−1)), i = 0..K−1, so the best and the worst list are always kept and
    the rewards of the kept lists are spread over the pool's whole range.
    """
    rewards = ctx.evaluator.list_reward(ctx.batch, pool)  # (B, P)
    order = rewards.argsort(dim=1, descending=True)
    ranks = torch.linspace(0, pool.shape[1] - 1, group_size, device=ctx.device).round().long()  # (K,)
    chosen = order[:, ranks]  # (B, K)
    return pool.gather(1, chosen[..., None].expand(-1, -1, pool.shape[2]))


@torch.no_grad()
def build_group(ctx: GroupContext, config: GroupConfig) -> torch.Tensor:
    """(B, K, L) distinct lists per request: ``ctx.existing`` first, then the mix's proposals.

    The K − K0 new lists are split across policies by ``allocate`` and proposed in POLICY_NAMES
    order, each policy seeing every list before it as ``existing``; duplicates within a request
    are then replaced by random lists. In spaced mode the pool of ``spaced_pool_size`` lists is
    reduced to K by reward (existing lists compete like any other, and the result is in reward
    order).
    """
    config.check_fits(ctx.num_candidates, ctx.list_len)
    size = config.spaced_pool_size or config.group_size
    check(ctx.existing.shape[1] < size, "group.group_size", f"> the {ctx.existing.shape[1]} existing lists", size)
    policies = config.policies()
    scorer_logits = None
    if ctx.scorer is not None and config.uses(*SCORER_POLICIES):
        scorer_logits = ctx.scorer.score(ctx.batch).float()
    ctx = replace(ctx, first_logits=ctx.first_step_logits(), scorer_logits=scorer_logits)
    parts = [ctx.existing]
    for name, count in allocate(size - ctx.existing.shape[1], config.mix).items():
        if count > 0:
            parts.append(policies[name].propose(replace(ctx, existing=torch.cat(parts, dim=1)), count))
    group = fill_duplicates(ctx, torch.cat(parts, dim=1), config.max_fill_rounds)  # (B, size, L)
    if config.spaced_pool_size is not None:
        group = spaced_subset(ctx, group, config.group_size)
    return group
