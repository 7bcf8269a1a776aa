"""RankMixer (Zhu et al., 2025): token mixing instead of self-attention, a generator-only baseline.

Idea: a cheap, hardware-friendly alternative to attention: each layer mixes features across the
tokens with fixed multi-head token mixing, then transforms every token with a feed-forward net.

Choices the paper leaves open (RankMixer's tokens are feature groups of one user-item pair; here
the tokens are the N candidates, so each candidate's score sees the others):
- Token identity: candidates arrive in a random order, so tokens are laid out in the initial
  ranking, the order of the cheap score ⟨e_c, u⟩ computed in the model (blocks.RequestEncoder);
  token t is "the candidate at initial rank t".
- Token mixing: RankMixer's parameter-free head shuffle needs N tokens to divide D and a fixed N.
  Instead head h (the h-th group of D / n_heads channels) mixes the tokens with learned weights
  softmax_s(W_h[t, s]) over the N present ranks: still attention-free and input-independent, and
  valid for any N ≤ ``max_candidates``.
- Feed-forward: candidate tokens are homogeneous, so one feed-forward net is shared by all tokens
  (RankMixer's per-token FFN has separate weights per heterogeneous feature token).
- Sublayers are pre-norm with residuals, like every other model here (RankMixer is post-norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ItemwiseRanker
from goalrank.models.blocks import (
    FeedForward,
    RequestEncoder,
    RerankerConfig,
    check_max_candidates,
    gather_rows,
)

MIXING_INIT_STD = 0.02


@dataclass
class RankMixerConfig(RerankerConfig):
    """RankMixer sizes: ``layers`` mixing layers with ``n_heads`` token-mixing heads each.

    max_candidates: size of the rank-to-rank mixing weights, an upper bound on the candidates N
    per request; 128 leaves room above the default prepared N of 50.
    """

    max_candidates: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_candidates >= 1, "model.max_candidates", ">= 1", self.max_candidates)


class TokenMixing(nn.Module):
    """Pre-norm multi-head token mixing with its residual: x + Dropout(mix(LN(x))).

    Output token t, head h = Σ_s softmax_s(W_h[t, s]) · input token s, head h, over the N ranks
    present; weights are normalised over those N, so a list shorter than ``max_candidates`` is
    mixed as if the missing ranks did not exist.
    """

    def __init__(self, d_model: int, n_heads: int, max_candidates: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.mixing = nn.Parameter(MIXING_INIT_STD * torch.randn(n_heads, max_candidates, max_candidates))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) in initial-ranking order -> (B, N, D)."""
        batch, n_tokens, width = x.shape
        weights = self.mixing[:, :n_tokens, :n_tokens].softmax(dim=-1)  # (h, N, N)
        heads = self.norm(x).view(batch, n_tokens, self.n_heads, width // self.n_heads)  # (B, N, h, dh)
        mixed = torch.einsum("hts,bshd->bthd", weights, heads)  # (B, N, h, dh)
        return x + self.dropout(mixed.reshape(batch, n_tokens, width))


class RankMixerRanker(ItemwiseRanker):
    """Token mixing + feed-forward layers over the initial ranking; ``rank`` sorts candidates by score."""

    def __init__(self, config: RankMixerConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.request = RequestEncoder(config.n_items, width, config.n_heads, config.history_layers,
                                      config.ffn_mult, config.dropout)
        self.layers = nn.ModuleList(
            nn.Sequential(
                TokenMixing(width, config.n_heads, config.max_candidates, config.dropout),
                FeedForward(width, config.ffn_mult, config.dropout),
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, 1)

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) logits of each candidate being a positive."""
        check_max_candidates(batch.candidates.shape[1], self.config.max_candidates)
        request = self.request(batch.history, batch.history_labels, batch.candidates)
        order = request.initial_order  # (B, N) best first
        x = gather_rows(request.candidates, order)  # (B, N, D) initial list
        for layer in self.layers:
            x = layer(x)
        scores = self.readout(self.norm(x)).squeeze(-1)  # (B, N) in initial-ranking order
        return gather_rows(scores, order.argsort(dim=1))  # (B, N) in the batch's order
