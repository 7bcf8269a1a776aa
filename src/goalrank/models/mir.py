"""MIR (Xi et al., 2022): multi-level interaction re-ranking, a generator-only baseline (§4.1.2).

Idea: model the interactions *within* the candidate set, *within* the user's behaviour history
(a list), and between the two (set-to-list), so each candidate is scored against the user's
past positive and negative feedback on similar items.

Choices the paper leaves open:
- Intra-list interaction is the shared history encoder (blocks.UserContextEncoder): its tokens
  carry each history item's feedback label and recency, MIR's label- and time-aware features.
- Each MIR layer is: self-attention over the candidates without positions (intra-set; the
  candidates are a set, so no initial ranking is used and scores are permutation-equivariant),
  cross-attention from every candidate to the history tokens (set-to-list), then a feed-forward
  sublayer. MIR's SLAttention also updates the history from the candidates; only the
  candidate-side direction is kept, since only candidates are scored.
- Candidate tokens are the shared personalised tokens Linear([e_c, u, e_c ⊙ u]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.models.base import ItemwiseRanker
from goalrank.models.blocks import (
    AttentionBlock,
    FeedForward,
    RequestEncoder,
    RerankerConfig,
    UserContext,
)


@dataclass
class MIRConfig(RerankerConfig):
    """MIR sizes: ``layers`` set-to-list interaction layers."""


class SetToListLayer(nn.Module):
    """Intra-set self-attention, set-to-list cross-attention to the history, feed-forward (pre-norm)."""

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.intra_set = AttentionBlock(d_model, n_heads, dropout)
        self.set_to_list = AttentionBlock(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, ffn_mult, dropout)

    def forward(self, candidates: torch.Tensor, context: UserContext) -> torch.Tensor:
        """candidates (B, N, D), history tokens (B, 1+H, D) -> (B, N, D)."""
        x = self.intra_set(candidates)
        x = self.set_to_list(x, context.tokens, key_padding_mask=context.padding_mask)
        return self.feed_forward(x)


class MIRRanker(ItemwiseRanker):
    """Candidates interacting with each other and with the labelled history; ``rank`` sorts by score."""

    def __init__(self, config: MIRConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.request = RequestEncoder(config.n_items, width, config.n_heads, config.history_layers,
                                      config.ffn_mult, config.dropout)
        self.layers = nn.ModuleList(
            SetToListLayer(width, config.n_heads, config.ffn_mult, config.dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, 1)

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) logits; permuting ``batch.candidates`` permutes them the same way."""
        request = self.request(batch.history, batch.history_labels, batch.candidates)
        x = request.candidates  # (B, N, D)
        for layer in self.layers:
            x = layer(x, request.context)
        return self.readout(self.norm(x)).squeeze(-1)  # (B, N)
