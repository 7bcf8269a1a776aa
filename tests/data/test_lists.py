import numpy as np
import polars as pl
from builders import collect
from synthetic_logs import synthetic_log

from goalrank.data.lists import UserLog, candidate_sets, contexts, cut_lists, sample_chunks

LIST_LEN, HISTORY_LEN = 4, 6


def reference_lists(frame: pl.DataFrame, list_len: int, history_len: int):
    """Per user: stable sort by time, chunks of list_len, context = last H rows strictly earlier."""
    out = []
    rows = list(frame.iter_rows(named=True))
    for user in sorted({r["user"] for r in rows}):
        mine = sorted((r for r in rows if r["user"] == user), key=lambda r: r["timestamp"])
        for lo in range(0, len(mine) - list_len + 1, list_len):
            chunk = mine[lo : lo + list_len]
            before = [r for r in mine if r["timestamp"] < chunk[0]["timestamp"]][-history_len:]
            pad = [0] * (history_len - len(before))
            out.append((user, [r["item"] for r in chunk], [r["label"] for r in chunk],
                        pad + [r["item"] for r in before], pad + [r["label"] for r in before]))
    return out


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
    candidates, labels, exposed = candidate_sets(exposed_items, np.array([[0, 1]]), retrieved, 4,
                                                 np.random.default_rng(0))
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
    samples = collect(sample_chunks(log, lists, index, retrieved, HISTORY_LEN, n_candidates,
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
