"""What every group-construction policy sees, and the random draws they share.

A policy proposes lists for a whole batch of requests at once. It receives one ``GroupContext``:
the batch, the generator with its encoding (computed once per batch, paper §3.3), the reward
model, the list length L, the one random generator of the run, the lists already in the group
(so that substitution and diversity can build on them, paper App. C), and what the frozen
auxiliary policies read: a pretrained item-wise scorer and the items' training popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from goalrank.config import check, check_finite
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ListEvaluator, ListGenerator, PointwiseScorer, RequestMemo, gumbel_noise


@dataclass
class GroupContext:
    """Inputs shared by every policy for one batch of B requests with N candidates each.

    existing: (B, K0, L) positions into ``batch.candidates`` of the lists already in the group;
    K0 may be 0. ``rng`` may live on another device than the batch (e.g. a CPU generator for a
    GPU batch): draws are made on the generator's device and then moved to the batch's.
    first_logits: the generator's (B, N) first-step logits, if already computed: four policies
    need them, and ``build_group`` computes them once for all (one decoder pass each otherwise).
    scorer: a frozen pretrained item-wise model (``group.scorer_run``, e.g. the DNN baseline), or
    None; scorer_logits: its (B, N) scores, computed once by ``build_group`` when a policy needs them.
    popularity: (n_items + 1,) positives of each item index in the training split, or None.
    memo: where policies that depend only on the request and the frozen evaluator (the reward-model
    beam) keep their lists across epochs, or None to compute them every time (``goalrank bench
    train`` times that first-epoch cost).
    """

    batch: RankingBatch
    generator: ListGenerator
    encoding: Any
    evaluator: ListEvaluator
    list_len: int
    rng: torch.Generator
    existing: torch.Tensor
    first_logits: torch.Tensor | None = None
    scorer: PointwiseScorer | None = None
    scorer_logits: torch.Tensor | None = None
    popularity: torch.Tensor | None = None
    memo: RequestMemo | None = None

    def first_step_logits(self) -> torch.Tensor:
        """(B, N) the generator's first-step logits: ``first_logits`` when set, else computed now."""
        if self.first_logits is None:
            return self.generator.first_step_logits(self.encoding)
        return self.first_logits

    @property
    def size(self) -> int:
        """B, the number of requests."""
        return self.batch.candidates.shape[0]

    @property
    def num_candidates(self) -> int:
        """N, the number of candidates per request."""
        return self.batch.candidates.shape[1]

    @property
    def device(self) -> torch.device:
        return self.batch.candidates.device


class GroupPolicy(Protocol):
    """An auxiliary ranking policy of paper App. C: proposes lists for every request of a batch."""

    name: ClassVar[str]

    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        """(B, num_lists, L) candidate positions, no position repeated within a list."""


def check_temperature(policy: str, value: float) -> None:
    """ConfigError unless ``group.POLICY.temperature`` is a finite number > 0."""
    check_finite(f"group.{policy}.temperature", value)
    check(value > 0, f"group.{policy}.temperature", "> 0", value)


def uniform(ctx: GroupContext, shape: tuple[int, ...]) -> torch.Tensor:
    """U[0, 1) draws of ``shape`` from the run's generator, on the batch's device."""
    return torch.rand(shape, generator=ctx.rng, device=ctx.rng.device).to(ctx.device)


def randint(ctx: GroupContext, high: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform integers in [0, high) of ``shape`` from the run's generator, on the batch's device."""
    return torch.randint(high, shape, generator=ctx.rng, device=ctx.rng.device).to(ctx.device)


def gumbel(ctx: GroupContext, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard Gumbel noise (``gumbel_noise``) from the run's generator, on the batch's device."""
    return gumbel_noise(shape, ctx.rng, ctx.device)


def random_lists(ctx: GroupContext, num_lists: int) -> torch.Tensor:
    """(B, num_lists, L) uniformly random lists: the top-L positions of i.i.d. uniform keys."""
    keys = uniform(ctx, (ctx.size, num_lists, ctx.num_candidates))  # (B, n, N)
    return keys.topk(ctx.list_len, dim=2).indices  # (B, n, L)
