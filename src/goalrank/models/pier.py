"""PIER (Shi et al., 2023) as the GoalRank paper runs it (paper §4.1.2, following Yang et al., 2025).

A pointwise model picks the top-L candidates; every one of their L! orders is scored by the shared
evaluator and the best order is the list. The pointwise model is the DNN baseline (models/dnn.py),
trained pointwise on its ``score`` exactly like DNN, so PIER = DNN's item set + the evaluator's
best order of it. The original's SimHash permutation pre-selection (FPSM) is unnecessary when all
L! permutations are scored, which is what the paper does for L = 6 (720 lists per request).

Scoring those 720 orders is almost all of PIER's cost, and a benchmark validates every 40 batches.
The evaluator is frozen, so the best order of a request's top-L *set* never changes while the
pointwise model trains: with ``memoise_passes`` (the training loop's validation) a pass scores only
the requests whose top-L set is new. Measured with `goalrank bench pier` (default world, seed 0,
256 validation requests, 14 passes): 40 % of the top-L sets repeat an earlier pass's (63 % in pass
13), and the passes take 1.70× less time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import cast

import torch

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import (
    ListEvaluator,
    RankOutput,
    RequestMemo,
    attach_evaluator,
    scores_from_lists,
    select_best_list,
)
from goalrank.models.dnn import DNNConfig, DNNRanker


@dataclass
class PIERConfig(DNNConfig):
    """DNN's fields plus the permutation search's limits.

    max_permutations: refuse list lengths whose L! exceeds this (8! = 40320 lists per request).
    max_lists_per_call: lists the evaluator scores per call (at least one per request). Small
        calls are faster, not only lighter: a call's activations then stay in cache. Measured on
        128 requests of the default world's shape (one CPU thread, the evaluator bound once per
        batch): 256 / 512 / 1,024 / 2,048 lists per call took 10.2 / 9.3 / 11.5 / 11.8 s, against
        24.5 s for the earlier 65,536 without binding (docs/benchmarks.md).
    """

    max_permutations: int = 40320
    max_lists_per_call: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check(math.factorial(self.list_len) <= self.max_permutations, "model.list_len",
              f"L! <= model.max_permutations={self.max_permutations}", self.list_len)
        check(self.max_lists_per_call >= 1, "model.max_lists_per_call", ">= 1", self.max_lists_per_call)


class PIER(DNNRanker):
    """DNN scorer whose top-L items are reordered by the evaluator's best permutation."""

    permutations: torch.Tensor  # (L!, L) a non-persistent buffer: every order of L positions
    evaluator: ListEvaluator  # set by attach_evaluator
    memo: RequestMemo | None  # the best orders already found (``memoise_passes``); None: off

    def __init__(self, config: PIERConfig, evaluator: ListEvaluator) -> None:
        super().__init__(config)
        self.config: PIERConfig = config
        attach_evaluator(self, evaluator)
        orders = torch.tensor(list(itertools.permutations(range(config.list_len))))  # (L!, L)
        self.register_buffer("permutations", orders, persistent=False)
        self.memo = None

    def memoise_passes(self) -> None:
        """Remember each request's best order of its top-L set (``PassMemoising``)."""
        if self.memo is None:
            self.memo = RequestMemo(ORDER_MEMO_SIZE)

    def proposals(self, top: torch.Tensor) -> torch.Tensor:
        """(B, L!, L) every order of each request's top-L positions ``top`` (B, L)."""
        size, num_orders = top.shape[0], self.permutations.shape[0]
        return top[:, None].expand(-1, num_orders, -1).gather(2, self.permutations.expand(size, -1, -1))

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        scores = self.score(batch)  # (B, N)
        # Sorted, so that a request's proposals depend on its top-L set alone, as the memo's key does.
        top = scores.topk(self.list_len, dim=1).indices.sort(dim=1).values  # (B, L)
        if self.memo is None:
            return self._best_orders(batch, top, scores)
        keys = self.memo.keys(batch, top)
        found = [self.memo.get(key) for key in keys]
        new = [row for row, order in enumerate(found) if order is None]
        if new:
            index = torch.tensor(new, device=top.device)
            orders = self._best_orders(batch.select(index), top[index], scores[index]).lists.cpu()  # (b, L)
            for row, order in zip(new, orders, strict=True):
                found[row] = order
                self.memo.put(keys[row], order)
        lists = torch.stack(cast(list[torch.Tensor], found)).to(top.device)  # (B, L): every row found now
        return RankOutput(lists=lists, scores=scores_from_lists(lists, scores))

    def _best_orders(self, batch: RankingBatch, top: torch.Tensor, scores: torch.Tensor) -> RankOutput:
        """The evaluator's best order of each request's top-L positions ``top`` (B, L)."""
        return select_best_list(self.evaluator, batch, self.proposals(top), scores, self.config.max_lists_per_call)


ORDER_MEMO_SIZE = 200_000  # requests' best orders kept: the default world's 1,600 validation requests
# need at most one per top-L set seen (tens of thousands over a run); an entry is ~0.2 KB
