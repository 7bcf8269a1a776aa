import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from goalrank.data.filtering import kcore


def naive_kcore(rows: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    """Drop one offending row at a time until every user and item has >= k rows."""
    rows = list(rows)
    while True:
        users = {u: sum(r[0] == u for r in rows) for u, _ in rows}
        items = {i: sum(r[1] == i for r in rows) for _, i in rows}
        bad = next((r for r in rows if users[r[0]] < k or items[r[1]] < k), None)
        if bad is None:
            return rows
        rows = [r for r in rows if r[0] != bad[0] or users[bad[0]] >= k]
        rows = [r for r in rows if r[1] != bad[1] or items[bad[1]] >= k]


def frame(rows):
    return pl.DataFrame({"user": [u for u, _ in rows], "item": [i for _, i in rows],
                         "timestamp": list(range(len(rows))), "label": [1] * len(rows)},
                        schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "label": pl.Int8})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=60), st.integers(1, 5))
def test_kcore_matches_naive_loop_and_every_survivor_has_k(rows, k):
    kept, report = kcore(frame(rows), k)
    expected = naive_kcore(rows, k)
    assert list(zip(kept["user"], kept["item"])) == expected  # same rows, original order kept
    if kept.height:
        assert kept.group_by("user").len()["len"].min() >= k
        assert kept.group_by("item").len()["len"].min() >= k
    assert report.interactions_after == len(expected)
    assert report.interactions_dropped == len(rows) - len(expected)


def test_report_counts_rounds_and_drops():
    # item 9 has one row: dropping it leaves user 2 with one row, which goes in round 2.
    rows = [(1, 1), (1, 2), (2, 1), (2, 9), (3, 1), (3, 2), (3, 3), (1, 3)]
    kept, report = kcore(frame(rows), 2)
    assert sorted(set(kept["user"])) == [1, 3] and sorted(set(kept["item"])) == [1, 2, 3]
    assert (report.rounds, report.users_dropped, report.items_dropped, report.interactions_dropped) == (2, 1, 1, 2)
