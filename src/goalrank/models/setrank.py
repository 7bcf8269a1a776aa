"""SetRank (Pang et al., 2020), called PRS in the paper's tables: a generator-only baseline (§4.1.2).

Idea: rank a *set*: stacked multi-head self-attention blocks without positions let every
candidate see every other, and the scores are permutation-equivariant in the candidates.

Choices the paper leaves open:
- Candidate tokens are the shared personalised tokens Linear([e_c, u, e_c ⊙ u])
  (blocks.RequestEncoder): the user vector plays SetRank's query.
- The blocks are the shared pre-norm Transformer encoder layers (SetRank's MSAB); SetRank's
  induced variant (IMSAB, attention through m inducing points) and its optional ordinal
  embeddings of an initial ranking are not used, so no initial ranking enters the model.
- The paper cites PRS (Feng et al., 2021a) but describes SetRank; we implement the description.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.models.base import ItemwiseRanker
from goalrank.models.blocks import RequestEncoder, RerankerConfig, TransformerEncoder


@dataclass
class SetRankConfig(RerankerConfig):
    """SetRank sizes: ``layers`` self-attention blocks over the candidate set."""


class SetRankRanker(ItemwiseRanker):
    """Position-free self-attention over the candidate set; ``rank`` sorts candidates by score."""

    def __init__(self, config: SetRankConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.request = RequestEncoder(config.n_items, width, config.n_heads, config.history_layers,
                                      config.ffn_mult, config.dropout)
        self.encoder = TransformerEncoder(width, config.n_heads, config.layers, config.ffn_mult, config.dropout)
        self.readout = nn.Linear(width, 1)

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) logits; permuting ``batch.candidates`` permutes them the same way."""
        request = self.request(batch.history, batch.history_labels, batch.candidates)
        return self.readout(self.encoder(request.candidates)).squeeze(-1)  # (B, N)
