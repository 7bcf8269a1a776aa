"""The list-wise reward model r(u, l) (paper App. B, after Zhang et al. 2025).

It predicts the feedback of every item *in the context of the whole list*: a Transformer runs
over the list's tokens (item + position + user), so an item's predicted feedback depends on the
items shown around it. A list's reward is the position-weighted sum of the predicted feedback
probabilities. GoalRank and every generator–evaluator baseline score lists with this model.

The paper fits continuous feedback with MSE; our feedback labels are binary, so the model is
fitted with the matching likelihood, binary cross-entropy on per-item logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.errors import DataError
from goalrank.models.blocks import (
    FeatureCross,
    RerankerConfig,
    TransformerEncoder,
    UserContextEncoder,
    gather_rows,
    item_embedding,
)


@dataclass
class RewardConfig(RerankerConfig):
    """Reward model size and reward definition.

    position_weights: "dcg" weighs position t (0-based) by 1/log2(t + 2), as users look less
    further down a list; "uniform" counts every position once (expected number of positives).
    causal: an item's feedback depends only on the items above it (top-down browsing) instead
    of the whole list.
    """

    dropout: float = 0.1
    position_weights: Literal["dcg", "uniform"] = "dcg"
    causal: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.position_weights in ("dcg", "uniform"), "model.position_weights",
              "'dcg' or 'uniform'", self.position_weights)


def position_weights(kind: Literal["dcg", "uniform"], list_len: int) -> torch.Tensor:
    """(L,) weight of each 0-based position in the list reward."""
    if kind == "uniform":
        return torch.ones(list_len)
    return torch.tensor([1.0 / math.log2(t + 2) for t in range(list_len)])


class RewardModel(nn.Module):
    """Implements the ``ListEvaluator`` protocol (models/base.py).

    The user context is encoded once per request and shared by all K lists scored for it.
    """

    weights: torch.Tensor  # (L,) the reward's position weights, a non-persistent buffer

    def __init__(self, config: RewardConfig) -> None:
        super().__init__()
        self.config = config
        width = config.d_model
        self.items = item_embedding(config.n_items, width)
        self.user_encoder = UserContextEncoder(
            self.items, config.n_heads, config.history_layers, config.ffn_mult, config.dropout
        )
        self.cross = FeatureCross(width)
        self.positions = nn.Embedding(config.list_len, width)
        self.list_encoder = TransformerEncoder(
            width, config.n_heads, config.layers, config.ffn_mult, config.dropout
        )
        self.head = nn.Linear(width, 1)
        self.register_buffer(
            "weights", position_weights(config.position_weights, config.list_len), persistent=False
        )

    def item_logits(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        """(B, K, T) feedback logit of each item of lists (B, K, T) of candidate positions, T ≤ L."""
        batch_size, lists_per_request, length = lists.shape
        if length > self.config.list_len:
            raise DataError(
                f"lists: length {length}, expected at most the reward model's"
                f" list_len={self.config.list_len}"
            )
        width = self.config.d_model
        user = self.user_encoder(batch.history, batch.history_labels).user  # (B, D)
        positions = lists.reshape(batch_size, -1)  # (B, K*T)
        if lists_per_request * length > batch.candidates.shape[1]:
            # Many lists per request (PIER's L! orders, GoalRank's groups): cross each of the N candidates
            # with the user once and gather, instead of crossing K*T list items (720 * 6 rows for PIER).
            crossed = self.cross(self.items(batch.candidates), user)  # (B, N, D)
            tokens = gather_rows(crossed, positions)  # (B, K*T, D)
        else:
            tokens = self.cross(self.items(batch.candidates.gather(1, positions)), user)  # (B, K*T, D)
        tokens = tokens.view(batch_size, lists_per_request, length, width)  # (B, K, T, D)
        tokens = tokens + self.positions(torch.arange(length, device=lists.device))
        hidden = self.list_encoder(
            tokens.view(batch_size * lists_per_request, length, width), causal=self.config.causal
        )  # (B*K, T, D)
        return self.head(hidden).view(batch_size, lists_per_request, length)  # (B, K, T)

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) r(u, l) = Σ_t w_t σ(logit_t) of lists (B, K, T), T ≤ L."""
        probabilities = torch.sigmoid(self.item_logits(batch, lists))  # (B, K, T)
        return (probabilities * self.weights[: lists.shape[2]]).sum(dim=-1)

    def loss(self, batch: RankingBatch) -> torch.Tensor:
        """BCE of the logged (exposed) list's item logits against their observed labels."""
        logits = self.item_logits(batch, batch.exposed[:, None])[:, 0]  # (B, L)
        return F.binary_cross_entropy_with_logits(logits, batch.labels.gather(1, batch.exposed))
