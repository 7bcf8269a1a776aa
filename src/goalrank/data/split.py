"""Temporal train / valid / test split by global time cuts (paper §4.1.1: "80/20 temporal split").

Rule. ``t_test`` is the start time of the list at the (1 - test_fraction) quantile of all list
start times, so about ``test_fraction`` of the lists start at or after it. ``t_valid`` is chosen
the same way among the lists that end before ``t_test``, so the latest ``valid_fraction`` of
them form the validation part. A list belongs to a split only if ALL its interactions lie in
that split's window::

    train: end < t_valid      valid: t_valid <= start and end < t_test      test: t_test <= start

Lists straddling a cut are dropped and counted. The retriever is trained on interactions with
timestamp < t_valid, strictly earlier than every valid and test list.

Why global, not per-user (e.g. each user's last 20%): with per-user cuts, one user's test list
can be older than another user's training lists, so the retriever, reward model and ranker are
fitted on interactions from after the moment they are evaluated on (trends, new items), which a
deployed model never sees. One global cut makes everything a model learns from strictly earlier
than every list it is tested on, as in production.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from goalrank.errors import DataError


@dataclass(frozen=True)
class TemporalSplit:
    """List indices per split and the two cut times."""

    t_valid: int
    t_test: int
    index: dict[str, np.ndarray]  # split name -> (S_split,) list indices, in list order
    straddling: int  # lists dropped because they cross a cut


def temporal_split(
    starts: np.ndarray, ends: np.ndarray, test_fraction: float, valid_fraction: float
) -> TemporalSplit:
    """Assign lists with first/last timestamps ``starts``/``ends`` (S,) to train, valid and test."""
    t_test = _cut(starts, test_fraction)
    t_valid = _cut(starts[ends < t_test], valid_fraction)
    masks = {
        "train": ends < t_valid,
        "valid": (starts >= t_valid) & (ends < t_test),
        "test": starts >= t_test,
    }
    index = {name: np.flatnonzero(mask) for name, mask in masks.items()}
    for name, rows in index.items():
        if rows.size == 0:
            raise DataError(
                f"temporal split: no {name} lists out of {starts.shape[0]} (cuts t_valid={t_valid}, "
                f"t_test={t_test}); the log is too short in time or the fractions too small"
            )
    straddling = starts.shape[0] - sum(rows.size for rows in index.values())
    return TemporalSplit(t_valid, t_test, index, straddling)


def _cut(starts: np.ndarray, fraction: float) -> int:
    """The start time from which about ``fraction`` of ``starts`` (the latest ones) begin."""
    if starts.size == 0:
        raise DataError("temporal split: no lists end before the test cut; the log is too short in time")
    ordered = np.sort(starts)
    latest = max(1, math.ceil(fraction * ordered.size))
    return int(ordered[ordered.size - latest])
