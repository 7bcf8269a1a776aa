"""GoalRank's objective (paper §3.2–3.3): group → rewards → reference policy (Eq. 4) → cross-entropy (Eq. 5).

For each request a group of K lists is built with the auxiliary policies, scored with the frozen
reward model, turned into the group-relative reference policy and the generator minimises the
cross-entropy to it, optionally plus a supervised term on a logged target list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from goalrank.data.storage import RankingBatch
from goalrank.errors import ConfigError
from goalrank.groups import GroupConfig, GroupContext, build_group
from goalrank.models.base import (
    ListEvaluator,
    ListGenerator,
    PointwiseScorer,
    RequestMemo,
    bound_evaluator,
    group_std,
)
from goalrank.objectives.base import ObjectiveFactory, ObjectiveInputs
from goalrank.objectives.losses import (
    fixed_list_noise,
    group_relative_loss,
    perturb_rewards,
    reference_policy,
    supervised_loss,
)
from goalrank.objectives.reference import FIXED, ReferenceConfig


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


@dataclass
class GroupRelativeObjective:
    """GoalRank's loss on one batch: Eq. 4 reference policy, Eq. 5 cross-entropy.

    The encoder runs once; the group's K lists are scored by teacher forcing over that single
    encoding. Group construction and reward scoring run without gradients. The three stages are
    separate methods so that ``goalrank bench train`` can time each one. ``memo`` keeps what the
    policies that do not follow the generator find for a request (``GroupContext.memo``); the
    training loop's objective (``from_inputs``) has one, a bare one (``goalrank bench train``) not.
    ``noise_seed`` keys the ``fixed`` reward noise of the bias study (the run's seed).
    """

    generator: ListGenerator
    evaluator: ListEvaluator
    group: GroupConfig
    reference: ReferenceConfig
    rng: torch.Generator
    scorer: PointwiseScorer | None = None
    popularity: torch.Tensor | None = None
    memo: RequestMemo | None = None
    noise_seed: int = 0

    def __post_init__(self) -> None:
        self._bound: ListEvaluator | None = None

    def evaluator_for(self, batch: RankingBatch) -> ListEvaluator:
        """The evaluator bound to ``batch`` (``models.base.bound_evaluator``), shared by the group's
        construction and its scoring: a batch's user side is encoded once per step, not per call."""
        if self._bound is None or getattr(self._bound, "batch", None) is not batch:
            self._bound = bound_evaluator(self.evaluator, batch)
        return self._bound

    @torch.no_grad()
    def build_group(self, batch: RankingBatch, encoding: object) -> torch.Tensor:
        """(B, K, L) distinct lists per request from the auxiliary policies (App. C)."""
        context = GroupContext(
            batch=batch, generator=self.generator, encoding=encoding, evaluator=self.evaluator_for(batch),
            list_len=self.generator.list_len, rng=self.rng,
            existing=batch.exposed.new_zeros(len(batch), 0, self.generator.list_len),
            scorer=self.scorer, popularity=self.popularity, memo=self.memo,
        )
        return build_group(context, self.group)

    @torch.no_grad()
    def reference_policy(self, batch: RankingBatch, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards (B, K) of the group's lists and the reference policy π_ref (B, K) of Eq. 4."""
        rewards = self.evaluator_for(batch).list_reward(batch, group)
        if self.reference.reward_noise > 0:
            noise = None
            if self.reference.reward_noise_kind == FIXED:
                items = batch.candidates.gather(1, group.flatten(1)).view(group.shape)  # (B, K, L) item ids
                noise = fixed_list_noise(batch.users, items, self.noise_seed)
            rewards = perturb_rewards(rewards, self.reference.reward_noise, self.rng, noise)
        return rewards, reference_policy(rewards, self.reference.temperature)

    def loss(
        self, batch: RankingBatch, encoding: object, group: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 5 cross-entropy (plus the optional supervised term on ``supervised_target``'s list)."""
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
        # The group's reward spread σ_G (Eq. 4's population std) and π_ref's entropy show how much
        # signal the reference policy carries: a collapsed spread or a uniform π_ref teaches nothing.
        return loss, {"group_reward": rewards.mean().item(),
                      "group_reward_std": group_std(rewards).mean().item(),
                      "reference_entropy": torch.special.entr(reference).sum(dim=1).mean().item(), **stats}

    @classmethod
    def from_inputs(cls, inputs: ObjectiveInputs) -> GroupRelativeObjective:
        if inputs.evaluator is None:
            raise ConfigError("the group-relative objective needs a trained reward model (--reward RUN)")
        generator = cast(ListGenerator, inputs.model)  # the registry pairs GROUP_RELATIVE with generators only
        return cls(generator, inputs.evaluator, inputs.group, inputs.reference, inputs.rng, inputs.scorer,
                   inputs.popularity, RequestMemo(GROUP_MEMO_SIZE), noise_seed=inputs.seed)


# Training requests whose reward-model beams are kept (``GroupContext.memo``): every request of the
# default world's 14,400 and ML-100K's 10,947; an entry is ~0.3 KB.
GROUP_MEMO_SIZE = 200_000
GROUP_RELATIVE = ObjectiveFactory("group_relative", GroupRelativeObjective.from_inputs, needs_reward_model=True,
                                 uses_groups=True)
