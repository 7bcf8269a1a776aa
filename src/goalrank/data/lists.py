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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import polars as pl

from goalrank.errors import DataError
from goalrank.progress import progress


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
    negatives: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The N candidates of each list: its L exposed items plus its N - L non-exposed ``negatives``.

    The N candidates are shuffled per sample so that a ranker cannot learn the exposed positions
    from the layout. Returns candidates (S, N), labels (S, N) = 1 where exposed and positive, and
    exposed (S, L) = positions of the exposed items in ``candidates``, in logged order.
    """
    size, list_len = exposed_items.shape
    n_candidates = list_len + negatives.shape[1]
    ordered = np.concatenate([exposed_items, negatives], axis=1)
    order = np.argsort(rng.random((size, n_candidates)), axis=1)  # (S, N) a random permutation
    candidates = np.take_along_axis(ordered, order, axis=1)
    exposed = np.argsort(order, axis=1)[:, :list_len]  # (S, L) where each exposed item went
    labels = np.zeros((size, n_candidates), dtype=np.int8)
    np.put_along_axis(labels, exposed, exposed_labels.astype(np.int8), axis=1)
    return candidates, labels, exposed


def retrieved_negatives(exposed_items: np.ndarray, retrieved: np.ndarray, count: int) -> np.ndarray:
    """(S, count) the best retrieved items not in each list (the paper's construction, §4.1.1).

    ``retrieved`` (S, R) holds the retriever's items for each list's user, best first, with
    R >= count + L; at most L of them are exposed, so ``count`` others always remain.
    """
    in_list = (retrieved[:, :, None] == exposed_items[:, None, :]).any(axis=2)  # (S, R)
    keep = np.argsort(in_list, axis=1, kind="stable")[:, :count]
    return np.take_along_axis(retrieved, keep, axis=1)


class ConsumedBefore:
    """Which (user, item) pairs the log holds at or before a given time: "already consumed".

    For sources where an item is consumed once (a rating, a review), offering such an item as a
    non-exposed candidate hands the ranker a free negative: it is never exposed again, and it is
    in the user's visible history often enough to be learnt as "in history → not shown".
    """

    def __init__(self, log: UserLog, n_items: int) -> None:
        self.stride = n_items + 1
        keys = log.users.astype(np.int64) * self.stride + log.items
        order = np.lexsort((log.timestamps, keys))
        first = np.r_[True, keys[order][1:] != keys[order][:-1]]
        self.keys = keys[order][first]  # (P,) sorted distinct pairs
        self.first_time = log.timestamps[order][first]  # (P,) each pair's first timestamp

    def mask(self, users: np.ndarray, items: np.ndarray, before: np.ndarray) -> np.ndarray:
        """(S, K) True where user ``users[s]`` had ``items[s, k]`` at or before time ``before[s]``.

        At, too: ratings share timestamps (ML-100K users rate many films in one second), and an
        item rated in the list's first second belongs to the list or a neighbouring one, never to
        what the user has not seen yet.
        """
        keys = users.astype(np.int64)[:, None] * self.stride + items
        where = np.minimum(np.searchsorted(self.keys, keys), self.keys.shape[0] - 1)
        return (self.keys[where] == keys) & (self.first_time[where] <= before[:, None])


FALLBACK_CELLS = 1 << 24  # (rows × items) drawn at once for lists the weighted draws left short


class MatchedNegatives:
    """Non-exposed candidates drawn like exposures: each item about as often as it was exposed (to
    anyone) in the list's time window, never the list's own items (nor consumed ones, if given).

    With negatives drawn this way an item appears as a non-exposed candidate in proportion to how
    often it is exposed, so its share of appearances in which it was the exposed item is about the
    same for every item (L / N): exposure propensity no longer tells exposed from non-exposed
    candidates, and a ranker has to find the positives by preference. Windows are ``windows``
    quantile bins of the log's timestamps; lists are assigned by their first timestamp.

    Exclusions bend plain exposure-proportional draws: an item that many users consumed early, or
    that is itself in many lists, is refused for many lists, so it would appear less often than
    its exposures say (on ML-100K consumed-item refusals alone lifted the exposure-rate shortcut's
    AUC from 0.52 to 0.58; on the simulator, whose production logger shows a few items in many
    lists, the list's own items lifted it to 0.59). ``calibrate`` corrects
    that: it draws the negatives of every list ``calibration_rounds`` times and multiplies each
    window's item weights by exposures / appearances, so the appearances end up ∝ exposures.
    Items are drawn with replacement ∝ weight, in rounds, keeping the first distinct valid ones;
    a row still short after ``rounds`` rounds is filled uniformly from the valid items of the
    catalogue.
    """

    def __init__(self, log: UserLog, n_items: int, windows: int, consumed: ConsumedBefore | None,
                 oversample: int = 3, rounds: int = 8) -> None:
        self.n_items = n_items
        self.edges = np.unique(np.quantile(log.timestamps, np.linspace(0, 1, windows + 1)[1:-1]))
        window = np.searchsorted(self.edges, log.timestamps, side="right")  # (M,)
        n_windows = self.edges.shape[0] + 1
        self.exposures = np.bincount(window * (n_items + 1) + log.items,
                                     minlength=n_windows * (n_items + 1)).reshape(n_windows, n_items + 1)
        self.weights = self.exposures.astype(np.float64)  # (W, I + 1), calibrated by ``calibrate``
        self.consumed = consumed
        self.oversample, self.rounds = oversample, rounds

    def calibrate(self, samples: Callable[[], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]], count: int,
                  rng: np.random.Generator, calibration_rounds: int = 3) -> None:
        """Reweight so that each item's appearances as a negative are ∝ its exposures, per window.

        ``samples()`` yields (users, starts, exposed items) chunks of every list, one chunk in
        memory at a time; it is called once per round.
        """
        for _ in range(calibration_rounds):
            appearances = np.zeros_like(self.weights)
            for users, starts, exposed in samples():
                window = np.searchsorted(self.edges, starts, side="right")
                drawn = self(users, starts, exposed, count, rng)
                np.add.at(appearances, (np.repeat(window, count), drawn.ravel()), 1.0)
            target = self.exposures * (appearances.sum(axis=1, keepdims=True) / np.maximum(
                self.exposures.sum(axis=1, keepdims=True), 1))
            self.weights *= np.where(appearances > 0, target / np.maximum(appearances, 1.0), 1.0)

    def __call__(self, users: np.ndarray, starts: np.ndarray, exposed_items: np.ndarray, count: int,
                 rng: np.random.Generator) -> np.ndarray:
        """(S, count) distinct negatives per list; ``starts`` (S,) the lists' first timestamps."""
        window = np.searchsorted(self.edges, starts, side="right")
        negatives = np.zeros((users.shape[0], count), dtype=exposed_items.dtype)
        for w in np.unique(window):
            rows = np.flatnonzero(window == w)
            cdf = np.cumsum(self.weights[w])
            negatives[rows] = self._draw(users[rows], starts[rows], exposed_items[rows], count, rng,
                                         partial(_draw_by_weight, rng, cdf))
        return negatives

    def _draw(self, users: np.ndarray, starts: np.ndarray, exposed: np.ndarray, count: int,
              rng: np.random.Generator, draw: Callable[[tuple[int, int]], np.ndarray]) -> np.ndarray:
        chosen = np.full((users.shape[0], count), -1, dtype=np.int64)

        def extend(rows: np.ndarray, proposals: np.ndarray) -> None:
            """Rows ``rows`` keep their valid picks, then take valid ``proposals`` in order."""
            merged = np.concatenate([chosen[rows], proposals], axis=1)
            chosen[rows] = self._first_valid(users[rows], starts[rows], exposed[rows], merged, count)

        for round_ in range(self.rounds + 1):
            short = np.flatnonzero((chosen < 0).any(axis=1))
            if short.size == 0:
                break
            if round_ < self.rounds:
                extend(short, draw((short.size, self.oversample * count)))
                continue
            # still short: every item of the catalogue in random order, a bounded number of rows at a time
            step = max(1, FALLBACK_CELLS // self.n_items)
            for lo in range(0, short.size, step):
                rows = short[lo : lo + step]
                extend(rows, np.argsort(rng.random((rows.size, self.n_items)), axis=1) + 1)
        if (chosen < 0).any():
            raise DataError(f"{int((chosen < 0).any(axis=1).sum())} list(s) have fewer than {count} items that are "
                            "neither exposed in them nor consumed before them; lower n_candidates")
        return chosen

    def _first_valid(self, users: np.ndarray, starts: np.ndarray, exposed: np.ndarray, proposals: np.ndarray,
                     count: int) -> np.ndarray:
        """Per row, its first ``count`` distinct valid proposals in proposal order (invalid ones -1)."""
        invalid = (proposals[:, :, None] == exposed[:, None, :]).any(axis=2) | (proposals <= 0)
        if self.consumed is not None:
            invalid |= self.consumed.mask(users, np.maximum(proposals, 0), starts)
        order = np.argsort(proposals, axis=1, kind="stable")
        ordered = np.take_along_axis(proposals, order, axis=1)
        repeat = np.zeros_like(invalid)
        np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
        keep = ~(invalid | repeat)
        first = np.argsort(~keep, axis=1, kind="stable")[:, :count]
        return np.where(np.take_along_axis(keep, first, axis=1), np.take_along_axis(proposals, first, axis=1), -1)


def _draw_by_weight(rng: np.random.Generator, cdf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Items of ``shape`` drawn with replacement ∝ the weights whose cumulative sum is ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right"), cdf.shape[0] - 1)


class RetrievedNegatives:
    """The paper's non-exposed candidates: each user's best retrieved items not in the list."""

    def __init__(self, retrieved_by_user: np.ndarray) -> None:
        self.retrieved_by_user = retrieved_by_user  # (U, R) best first

    def __call__(self, users: np.ndarray, starts: np.ndarray, exposed_items: np.ndarray, count: int,
                 rng: np.random.Generator) -> np.ndarray:
        return retrieved_negatives(exposed_items, self.retrieved_by_user[users], count)


NegativeSampler = Callable[[np.ndarray, np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def sample_chunks(
    log: UserLog,
    lists: Lists,
    index: np.ndarray,
    negatives: NegativeSampler,
    history_len: int,
    n_candidates: int,
    rng: np.random.Generator,
    chunk_size: int,
    desc: str = "samples",
) -> Iterator[dict[str, np.ndarray]]:
    """The storage arrays (see goalrank.data.storage) of lists ``index``, ``chunk_size`` lists at a time.

    A generator, so that the caller streams each chunk to disk and memory stays bounded by one
    chunk however many lists there are. ``negatives`` chooses each list's N - L non-exposed
    candidates (``RetrievedNegatives`` or ``MatchedNegatives``).
    """
    for lo in progress(range(0, index.shape[0], chunk_size), desc=desc, unit="chunk"):
        part = index[lo : lo + chunk_size]
        starts = lists.starts[part]  # (C,)
        rows = lists.rows(part)  # (C, L)
        users = log.users[starts]
        history, history_labels = contexts(log, starts, history_len)
        exposed_items = log.items[rows]
        others = negatives(users, log.timestamps[starts], exposed_items, n_candidates - lists.list_len, rng)
        candidates, labels, exposed = candidate_sets(exposed_items, log.labels[rows], others, rng)
        yield {"users": users, "timestamps": log.timestamps[starts], "history": history,
               "history_labels": history_labels, "candidates": candidates, "labels": labels, "exposed": exposed}


def _run_starts(is_start: np.ndarray) -> np.ndarray:
    """(M,) for each position, the index of the latest ``True`` at or before it."""
    return np.maximum.accumulate(np.where(is_start, np.arange(is_start.shape[0]), 0))
