import numpy as np
import polars as pl
from synthetic_logs import synthetic_log

from builders import collect, reference_lists
from goalrank.data.lists import (
    RetrievedNegatives,
    UserLog,
    candidate_sets,
    contexts,
    cut_lists,
    retrieved_negatives,
    sample_chunks,
)

LIST_LEN, HISTORY_LEN = 4, 6


def test_lists_and_contexts_match_a_per_user_loop_with_time_ties():
    frame = synthetic_log(n_users=5, per_user=23, time_span=15)  # many equal timestamps
    log = UserLog.from_frame(frame)
    lists = cut_lists(log, LIST_LEN)
    history, history_labels = contexts(log, lists.starts, HISTORY_LEN)
    expected = reference_lists(frame, LIST_LEN, HISTORY_LEN)
    assert len(lists) == lists.cut == 5 * (23 // LIST_LEN) and lists.repeats_dropped == 0
    got = [(int(log.users[s]), log.items[r].tolist(), log.labels[r].tolist(), h.tolist(), hl.tolist())
           for s, r, h, hl in zip(lists.starts, lists.rows(), history, history_labels)]
    assert got == expected
    assert history_labels.dtype == np.int8


def test_list_with_a_repeated_item_is_dropped_and_counted():
    frame = pl.DataFrame({"user": [0] * 6, "item": [1, 2, 1, 3, 4, 5], "timestamp": range(6),
                          "label": [1] * 6})
    lists = cut_lists(UserLog.from_frame(frame), 3)
    assert (lists.cut, lists.repeats_dropped, lists.starts.tolist()) == (2, 1, [3])


def test_candidates_hand_example():
    exposed_items = np.array([[2, 1]])
    retrieved = np.array([[5, 1, 7, 2, 9, 4]])  # best first; 1 and 2 are exposed
    negatives = retrieved_negatives(exposed_items, retrieved, 2)
    assert negatives.tolist() == [[5, 7]]  # the two best retrieved items not in the list
    candidates, labels, exposed = candidate_sets(exposed_items, np.array([[0, 1]]), negatives, np.random.default_rng(0))
    assert sorted(candidates[0].tolist()) == [1, 2, 5, 7]  # exposed + two best others
    assert candidates[0, exposed[0]].tolist() == [2, 1]
    assert labels[0].tolist() == [int(c == 1) for c in candidates[0]]


def test_samples_hold_the_logged_lists_in_shuffled_positions():
    frame = synthetic_log(n_users=8, per_user=24)
    log = UserLog.from_frame(frame.with_columns(pl.col("user") - 100))
    lists = cut_lists(log, LIST_LEN)
    n_candidates = 10
    retrieved = np.tile(np.arange(7, 7 + n_candidates), (8, 1))  # (U, N) the same for every user
    index = np.arange(len(lists))
    samples = collect(sample_chunks(log, lists, index, RetrievedNegatives(retrieved), HISTORY_LEN, n_candidates,
                            np.random.default_rng(0), chunk_size=7))
    candidates, exposed, labels = samples["candidates"], samples["exposed"], samples["labels"]
    rows = lists.rows()
    np.testing.assert_array_equal(np.take_along_axis(candidates, exposed, 1), log.items[rows])
    np.testing.assert_array_equal(np.take_along_axis(labels, exposed, 1), log.labels[rows])
    assert labels.sum() == log.labels[rows].sum()  # no label outside the exposed positions
    assert all(len(set(row)) == n_candidates for row in candidates.tolist())
    others = [set(c) - set(e) for c, e in zip(candidates.tolist(), log.items[rows].tolist())]
    assert all(o <= set(range(7, 7 + n_candidates)) for o in others)  # fillers come from the retriever
    assert len({tuple(e) for e in exposed.tolist()}) > len(lists) // 2  # positions are shuffled
    np.testing.assert_array_equal(samples["users"], log.users[lists.starts])
    np.testing.assert_array_equal(samples["history"], contexts(log, lists.starts, HISTORY_LEN)[0])
