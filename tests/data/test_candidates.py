"""Non-exposed candidates without shortcuts: exposure-matched draws, no consumed items, the paper's kept."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from goalrank.cli import main
from goalrank.config import from_dict
from goalrank.data.lists import ConsumedBefore, MatchedNegatives, UserLog, cut_lists
from goalrank.data.prepare import PrepareConfig, prepare
from goalrank.evaluate.audit import ItemStats, shortcut_aucs


def skewed_log(n_users: int = 150, n_items: int = 200, per_user: int = 24, seed: int = 0) -> pl.DataFrame:
    """Ratings-like log: each user rates distinct items once, drawn ∝ a Zipf-like popularity, at
    increasing times; the label is a coin whose bias grows with the item's popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rows = []
    for user in range(n_users):
        items = rng.choice(n_items, per_user, replace=False, p=popularity / popularity.sum())
        times = np.sort(rng.integers(0, 10_000, per_user))
        for item, time in zip(items, times, strict=True):
            rows.append((user, int(item) + 1, int(time), int(rng.random() < 0.3 + 0.4 * popularity[item])))
    return pl.DataFrame(rows, schema=["user", "item", "timestamp", "label"], orient="row")


@pytest.fixture(scope="module")
def ratings(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ratings")
    skewed_log().write_csv(root / "log.csv")
    values = {"source": "generic", "input": str(root / "log.csv"), "kcore": 2, "list_len": 3, "n_candidates": 12,
              "history_len": 6, "exclude_consumed": "yes", "match_windows": 4}
    return root, values, prepare(from_dict(PrepareConfig, values), root / "matched")


def test_consumed_before_hand_example() -> None:
    log = UserLog.from_frame(pl.DataFrame({"user": [0, 0, 1], "item": [3, 5, 3], "timestamp": [10, 20, 5],
                                           "label": [1, 0, 1]}))
    consumed = ConsumedBefore(log, n_items=6)
    mask = consumed.mask(np.array([0, 0, 1]), np.array([[3, 5, 4], [3, 5, 4], [3, 5, 4]]), np.array([15, 25, 5]))
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, False, False]]  # at t=5 too


def test_no_list_offers_an_item_its_user_had_before_it(ratings) -> None:
    root, _, dataset = ratings
    log = UserLog.from_frame(pl.read_csv(root / "log.csv"))
    first_time = {}
    for user, item, time in zip(log.users.tolist(), log.items.tolist(), log.timestamps.tolist(), strict=True):
        first_time.setdefault((user, item), time)
    raw_users, raw_items = np.asarray(dataset.user_raw_ids), np.asarray(dataset.item_raw_ids)
    checked = 0
    for name in ("train", "valid", "test"):
        arrays = dataset.split(name).arrays
        for row in range(len(dataset.split(name))):
            user, start = int(raw_users[arrays["users"][row]]), int(arrays["timestamps"][row])
            exposed = set(arrays["exposed"][row].tolist())
            for slot, item in enumerate(arrays["candidates"][row].tolist()):
                if slot not in exposed:
                    assert first_time.get((user, int(raw_items[item])), np.inf) > start
                    checked += 1
    assert checked > 1000


def test_matched_candidates_are_distinct_hold_the_exposed_list_and_carry_labels_only_there(ratings) -> None:
    _, _, dataset = ratings
    arrays = dataset.split("train").arrays
    candidates, labels, exposed = (np.asarray(arrays[key]) for key in ("candidates", "labels", "exposed"))
    assert all(len(set(row)) == candidates.shape[1] for row in candidates.tolist())
    at_exposed = np.zeros(candidates.shape, dtype=bool)
    np.put_along_axis(at_exposed, exposed, True, axis=1)
    assert (labels[~at_exposed] == 0).all() and labels[at_exposed].sum() > 0


def test_calibrated_draws_make_appearances_proportional_to_exposures(ratings) -> None:
    """The share of an item's appearances in which it was exposed is flat (L / N) after calibration."""
    _, _, dataset = ratings
    stats = ItemStats.of(dataset.split("train"), dataset.n_items)
    seen = stats.appearances > 100
    rate = stats.exposure_rate[seen]
    assert rate.mean() == pytest.approx(3 / 12, abs=0.02)
    assert rate.std() < 0.035  # before calibration, consumed-item refusals spread it (checked below)


def test_without_calibration_refusals_bend_the_exposure_rate() -> None:
    log = UserLog.from_frame(skewed_log())
    lists = cut_lists(log, 3)
    rows = lists.rows()
    users, starts, exposed = log.users[rows[:, 0]], log.timestamps[rows[:, 0]], log.items[rows]
    n_items = int(log.items.max())
    counts = {}
    for calibrate in (False, True):
        matched = MatchedNegatives(log, n_items, 4, ConsumedBefore(log, n_items))
        if calibrate:
            matched.calibrate(lambda: [(users, starts, exposed)], 9, np.random.default_rng(1))
        drawn = matched(users, starts, exposed, 9, np.random.default_rng(2))
        appearances = np.bincount(drawn.ravel(), minlength=n_items + 1)[1:]
        exposures = np.bincount(exposed.ravel(), minlength=n_items + 1)[1:]
        seen = exposures > 20
        rate = exposures[seen] / (exposures[seen] + appearances[seen])
        counts[calibrate] = (np.corrcoef(appearances[seen] / exposures[seen], exposures[seen])[0, 1], rate.std())
    assert counts[False][0] < -0.7 and counts[True][0] > -0.4  # popular items are refused more, until calibrated
    assert counts[True][1] < 0.6 * counts[False][1]


def test_shortcuts_carry_no_signal_with_matched_candidates_but_do_with_retrieved(ratings) -> None:
    root, values, matched = ratings
    retrieved = prepare(from_dict(PrepareConfig, {**values, "candidates": "retrieved", "exclude_consumed": "no",
                                                  "retriever": {"dim": 4, "epochs": 2}}), root / "retrieved")
    assert max(shortcut_aucs(matched).values()) <= 0.55
    assert shortcut_aucs(retrieved)["exposure_rate"] > 0.6


def test_auto_choices_follow_the_source() -> None:
    movielens = from_dict(PrepareConfig, {"source": "movielens", "input": "ratings.csv"})
    assert (movielens.candidates, movielens.exclude_consumed) == ("matched", "yes")
    generic = from_dict(PrepareConfig, {"source": "generic", "input": "log.csv"})
    assert (generic.candidates, generic.exclude_consumed) == ("matched", "no")
    paper = from_dict(PrepareConfig, {"source": "movielens", "input": "ratings.csv", "candidates": "retrieved"})
    assert paper.exclude_consumed == "no"


def test_prepare_warns_when_a_shortcut_reaches_the_validation_auc_limit(ratings, tmp_path, capsys) -> None:
    root, values, _ = ratings
    argv = ["prepare", "--source", "generic", "--input", str(root / "log.csv"),
            *[f"--set={key}={value}" for key, value in values.items() if key not in ("source", "input")]]
    assert main([*argv, "--out", str(tmp_path / "matched")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "paper"), "--set=candidates=retrieved", "--set=exclude_consumed=no",
                 "--set=retriever.epochs=2"]) == 0
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith("warning: non-personalised shortcuts reach validation AUC above 0.55 or below 0.45 "
                              "(exposure_rate ")
