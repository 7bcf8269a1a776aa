"""Raw ids of a ranking request -> the index tensors a ranker takes, with the cold-start rules.

The service speaks the raw user and item ids of the log; models speak indices (storage.py:
items 1..I, index 0 pads histories). This module owns that translation and the rules for what
the training data never saw:

* unknown **history** items are dropped (a history is evidence; an unseen item carries none the
  model could use, and index 0 is padding, so dropping it is what the model would see anyway);
* unknown **candidates** are rejected (422): a never-seen item has no trained embedding, so any
  position the model gave it would be arbitrary, and silently re-ordering the caller's items
  would hide that;
* a request without ``history`` from a **known user** gets that user's latest history in the run's
  dataset: the history of their latest logged list followed by that list itself (most recent
  last); from an **unknown user** it gets an empty history, which the user encoder maps to its
  learned context-token prior (blocks.UserContextEncoder), and the user index UNKNOWN_USER, which
  a model with a user-id embedding maps to its learned cold-start row (blocks.UserIdEmbedding);
* histories longer than H keep their H most recent items.

Candidate count: GoalRank's candidate encoder has no positional encoding and no fixed N, so any
count from L (a full list must exist) to the dataset's N (the largest set trained on) is served
exactly as given, with no padding candidates that the encoder would attend to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from goalrank.data.storage import SPLITS, PreparedDataset, RankingBatch
from goalrank.models.blocks import PAD, UNKNOWN_USER


class RequestError(ValueError):
    """A well-formed request the model cannot serve (wrong candidate count, unknown items), naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class HistoryEvent:
    """One past interaction of a request's history, in raw ids."""

    item: int
    label: int


class Catalog:
    """Raw-id maps, request limits and the latest history of every known user of a dataset."""

    def __init__(self, dataset: PreparedDataset, list_len: int) -> None:
        self.list_len = list_len
        self.max_candidates = dataset.n_candidates
        self.history_len = dataset.history_len
        self.item_index = {int(raw): index for index, raw in enumerate(dataset.item_raw_ids) if index != PAD}
        self.item_raw = np.asarray(dataset.item_raw_ids)
        self.user_index = {int(raw): index for index, raw in enumerate(dataset.user_raw_ids)}
        self._latest = _latest_histories(dataset)

    def latest_history(self, user_index: int) -> tuple[list[int], list[int]]:
        """Item indices and labels of a known user's most recent interactions (oldest first)."""
        return self._latest.get(user_index, ([], []))

    def encode(
        self, user: int | None, history: list[HistoryEvent] | None, candidates: list[int]
    ) -> RankingBatch:
        """One request as a batch of one row; RequestError says what the caller must change."""
        if not self.list_len <= len(candidates) <= self.max_candidates:
            raise RequestError(
                "candidates",
                f"{len(candidates)} given, expected between L={self.list_len} and N={self.max_candidates}"
                " distinct item ids",
            )
        unknown = [item for item in candidates if item not in self.item_index]
        if unknown:
            raise RequestError("candidates", f"unknown item id(s) {unknown[:10]}; cold-start candidates are rejected")
        user_index = self.user_index.get(user) if user is not None else None
        if history is not None:
            known = [event for event in history if event.item in self.item_index]
            items = [self.item_index[event.item] for event in known]
            labels = [event.label for event in known]
        elif user_index is not None:
            items, labels = self.latest_history(user_index)
        else:
            items, labels = [], []
        items, labels = items[-self.history_len :], labels[-self.history_len :]
        pad = [PAD] * (self.history_len - len(items))
        return RankingBatch(
            users=torch.tensor([user_index if user_index is not None else UNKNOWN_USER]),  # cold-start row
            history=torch.tensor([pad + items]),  # (1, H)
            history_labels=torch.tensor([pad + labels]),  # (1, H)
            candidates=torch.tensor([[self.item_index[item] for item in candidates]]),  # (1, N)
            labels=torch.zeros(1, len(candidates)),
            exposed=torch.zeros(1, self.list_len, dtype=torch.long),
        )

    def example_request(self) -> RankingBatch:
        """The first N known items for an unknown user: a valid request to warm up or benchmark with."""
        count = min(self.max_candidates, len(self.item_index))
        return self.encode(None, None, self.raw_items(torch.arange(1, count + 1)))

    def raw_items(self, indices: torch.Tensor) -> list[int]:
        """Raw ids of item indices (any shape, flattened)."""
        return [int(raw) for raw in self.item_raw[indices.flatten().cpu().numpy()]]


def _latest_histories(dataset: PreparedDataset) -> dict[int, tuple[list[int], list[int]]]:
    """Per user index: the history of their latest list followed by the list's own items.

    Latest is the greatest (timestamp, split order, row) over every split, so a tie in time
    resolves to the later split, which the temporal split made later in the log.
    """
    users, times, split_of, rows = [], [], [], []
    splits = [dataset.split(name) for name in SPLITS]
    for split_order, split in enumerate(splits):
        size = len(split)
        users.append(np.asarray(split.arrays["users"]))
        times.append(np.asarray(split.arrays["timestamps"]))
        split_of.append(np.full(size, split_order))
        rows.append(np.arange(size))
    users_all, times_all = np.concatenate(users), np.concatenate(times)
    split_all, rows_all = np.concatenate(split_of), np.concatenate(rows)
    order = np.lexsort((rows_all, split_all, times_all, users_all))  # by user, then recency
    is_last = np.ones(order.shape[0], dtype=bool)
    is_last[:-1] = users_all[order][1:] != users_all[order][:-1]
    latest: dict[int, tuple[list[int], list[int]]] = {}
    for position in order[is_last]:
        split = splits[split_all[position]].arrays
        row = rows_all[position]
        history, history_labels = split["history"][row], split["history_labels"][row]
        exposed = split["candidates"][row][split["exposed"][row]]  # (L,) items in logged order
        exposed_labels = split["labels"][row][split["exposed"][row]]
        keep = history != PAD
        items = np.concatenate([history[keep], exposed])[-dataset.history_len :]
        labels = np.concatenate([history_labels[keep], exposed_labels])[-dataset.history_len :]
        latest[int(users_all[position])] = ([int(i) for i in items], [int(v) for v in labels])
    return latest
