"""The matrix-factorisation retriever that picks each user's candidates (paper §4.1.1, App. D.1).

The paper uses "a pre-trained Matrix Factorization (MF) model (Koren et al., 2009) as the
retriever" to select the top-50 candidates of each user. We fit MF to implicit feedback with
BPR (Rendle et al., 2009): for a positive (u, i) and a uniformly sampled item j, maximise
log σ(s(u, i) − s(u, j)) with s(u, i) = p_u·q_i + b_i.

Why BPR rather than weighted ALS: the log holds positives only (no explicit negatives), BPR
optimises the ranking the retriever is used for, and it trains with mini-batch SGD in a few
lines of torch with memory bounded by the batch, whereas ALS needs a per-user linear solve.
User vectors start at zero and only move with the user's own positives, so a user with no
training positives (one who arrives after the cut) is ranked by the item biases b_i alone, a
popularity-like ranking, instead of by a random vector.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from goalrank.config import check
from goalrank.errors import DataError
from goalrank.progress import progress

Search = Literal["auto", "exact", "hnsw"]


@dataclass
class RetrieverConfig:
    """BPR matrix factorisation (embedding size, optimisation budget, L2 weight, batch sizes) and
    how each user's top-N items are searched (``goalrank.retrieval.search``).

    search: "exact" scores all items; "hnsw" searches an HNSW graph (approximate, with its recall
      measured on ``recall_users`` users); "auto" is exact up to ``exact_max_pairs`` user-item
      pairs (1e10, about two minutes on one thread, where HNSW becomes faster), HNSW beyond.
    hnsw_neighbors / hnsw_ef_construction / hnsw_ef_search: the graph's degree (faiss's M) and
      the candidate-list sizes when building and searching (larger: higher recall, slower).
    """

    dim: int = 32
    epochs: int = 10
    lr: float = 0.01
    reg: float = 1e-4
    batch_size: int = 4096
    score_batch_size: int = 1024  # users searched at once
    search: Search = "auto"
    exact_max_pairs: int = 10_000_000_000
    hnsw_neighbors: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    recall_users: int = 2000

    def __post_init__(self) -> None:
        check(self.dim >= 1, "retriever.dim", "an integer >= 1", self.dim)
        check(self.epochs >= 1, "retriever.epochs", "an integer >= 1", self.epochs)
        check(self.lr > 0, "retriever.lr", "a positive number", self.lr)
        check(self.reg >= 0, "retriever.reg", "a number >= 0", self.reg)
        check(self.batch_size >= 1, "retriever.batch_size", "an integer >= 1", self.batch_size)
        check(self.score_batch_size >= 1, "retriever.score_batch_size", "an integer >= 1",
              self.score_batch_size)
        searches = get_args(Search)
        check(self.search in searches, "retriever.search", f"one of {list(searches)}", self.search)
        check(self.exact_max_pairs >= 0, "retriever.exact_max_pairs", "an integer >= 0", self.exact_max_pairs)
        for name in ("hnsw_neighbors", "hnsw_ef_construction", "hnsw_ef_search", "recall_users"):
            check(getattr(self, name) >= 1, f"retriever.{name}", "an integer >= 1", getattr(self, name))


class MatrixFactorization(nn.Module):
    """s(u, i) = p_u·q_i + b_i over users [0, U) and items [1, I]; item 0 is padding, never scored."""

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.n_items = n_items
        # Sparse gradients: a step touches only the batch's rows, so its cost does not grow with U, I.
        self.user_embedding = nn.Embedding(n_users, dim, sparse=True)
        self.item_embedding = nn.Embedding(n_items + 1, dim, sparse=True)
        self.item_bias = nn.Embedding(n_items + 1, 1, sparse=True)
        # Users start at zero so that one without training positives scores items by bias alone.
        nn.init.zeros_(self.user_embedding.weight)
        nn.init.normal_(self.item_embedding.weight, std=0.01, generator=generator)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of pairs: users (B,), items (B,) -> (B,)."""
        scores = (self.user_embedding(users) * self.item_embedding(items)).sum(-1)
        return scores + self.item_bias(items).squeeze(-1)

    @torch.no_grad()
    def top_items(self, users: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
        """(B, k) the k best items (indices in [1, I]) of each user, best first, scored in batches."""
        if k > self.n_items:
            raise DataError(f"retriever: {k} candidates requested but only {self.n_items} items exist")
        parts = []
        for lo in progress(range(0, users.shape[0], batch_size), desc="retrieve", unit="batch"):
            user = self.user_embedding(users[lo : lo + batch_size])  # (b, D)
            items = self.item_embedding.weight[1:]  # (I, D)
            scores = user @ items.T + self.item_bias.weight[1:].T  # (b, I)
            parts.append(scores.topk(k, dim=1).indices + 1)  # (b, k), back to 1-based items
        return torch.cat(parts) if parts else torch.empty(0, k, dtype=torch.long)

    @torch.no_grad()
    def score_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 users [p_u, 1] (U, D+1) and items [q_i, b_i] (I, D+1): s(u, i) is their inner product."""
        users = self.user_embedding.weight
        users = torch.cat([users, users.new_ones(users.shape[0], 1)], dim=1)
        items = torch.cat([self.item_embedding.weight[1:], self.item_bias.weight[1:]], dim=1)
        return users.float().numpy(), np.ascontiguousarray(items.float().numpy())


def train_bpr(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, config: RetrieverConfig, seed: int
) -> tuple[MatrixFactorization, float]:
    """Fit BPR-MF on positive pairs ``users``/``items`` (P,); returns the model and last epoch's mean loss.

    SparseAdam (lazy Adam) updates only the rows a batch touches, so an epoch costs O(P), not
    O(P · (U + I)) as dense Adam over the full tables would at 10M interactions. A step's
    tensors are small (batch × dim), so intra-op threads only add synchronisation (8x slower
    measured on a busy 2-core machine): training runs on one thread, restored afterwards.
    """
    if users.shape[0] == 0:
        raise DataError("retriever: no positive interactions before the validation cut to train on")
    generator = torch.Generator().manual_seed(seed)
    model = MatrixFactorization(n_users, n_items, config.dim, generator)
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=config.lr)
    pos_users, pos_items = torch.from_numpy(users).long(), torch.from_numpy(items).long()
    with _one_thread():
        epoch_loss = _fit(model, optimizer, pos_users, pos_items, config, generator)
    return model, epoch_loss


def _fit(model: MatrixFactorization, optimizer: torch.optim.Optimizer, pos_users: torch.Tensor,
         pos_items: torch.Tensor, config: RetrieverConfig, generator: torch.Generator) -> float:
    """The BPR epochs; returns the last epoch's mean loss."""
    epoch_loss = 0.0
    for _ in progress(range(config.epochs), desc="retriever (BPR)", unit="epoch"):
        order = torch.randperm(pos_users.shape[0], generator=generator)
        total = 0.0
        for lo in range(0, order.shape[0], config.batch_size):
            batch = order[lo : lo + config.batch_size]
            user, positive = pos_users[batch], pos_items[batch]
            negative = torch.randint(1, model.n_items + 1, batch.shape, generator=generator)
            margin = model(user, positive) - model(user, negative)  # (B,)
            l2 = (model.user_embedding(user).square().sum() + model.item_embedding(positive).square().sum()
                  + model.item_embedding(negative).square().sum())
            loss = -F.logsigmoid(margin).mean() + config.reg * l2 / batch.shape[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.shape[0]
        epoch_loss = total / order.shape[0]
    return epoch_loss


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
