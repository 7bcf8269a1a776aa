"""DLCM (Ai et al., 2018): a generator-only re-ranking baseline (paper §4.1.2, App. D.2).

Idea: a GRU reads the candidates of the initial ranking, so each item's state encodes the items
ranked around it, and a local ranking function scores every item against the list's final state.

Choices the paper leaves open:
- Initial ranking: candidates arrive in a random order, so the initial ranking is the order of
  the cheap score ⟨e_c, u⟩ computed in the model (blocks.RequestEncoder); the GRU's inputs are
  the shared personalised candidate tokens instead of DLCM's hand-made document features.
- As in DLCM, the GRU reads the list from the lowest- to the highest-ranked item, so the top
  items, read last, weigh most on the final state s_n that summarises the local context.
- The local ranking function is DLCM's φ(o_i, s_n) = V (o_i ⊙ tanh(W s_n + b)) with ``n_heads``
  context gates (W: D -> n_heads·D, V: n_heads·D -> 1).
- DLCM's attention-based list-wise loss (AttRank) is replaced by the pointwise BCE every
  generator-only baseline is trained with (registry objective "pointwise"), for a like-for-like
  comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.models.base import ItemwiseRanker
from goalrank.models.blocks import RequestEncoder, RerankerConfig, gather_rows


@dataclass
class DLCMConfig(RerankerConfig):
    """DLCM sizes: ``layers`` stacked GRU layers; ``n_heads`` context gates of φ (and the history encoder's heads)."""


class DLCMRanker(ItemwiseRanker):
    """GRU over the initial ranking + local ranking function; ``rank`` sorts candidates by score."""

    def __init__(self, config: DLCMConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.request = RequestEncoder(config.n_items, width, config.n_heads, config.history_layers,
                                      config.ffn_mult, config.dropout)
        self.gru = nn.GRU(width, width, num_layers=config.layers, batch_first=True,
                          dropout=config.dropout if config.layers > 1 else 0.0)
        self.context_gates = nn.Linear(width, config.n_heads * width)
        self.readout = nn.Linear(config.n_heads * width, 1)

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) logits of each candidate being a positive."""
        request = self.request(batch.history, batch.history_labels, batch.candidates)
        order = request.initial_order  # (B, N) best first
        reading = gather_rows(request.candidates, order.flip(dims=[1]))  # (B, N, D) worst first
        outputs, final = self.gru(reading)  # (B, N, D), (layers, B, D)
        outputs = outputs.flip(dims=[1])  # (B, N, D) best first
        batch_size, _, width = outputs.shape
        gates = torch.tanh(self.context_gates(final[-1])).view(batch_size, 1, -1, width)  # (B, 1, heads, D)
        gated = (outputs[:, :, None] * gates).flatten(2)  # (B, N, heads*D)
        scores = self.readout(gated).squeeze(-1)  # (B, N) in initial-ranking order
        return gather_rows(scores, order.argsort(dim=1))  # (B, N) in the batch's order
