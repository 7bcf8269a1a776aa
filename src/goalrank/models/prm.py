"""PRM (Pei et al., 2019): personalised re-ranking, a generator-only baseline (paper §4.1.2).

Idea: a Transformer encodes the whole initial list, with a learned embedding of each item's
initial rank and a personalised vector joined to every item, so each score sees list context.

Choices the paper leaves open:
- Initial ranking: candidates arrive in a random order, so the initial list is the order of the
  cheap score ⟨e_c, u⟩ computed in the model (blocks.RequestEncoder).
- The personalised vector is the user vector of the shared history encoder, trained jointly
  (PRM takes it from a separately pre-trained model); it is concatenated to each item's
  embedding, [e_c, u, e_c ⊙ u], and projected to the model width.
- Positions are learned embeddings of the initial rank 0..max_candidates-1, so a batch may hold
  at most ``max_candidates`` candidates.
- PRM's list-wise softmax output is replaced by per-item logits trained with the pointwise BCE
  shared by every generator-only baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ItemwiseRanker
from goalrank.models.blocks import (
    RequestEncoder,
    RerankerConfig,
    TransformerEncoder,
    check_max_candidates,
    gather_rows,
)


@dataclass
class PRMConfig(RerankerConfig):
    """PRM sizes: ``layers`` Transformer layers over the initial list.

    max_candidates: number of learned rank embeddings, an upper bound on the candidates N per
    request; 128 leaves room above the default prepared N of 50.
    """

    max_candidates: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_candidates >= 1, "model.max_candidates", ">= 1", self.max_candidates)


class PRMRanker(ItemwiseRanker):
    """Transformer over the initial list with rank embeddings; ``rank`` sorts candidates by score."""

    def __init__(self, config: PRMConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.request = RequestEncoder(config.n_items, width, config.n_heads, config.history_layers,
                                      config.ffn_mult, config.dropout)
        self.positions = nn.Embedding(config.max_candidates, width)
        self.encoder = TransformerEncoder(width, config.n_heads, config.layers, config.ffn_mult, config.dropout)
        self.readout = nn.Linear(width, 1)

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) logits of each candidate being a positive."""
        n_candidates = batch.candidates.shape[1]
        check_max_candidates(n_candidates, self.config.max_candidates)
        request = self.request(batch.history, batch.history_labels, batch.candidates)
        order = request.initial_order  # (B, N) best first
        ranks = torch.arange(n_candidates, device=order.device)  # (N,)
        tokens = gather_rows(request.candidates, order) + self.positions(ranks)  # (B, N, D) initial list
        scores = self.readout(self.encoder(tokens)).squeeze(-1)  # (B, N) in initial-ranking order
        return gather_rows(scores, order.argsort(dim=1))  # (B, N) in the batch's order
