"""Training objectives: what each kind of model minimises on one batch.

- ``RewardObjective``: BCE of the list-wise reward model on logged lists (paper App. B).
- ``PointwiseObjective``: BCE of item-wise scores against the candidates' labels (generator-only
  baselines such as DNN).
- ``GroupRelativeObjective``: GoalRank (paper §3.2–3.3): build a group of K lists per request
  with the auxiliary policies, score them with the frozen reward model, turn the rewards into the
  group-relative reference policy (Eq. 4) and minimise the cross-entropy to it (Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.groups import GroupConfig, GroupContext, build_group
from goalrank.train.losses import (
    group_relative_loss,
    perturb_rewards,
    reference_policy,
    supervised_loss,
)


SUPERVISED_TARGETS = ("logged", "positives_first", "positives")


@dataclass
class ReferenceConfig:
    """How rewards become the reference policy and what the generator minimises.

    supervised_weight: weight of −log π_θ(target list). Default 1.0: the reward model only ever
    saw logged lists (and corrupted copies of them), so its estimates are trustworthy near them
    and not far away; the pull towards the logged list keeps the generator in that region. A
    validation sweep on the simulator (README, "How the defaults were chosen") found a monotone
    trade-off: larger weights (with ``positives_first``) raise the logged-label metrics and lower
    the true list reward; weight 1 with ``logged`` had the highest validation true reward. Only
    ``positives`` at weight 10 (with a ``negatives=0`` reward model) beat the DNN on all six
    figures there; not the default, as on ML-100K it trades NDCG@6 and MAP@6 for H@6 and AUC.
    supervised_target: the list that term imitates: ``logged``, the exposed list in the order it
    was shown, or ``positives_first``, the same items with the positives moved to the top (stable
    otherwise): the order the feedback says was best, as a pointwise scorer learns it; or
    ``positives``, only that list's prefix of positives (−log π_θ of its first n⁺ steps, nothing
    for a list without positives). Imitating a whole logged list also teaches the shown-but-not-
    clicked items below its positives; ``positives`` leaves those positions to the reward model.
    """

    temperature: float = 1.0
    variant: Literal["cross_entropy", "authors"] = "cross_entropy"
    supervised_weight: float = 1.0
    supervised_target: Literal["logged", "positives_first", "positives"] = "logged"
    reward_noise: float = 0.0

    def __post_init__(self) -> None:
        check(self.temperature > 0, "reference.temperature", "> 0", self.temperature)
        check(self.supervised_weight >= 0, "reference.supervised_weight", ">= 0", self.supervised_weight)
        check(self.supervised_target in SUPERVISED_TARGETS, "reference.supervised_target",
              f"one of {list(SUPERVISED_TARGETS)}", self.supervised_target)
        check(self.reward_noise >= 0, "reference.reward_noise", ">= 0 (β of the bias study)", self.reward_noise)


@dataclass
class RewardObjective:
    """BCE of the reward model's per-item logits on logged lists.

    ``negatives`` > 0 also trains on corrupted copies of each logged list in which that share of
    positions is replaced by random non-exposed candidates labelled 0. The offline metrics treat
    retrieved-but-not-exposed candidates as negatives; without this, the reward model never sees
    such items and cannot rank them below logged positives.
    """

    model: torch.nn.Module
    negatives: float
    rng: torch.Generator

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        lists, labels = batch.exposed[:, None], torch.gather(batch.labels, 1, batch.exposed)[:, None]
        if self.negatives > 0:
            corrupted, corrupted_labels = corrupt_lists(batch, self.negatives, self.rng)
            lists = torch.cat([lists, corrupted[:, None]], dim=1)  # (B, 2, L)
            labels = torch.cat([labels, corrupted_labels[:, None]], dim=1)
        logits = self.model.item_logits(batch, lists)  # (B, K, L)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss, {}


def supervised_target(batch: RankingBatch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) candidate positions of the list the supervised term imitates (see ReferenceConfig)
    and a (B, L) 0/1 weight of each of its steps in −log π_θ."""
    if kind == "logged":
        return batch.exposed, torch.ones(batch.exposed.shape, device=batch.exposed.device)
    labels = batch.labels.gather(1, batch.exposed)  # (B, L)
    order = torch.sort(-labels, dim=1, stable=True).indices
    target = batch.exposed.gather(1, order)
    if kind == "positives_first":
        return target, torch.ones(target.shape, device=target.device)
    return target, (labels.gather(1, order) > 0).float()  # positives first, so a prefix


def corrupt_lists(
    batch: RankingBatch, share: float, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a ``share`` of each logged list's positions by non-exposed candidates (label 0)."""
    size, n_candidates = batch.candidates.shape
    exposed = batch.exposed
    noise = torch.rand(size, n_candidates, generator=rng).to(exposed.device)
    noise.scatter_(1, exposed, float("inf"))  # never draw an exposed item
    replacements = noise.argsort(dim=1)[:, : exposed.shape[1]]  # (B, L) distinct non-exposed
    replace = torch.rand(exposed.shape, generator=rng).to(exposed.device) < share
    lists = torch.where(replace, replacements, exposed)
    labels = torch.gather(batch.labels, 1, exposed).masked_fill(replace, 0.0)
    return lists, labels


@dataclass
class PointwiseObjective:
    """BCE of each candidate's score against its label: item-wise generator-only rankers."""

    model: torch.nn.Module

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return F.binary_cross_entropy_with_logits(self.model.score(batch), batch.labels), {}


@dataclass
class ModelObjective:
    """A model that defines its own loss (``training_loss``), e.g. an evaluator-guided generator."""

    model: torch.nn.Module

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.training_loss(batch)


@dataclass
class GroupRelativeObjective:
    """GoalRank's loss on one batch: Eq. 4 reference policy, Eq. 5 cross-entropy.

    The encoder runs once; the group's K lists are scored by teacher forcing over that single
    encoding. Group construction and reward scoring run without gradients. The three stages are
    separate methods so that ``goalrank bench train`` can time each one.
    """

    generator: torch.nn.Module
    evaluator: torch.nn.Module
    group: GroupConfig
    reference: ReferenceConfig
    rng: torch.Generator

    @torch.no_grad()
    def build_group(self, batch: RankingBatch, encoding: object) -> torch.Tensor:
        """(B, K, L) distinct lists per request from the auxiliary policies (App. C)."""
        context = GroupContext(
            batch=batch, generator=self.generator, encoding=encoding, evaluator=self.evaluator,
            list_len=self.generator.list_len, rng=self.rng,
            existing=batch.exposed.new_zeros(len(batch), 0, self.generator.list_len),
        )
        return build_group(context, self.group)

    @torch.no_grad()
    def reference_policy(self, batch: RankingBatch, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards (B, K) of the group's lists and the reference policy π_ref (B, K) of Eq. 4."""
        rewards = self.evaluator.list_reward(batch, group)
        if self.reference.reward_noise > 0:
            rewards = perturb_rewards(rewards, self.reference.reward_noise, self.rng)
        return rewards, reference_policy(rewards, self.reference.temperature)

    def loss(
        self, batch: RankingBatch, encoding: object, group: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 5 cross-entropy (plus the optional supervised term on the logged list)."""
        supervised = self.reference.supervised_weight > 0
        if supervised:  # the target is scored in the group's teacher-forced pass: one decoder pass fewer
            target, steps = supervised_target(batch, self.reference.supervised_target)
            group = torch.cat([group, target[:, None]], dim=1)
        step_log_probs = self.generator.step_log_probs(encoding, group)  # (B, K or K + 1, L), target last
        log_probs = step_log_probs[:, : reference.shape[1]].sum(dim=2)  # (B, K)
        loss = group_relative_loss(log_probs, reference, self.reference.variant)
        stats: dict[str, float] = {}
        if supervised:
            sup = supervised_loss((step_log_probs[:, -1] * steps).sum(dim=1))
            loss = loss + self.reference.supervised_weight * sup
            stats["supervised"] = sup.item()
        return loss, stats

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        encoding = self.generator.encode(batch)
        group = self.build_group(batch, encoding)
        rewards, reference = self.reference_policy(batch, group)
        loss, stats = self.loss(batch, encoding, group, reference)
        return loss, {"group_reward": rewards.mean().item(), **stats}
