"""Exposed lists, their user contexts and their candidate sets (paper §4.1.1, App. D.1).

Each user's interactions, in time order, are cut into consecutive non-overlapping lists of L
items (the last ``len % L`` are dropped): each list stands for one exposure of L items whose
feedback is the ground truth the ranker should reproduce. A list's context is the user's last H
interactions with a timestamp strictly earlier than the list's first one, so no interaction
that happened at the same moment as, or after, the list can leak into its input.

Ties in time are broken by the log's original row order, so the cut is deterministic.
Everything is vectorised over interactions, and samples are produced in chunks of lists that
the caller streams to disk, so memory holds the log and one chunk, never all the samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
from tqdm.auto import tqdm


@dataclass(frozen=True)
class UserLog:
    """Interactions sorted by (user, timestamp, original order); all arrays (M,)."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_frame(cls, log: pl.DataFrame) -> UserLog:
        """Sort ``log`` (columns user, item, timestamp, label) stably, keeping file order on ties."""
        ordered = log.sort(["user", "timestamp"], maintain_order=True)
        return cls(*(ordered[name].to_numpy() for name in ("user", "item", "timestamp", "label")))

    def __len__(self) -> int:
        return self.users.shape[0]

    @cached_property
    def first_of_user(self) -> np.ndarray:
        """(M,) row of each row's user's first interaction."""
        return _run_starts(np.r_[True, self.users[1:] != self.users[:-1]])

    @cached_property
    def first_of_moment(self) -> np.ndarray:
        """(M,) row of the first interaction of the same user with the same timestamp."""
        same = (self.users[1:] == self.users[:-1]) & (self.timestamps[1:] == self.timestamps[:-1])
        return _run_starts(np.r_[True, ~same])


@dataclass(frozen=True)
class Lists:
    """Exposed lists as row ranges of a UserLog: list ``s`` is rows ``starts[s] .. starts[s] + L - 1``."""

    starts: np.ndarray  # (S,)
    list_len: int
    cut: int  # lists cut before dropping those with a repeated item
    repeats_dropped: int  # lists dropped because an item occurs twice in them

    def __len__(self) -> int:
        return self.starts.shape[0]

    def rows(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(S', L) log rows of lists ``index``."""
        return self.starts[index, None] + np.arange(self.list_len)


def cut_lists(log: UserLog, list_len: int) -> Lists:
    """Cut every user's interactions into consecutive lists of ``list_len``; drop the remainder.

    A list in which one item occurs twice (repeat consumption) cannot be an exposure of distinct
    candidates, so it is dropped and counted.
    """
    first = log.first_of_user
    position = np.arange(len(log)) - first  # (M,) index of each row within its user
    user_size = np.bincount(first, minlength=len(log))[first]  # (M,) rows of the row's user
    starts = np.flatnonzero((position % list_len == 0) & (position + list_len <= user_size))
    lists = Lists(starts, list_len, starts.shape[0], 0)
    items = np.sort(log.items[lists.rows()], axis=1)  # (S, L)
    distinct = ~(items[:, 1:] == items[:, :-1]).any(axis=1)
    return Lists(starts[distinct], list_len, starts.shape[0], int((~distinct).sum()))


def contexts(log: UserLog, starts: np.ndarray, history_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, H) items and labels of the last H interactions strictly before each list, left-padded with 0."""
    end = log.first_of_moment[starts]  # (S,) first row not strictly earlier than the list
    rows = end[:, None] - history_len + np.arange(history_len)  # (S, H)
    valid = rows >= log.first_of_user[starts][:, None]
    rows = np.where(valid, rows, 0)
    return np.where(valid, log.items[rows], 0), np.where(valid, log.labels[rows], 0).astype(np.int8)


def candidate_sets(
    exposed_items: np.ndarray,
    exposed_labels: np.ndarray,
    retrieved: np.ndarray,
    n_candidates: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The N candidates of each list: its L exposed items plus the best retrieved items not in it.

    ``retrieved`` (S, R) holds the retriever's items for each list's user, best first, with
    R >= N; at most L of them are exposed, so N - L others always remain. The N candidates are
    shuffled per sample so that a ranker cannot learn the exposed positions from the layout.
    Returns candidates (S, N), labels (S, N) = 1 where exposed and positive, and exposed (S, L)
    = positions of the exposed items in ``candidates``, in logged order.
    """
    size, list_len = exposed_items.shape
    in_list = (retrieved[:, :, None] == exposed_items[:, None, :]).any(axis=2)  # (S, R)
    keep = np.argsort(in_list, axis=1, kind="stable")[:, : n_candidates - list_len]  # (S, N - L)
    ordered = np.concatenate([exposed_items, np.take_along_axis(retrieved, keep, axis=1)], axis=1)
    order = np.argsort(rng.random((size, n_candidates)), axis=1)  # (S, N) a random permutation
    candidates = np.take_along_axis(ordered, order, axis=1)
    exposed = np.argsort(order, axis=1)[:, :list_len]  # (S, L) where each exposed item went
    labels = np.zeros((size, n_candidates), dtype=np.int8)
    np.put_along_axis(labels, exposed, exposed_labels.astype(np.int8), axis=1)
    return candidates, labels, exposed


def sample_chunks(
    log: UserLog,
    lists: Lists,
    index: np.ndarray,
    retrieved_by_user: np.ndarray,
    history_len: int,
    n_candidates: int,
    rng: np.random.Generator,
    chunk_size: int,
    desc: str = "samples",
) -> Iterator[dict[str, np.ndarray]]:
    """The storage arrays (see goalrank.data.storage) of lists ``index``, ``chunk_size`` lists at a time.

    A generator, so that the caller streams each chunk to disk and memory stays bounded by one
    chunk however many lists there are. ``retrieved_by_user`` (U, R) holds the retriever's items
    of every user, best first.
    """
    for lo in tqdm(range(0, index.shape[0], chunk_size), desc=desc, unit="chunk", disable=None, leave=False):
        part = index[lo : lo + chunk_size]
        starts = lists.starts[part]  # (C,)
        rows = lists.rows(part)  # (C, L)
        users = log.users[starts]
        history, history_labels = contexts(log, starts, history_len)
        candidates, labels, exposed = candidate_sets(log.items[rows], log.labels[rows], retrieved_by_user[users],
                                                     n_candidates, rng)
        yield {"users": users, "timestamps": log.timestamps[starts], "history": history,
               "history_labels": history_labels, "candidates": candidates, "labels": labels, "exposed": exposed}


def _run_starts(is_start: np.ndarray) -> np.ndarray:
    """(M,) for each position, the index of the latest ``True`` at or before it."""
    return np.maximum.accumulate(np.where(is_start, np.arange(is_start.shape[0]), 0))
