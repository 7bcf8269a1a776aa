"""The list-wise reward model r(u, l) (paper App. B, after Zhang et al. 2025).

It predicts the feedback of every item *in the context of the whole list and of the user*: each
list token (item crossed with the user vector, plus its position) attends to the other items of
the list and, through cross-attention, to the user's history items with their feedback, so an
item's predicted feedback depends on the items shown around it and on what this user did with
similar items. A user-id embedding adds what the history alone cannot tell (its learned
cold-start row serves users the training data never saw). A list's reward is the
position-weighted sum of the predicted feedback probabilities. GoalRank and every
generator–evaluator baseline score lists with this model.

The paper fits continuous feedback with MSE; our feedback labels are binary, so the model is
fitted with the matching likelihood, binary cross-entropy on per-item logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from goalrank.config import check, check_finite
from goalrank.data.storage import RankingBatch
from goalrank.errors import ConfigError, DataError
from goalrank.models.blocks import (
    DecoderLayer,
    KeyValues,
    RerankerConfig,
    gather_rows,
    user_modules,
    with_user_id,
)

PositionWeights = Literal["auto", "dcg", "uniform", "geometric"]


@dataclass
class RewardConfig(RerankerConfig):
    """Reward model size and reward definition.

    position_weights: how the list reward weighs position t (0-based). ``geometric`` weighs it
    by position_discount**t, the simulator's own reward (its ``reward_discount``; 1 means every
    position counts once: the expected number of positives); ``dcg`` by 1/log2(t + 2), the
    discount of NDCG@L, the offline metric of real logs, as users look less further down a list;
    ``uniform`` is geometric with discount 1. ``auto`` (the default) is resolved when a run is
    built (``resolve_position_weights``): the simulator's geometric weights on simulator data, so
    GoalRank optimises the reward it is judged by, and ``dcg`` on real logs.
    causal: an item's feedback depends only on the items above it (top-down browsing) instead
    of the whole list.
    history_attention: list tokens cross-attend to the history tokens in every layer; without it
    (an ablation) they attend only to the history encoder's context token, one summary of the user
    shared by every list item.
    user_embedding: add a user-id embedding to the user vector (needs ``n_users``, set from the
    dataset), with ``cold_start_rate`` of the training requests shown as a new user.
    """

    dropout: float = 0.1
    position_weights: PositionWeights = "auto"
    position_discount: float = 1.0
    causal: bool = False
    history_attention: bool = True
    user_embedding: bool = True
    cold_start_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.position_weights in ("auto", "dcg", "uniform", "geometric"), "model.position_weights",
              "'auto', 'dcg', 'uniform' or 'geometric'", self.position_weights)
        check_finite("model.position_discount", self.position_discount)
        check(self.position_discount > 0, "model.position_discount", "> 0", self.position_discount)
        check_finite("model.cold_start_rate", self.cold_start_rate)
        check(0 <= self.cold_start_rate < 1, "model.cold_start_rate", "in [0, 1)", self.cold_start_rate)
        check(not self.user_embedding or self.n_users >= 1, "model.n_users",
              ">= 1 (set from the dataset) with model.user_embedding", self.n_users)


def position_weights(kind: PositionWeights, list_len: int, discount: float = 1.0) -> torch.Tensor:
    """(L,) weight of each 0-based position in the list reward (``kind`` resolved, not ``auto``)."""
    if kind == "auto":
        raise ConfigError("model.position_weights='auto': resolve it from the dataset first "
                          "(goalrank.reward.model.resolve_position_weights)")
    if kind == "dcg":
        return torch.tensor([1.0 / math.log2(t + 2) for t in range(list_len)])
    return torch.tensor([(discount if kind == "geometric" else 1.0) ** t for t in range(list_len)])


def resolve_position_weights(values: dict[str, object], reward_discount: float | None) -> dict[str, object]:
    """``values`` (the model section) with ``auto`` position weights made concrete.

    ``reward_discount``: the simulator world's, or None for real logs (then ``dcg``).
    """
    if values.get("position_weights", "auto") != "auto":
        return values
    if reward_discount is None:
        return {**values, "position_weights": "dcg"}
    return {**values, "position_weights": "geometric", "position_discount": reward_discount}


class RewardModel(nn.Module):
    """Implements the ``ListEvaluator`` protocol (models/base.py).

    The user context (pooled vector and history tokens) is encoded once per request and shared
    by all K lists scored for it: the K lists' tokens cross-attend to one set of history keys.
    """

    weights: torch.Tensor  # (L,) the reward's position weights, a non-persistent buffer

    def __init__(self, config: RewardConfig) -> None:
        super().__init__()
        self.config = config
        width = config.d_model
        self.items, self.user_encoder, self.user_ids, self.cross = user_modules(
            config, config.user_embedding, config.cold_start_rate
        )
        self.positions = nn.Embedding(config.list_len, width)
        self.layers = nn.ModuleList(
            DecoderLayer(width, config.n_heads, config.ffn_mult, config.dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)
        self.register_buffer(
            "weights", position_weights(config.position_weights, config.list_len, config.position_discount),
            persistent=False,
        )

    def user_side(self, batch: RankingBatch) -> UserSide:
        """What ``batch`` gives every list scored for it: the user, every candidate crossed with
        the user, and each layer's history keys and values (``UserSide``)."""
        context = self.user_encoder(batch.history, batch.history_labels)
        user = with_user_id(context.user, self.user_ids, batch.users)  # (B, D)
        # Without history attention (the ablation) the cross-attention reads only the context
        # token, the history encoder's summary of the user, the same for every list token.
        padding = context.padding_mask if self.config.history_attention else _only_context(context.padding_mask)
        memories = [cast(DecoderLayer, layer).cross_attention.project_kv(context.tokens)  # (B, h, 1+H, dh)
                    for layer in self.layers]
        return UserSide(user, lambda: self.cross(self.items(batch.candidates), user), memories, padding)

    def item_logits(self, batch: RankingBatch, lists: torch.Tensor, side: UserSide | None = None) -> torch.Tensor:
        """(B, K, T) feedback logit of each item of lists (B, K, T) of candidate positions, T ≤ L.

        ``side``: ``batch``'s user side when several calls score lists for one batch (``bind``)."""
        batch_size, lists_per_request, length = lists.shape
        if length > self.config.list_len:
            raise DataError(
                f"lists: length {length}, expected at most the reward model's"
                f" list_len={self.config.list_len}"
            )
        width = self.config.d_model
        bound = side is not None
        side = self.user_side(batch) if side is None else side
        positions = lists.reshape(batch_size, -1)  # (B, K*T)
        if bound or lists_per_request * length > batch.candidates.shape[1]:
            # Many lists per request (PIER's L! orders, GoalRank's groups): cross each of the N candidates
            # with the user once and gather, instead of crossing K*T list items (720 * 6 rows for PIER).
            tokens = gather_rows(side.candidates(), positions)  # (B, K*T, D)
        else:
            tokens = self.cross(self.items(batch.candidates.gather(1, positions)), side.user)  # (B, K*T, D)
        tokens = tokens.view(batch_size, lists_per_request, length, width)  # (B, K, T, D)
        tokens = tokens + self.positions(torch.arange(length, device=lists.device))
        x = tokens.view(batch_size * lists_per_request, length, width)  # (B*K, T, D)
        for layer, memory in zip(self.layers, side.memories, strict=True):
            x = layer(x, memory, causal=self.config.causal, memory_padding=side.padding)
        return self.head(self.norm(x)).view(batch_size, lists_per_request, length)  # (B, K, T)

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor, side: UserSide | None = None) -> torch.Tensor:
        """(B, K) r(u, l) = Σ_t w_t σ(logit_t) of lists (B, K, T), T ≤ L."""
        probabilities = torch.sigmoid(self.item_logits(batch, lists, side))  # (B, K, T)
        return (probabilities * self.weights[: lists.shape[2]]).sum(dim=-1)

    def bind(self, batch: RankingBatch) -> BoundRewardModel:
        """This model as the evaluator of ``batch`` alone, its user side computed once for every call."""
        return BoundRewardModel(self, batch)


class UserSide:
    """A batch's share of scoring any of its lists: the (B, D) user vector, the (B, N, D) candidates
    crossed with it (computed on first use and kept), each layer's history keys/values and the
    (B, 1+H) history padding. Group construction scores lists of one batch in a dozen calls
    (beam steps, Markov pairs, the group itself); this is what they would each recompute."""

    def __init__(self, user: torch.Tensor, cross: Callable[[], torch.Tensor], memories: list[KeyValues],
                 padding: torch.Tensor) -> None:
        self.user, self.memories, self.padding = user, memories, padding
        self._cross: Callable[[], torch.Tensor] | None = cross
        self._candidates: torch.Tensor | None = None

    def candidates(self) -> torch.Tensor:
        if self._candidates is None:
            assert self._cross is not None
            self._candidates, self._cross = self._cross(), None
        return self._candidates


class BoundRewardModel:
    """A ``ListEvaluator`` for one batch (``RewardModel.bind``): the user side is encoded once and
    every ``list_reward`` call for that batch reuses it. Scoring another batch with it is a bug."""

    def __init__(self, model: RewardModel, batch: RankingBatch) -> None:
        self.model, self.batch, self.side = model, batch, model.user_side(batch)

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        if batch is not self.batch:
            raise ValueError("a reward model bound to one batch was asked to score another")
        return self.model.list_reward(batch, lists, self.side)


def _only_context(padding: torch.Tensor) -> torch.Tensor:
    """(B, 1+H) padding that hides every history token and keeps the context token (index 0)."""
    hidden = torch.ones_like(padding)
    hidden[:, 0] = False
    return hidden
