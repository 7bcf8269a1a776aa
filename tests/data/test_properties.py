"""Property tests of the data pipeline on random interaction logs with time ties (hypothesis).

Invariants, through the public functions ``prepare`` composes: the k-core is dense and a fixed
point; no list sees the future (its context is strictly earlier than its start, valid/test lists
start at/after their cut); candidate sets hold the exposed list at ``exposed`` with no duplicate
and labels only on exposed positives.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from builders import collect
from goalrank.data.filtering import kcore
from goalrank.data.lists import (
    RetrievedNegatives,
    UserLog,
    candidate_sets,
    cut_lists,
    retrieved_negatives,
    sample_chunks,
)
from goalrank.data.split import temporal_split
from goalrank.errors import DataError

SCHEMA = {"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "label": pl.Int8}
PROPERTY = settings(max_examples=100, deadline=None)


def log_frame(rows: list[tuple[int, int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def rows_of(frame: pl.DataFrame) -> list[tuple[int, ...]]:
    return list(frame.select(list(SCHEMA)).iter_rows())


interaction = st.tuples(st.integers(0, 5), st.integers(1, 6), st.integers(0, 8), st.integers(0, 1))


@PROPERTY
@given(rows=st.lists(interaction, max_size=80), k=st.integers(1, 4), data=st.data())
def test_kcore_survivors_have_k_and_the_core_is_a_fixed_point_independent_of_row_order(rows, k, data) -> None:
    kept, report = kcore(log_frame(rows), k)
    for column in ("user", "item"):
        assert kept.height == 0 or kept.group_by(column).len()["len"].min() >= k
    again, second = kcore(kept, k)
    assert rows_of(again) == rows_of(kept) and second.rounds == 0
    shuffled = data.draw(st.permutations(rows))
    assert sorted(rows_of(kcore(log_frame(shuffled), k)[0])) == sorted(rows_of(kept))
    assert report.interactions_after == kept.height <= len(rows)


@PROPERTY
@given(
    rows=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(0, 1)), min_size=24, max_size=90),
    list_len=st.integers(2, 3),
    history_len=st.integers(1, 6),
    test_fraction=st.sampled_from([0.2, 0.3]),
    valid_fraction=st.sampled_from([0.1, 0.25]),
)
def test_no_list_sees_the_future(rows, list_len, history_len, test_fraction, valid_fraction) -> None:
    """Item i is row i - 1 of the log, so every context item names the row (and time) it came from."""
    users = np.array([u for u, _, _ in rows])
    timestamps = np.array([t for _, t, _ in rows])  # in [0, 12]: many ties
    labels = np.array([y for _, _, y in rows], dtype=np.int8)
    items = np.arange(1, len(rows) + 1)
    log = UserLog.from_frame(pl.DataFrame({"user": users, "item": items, "timestamp": timestamps, "label": labels}))
    lists = cut_lists(log, list_len)
    try:
        split = temporal_split(log.timestamps[lists.starts], log.timestamps[lists.starts + list_len - 1],
                               test_fraction, valid_fraction)
    except DataError:
        reject()
    n_items = len(rows)
    retrieved = np.tile(np.arange(1, n_items + 1), (users.max() + 1, 1))  # (U, R) every item, R >= N
    window = {"train": (-np.inf, split.t_valid), "valid": (split.t_valid, split.t_test), "test": (split.t_test, np.inf)}
    for name, index in split.index.items():
        samples = collect(sample_chunks(log, lists, index, RetrievedNegatives(retrieved), history_len, list_len + 1,
                                np.random.default_rng(0), chunk_size=5))
        list_rows = lists.rows(index)  # (S, L) log rows of each list
        start, end = log.timestamps[list_rows[:, 0]], log.timestamps[list_rows[:, -1]]
        low, high = window[name]
        assert (start >= low).all() and (end < high).all(), f"{name} list outside its window"
        np.testing.assert_array_equal(samples["timestamps"], start)
        history = samples["history"]  # (S, H) item ids = log row + 1, 0 = padding
        padded = history == 0
        context_time = np.where(padded, -1, timestamps[history - 1])
        assert (context_time < start[:, None]).all(), "a context item is not strictly earlier than its list"
        assert (np.where(padded, samples["users"][:, None], users[history - 1]) == samples["users"][:, None]).all()
        np.testing.assert_array_equal(samples["history_labels"], np.where(padded, 0, labels[history - 1]))
        earlier = (users[None, :] == samples["users"][:, None]) & (timestamps[None, :] < start[:, None])  # (S, M)
        np.testing.assert_array_equal((~padded).sum(axis=1), np.minimum(earlier.sum(axis=1), history_len))


@PROPERTY
@given(
    size=st.integers(1, 6),
    list_len=st.integers(1, 4),
    extra=st.integers(0, 4),
    surplus=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_candidate_sets_hold_the_exposed_list_without_duplicates(size, list_len, extra, surplus, seed) -> None:
    """Exposed items and retrieved items come from one small pool, so they overlap often."""
    n_candidates = list_len + extra
    n_retrieved = n_candidates + surplus
    rng = np.random.default_rng(seed)
    pool = np.arange(1, n_retrieved + list_len + 1)
    exposed_items = np.stack([rng.choice(pool, list_len, replace=False) for _ in range(size)])  # (S, L)
    exposed_labels = rng.integers(0, 2, (size, list_len))
    retrieved = np.stack([rng.choice(pool, n_retrieved, replace=False) for _ in range(size)])  # (S, R) best first
    negatives = retrieved_negatives(exposed_items, retrieved, n_candidates - list_len)
    candidates, labels, exposed = candidate_sets(exposed_items, exposed_labels, negatives, rng)
    assert candidates.shape == labels.shape == (size, n_candidates) and exposed.shape == (size, list_len)
    np.testing.assert_array_equal(np.take_along_axis(candidates, exposed, axis=1), exposed_items)
    np.testing.assert_array_equal(np.take_along_axis(labels, exposed, axis=1), exposed_labels)
    at_exposed = np.zeros((size, n_candidates), dtype=bool)
    np.put_along_axis(at_exposed, exposed, True, axis=1)
    assert (labels[~at_exposed] == 0).all(), "a label outside the exposed positions"
    for row in range(size):
        assert len(set(candidates[row].tolist())) == n_candidates, "duplicate candidate"
        best_others = [item for item in retrieved[row] if item not in exposed_items[row]][: n_candidates - list_len]
        assert set(candidates[row][~at_exposed[row]].tolist()) == set(best_others)
