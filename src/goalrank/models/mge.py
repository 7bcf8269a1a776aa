"""MG-E (Yang et al., 2025): G generators each propose a list, the shared evaluator picks one (paper §4.1.2).

Two builds. ``MultiGenerator`` is MG-E as a production pipeline runs it: G separately trained
rankers (any mix of architectures and seeds), each proposing its own list, the shared evaluator
scoring all G, the best one served; it is what GoalRank's latency is raced against (paper App.
D.3; ``goalrank bench serve``, label ``mge``). ``MGE`` (registry name ``mge``, labelled ``mge-heads``
in benchmarks) is a cheap stand-in trained in one run: G output heads on one trunk, so a request
costs one trunk pass instead of G models.

The paper runs G = 3, 20 and 100 generators and finds the gains saturate quickly. ``MGE``'s G
generators are G item-wise scorers sharing the DNN baseline's network (models/dnn.py): its last
layer becomes G output heads, one weight row per generator, so all G score a batch in one
matrix product and G = 100 costs only G extra weight rows. Generator g proposes the top-L
candidates under its head; the evaluator's arg-max among the G proposals is the list.

What makes the generators differ (the paper's "each specialising in different candidate
distributions"): independent initialisation of the heads and online bagging (Oza & Russell,
2001): in every batch, head g weighs request b's pointwise BCE by k_gb ~ Poisson(1), so each head
fits its own bootstrap resample of the training requests. The shared layers learn from all heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ListEvaluator, Ranker, RankOutput, attach_evaluator, select_best_list
from goalrank.models.dnn import DNNConfig, DNNRanker


@dataclass
class MGEConfig(DNNConfig):
    """DNN's fields plus the ensemble.

    n_generators: G, the number of generators (paper: 3, 20, 100).
    bootstrap: weigh each head's per-request loss by Poisson(1) draws (online bagging); without it
        the heads differ only by their initialisation.
    """

    n_generators: int = 3
    bootstrap: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_generators >= 1, "model.n_generators", ">= 1", self.n_generators)


class MGE(DNNRanker):
    """G linear heads on the DNN's shared layers; ``rank``: the evaluator's best of their G top-L lists."""

    evaluator: ListEvaluator  # set by attach_evaluator

    def __init__(self, config: MGEConfig, evaluator: ListEvaluator) -> None:
        super().__init__(config)
        self.config: MGEConfig = config
        self.mlp[-1] = nn.Linear(cast(nn.Linear, self.mlp[-1]).in_features, config.n_generators)
        attach_evaluator(self, evaluator)

    def head_logits(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N, G) logit of each candidate being a positive, under each generator's head."""
        return super().score(batch).reshape(*batch.candidates.shape, self.config.n_generators)

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) the ensemble's mean logit: ranks the candidates left out of the chosen list."""
        return self.head_logits(batch).mean(dim=-1)

    def proposals(self, head_logits: torch.Tensor) -> torch.Tensor:
        """(B, G, L) each generator's top-L candidate positions, from ``head_logits`` (B, N, G)."""
        return head_logits.topk(self.list_len, dim=1).indices.transpose(1, 2)  # (B, G, L)

    def training_loss(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over heads of each head's Poisson-weighted pointwise BCE (objective "self_trained").

        The Poisson draws come from torch's global generator, which the run seeds from
        ``train.seed``. A head whose weights in a batch are all zero contributes nothing.
        """
        logits = self.head_logits(batch)  # (B, N, G)
        targets = batch.labels[..., None].expand_as(logits)
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, N, G)
        per_request = losses.mean(dim=1)  # (B, G)
        weights = torch.ones_like(per_request)
        if self.config.bootstrap:
            weights = torch.poisson(weights)
        per_head = (weights * per_request).sum(dim=0) / weights.sum(dim=0).clamp_min(1.0)  # (G,)
        return per_head.mean(), {}

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        head_logits = self.head_logits(batch)  # (B, N, G)
        return select_best_list(self.evaluator, batch, self.proposals(head_logits), head_logits.mean(dim=-1))


class MultiGenerator(Ranker):
    """G independent generators each propose a list (B, G, L); the evaluator's arg-max is served.

    The generators are modules of their own (``generators``), trained separately; their state is
    this ranker's state, so an ensemble's checkpoint is self-contained. The evaluator is the one
    reward model every method shares (``attach_evaluator``). Candidates off the chosen list are
    ranked by the generators' mean score.
    """

    evaluator: ListEvaluator  # set by attach_evaluator

    def __init__(self, generators: list[Ranker], evaluator: ListEvaluator) -> None:
        lengths = sorted({g.list_len for g in generators})
        check(len(lengths) == 1, "generators", "at least one, all with the same list_len", lengths)
        super().__init__(lengths[0])
        self.generators = nn.ModuleList(generators)
        attach_evaluator(self, evaluator)

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        outputs = [cast(Ranker, generator).rank(batch) for generator in self.generators]
        proposals = torch.stack([output.lists for output in outputs], dim=1)  # (B, G, L)
        base_scores = torch.stack([output.scores.float() for output in outputs]).mean(dim=0)  # (B, N)
        return select_best_list(self.evaluator, batch, proposals, base_scores)
