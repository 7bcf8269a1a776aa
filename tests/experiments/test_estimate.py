"""`goalrank benchmark --estimate`: every distinct run timed once, projections add up, no real runs made."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from builders import BENCHMARK_TINY as TINY
from goalrank.cli import main
from goalrank.data.storage import PreparedDataset
from goalrank.experiments.benchmark import ranker_run
from goalrank.experiments.config import load_benchmark_config
from goalrank.experiments.plan import plan


def _estimate(out: Path, steps: str) -> int:
    argv = ["benchmark", "--out", str(out), "--profile", "quick", "--seeds", "0,1",
            "--estimate", steps]
    return main(argv + [arg for item in TINY for arg in ("--set", item)])


@pytest.fixture(scope="module")
def estimate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("estimate")
    assert _estimate(out, "2") == 0
    return out


def test_each_distinct_run_is_timed_once_with_the_studies_that_share_it(estimate: Path) -> None:
    config = load_benchmark_config("quick", None, TINY, {"seeds": "0,1"})
    dataset = PreparedDataset(estimate / "data" / "sim")
    distinct = {ranker_run(spec, config, dataset, 0, estimate / "reward").name for spec in plan(config)}
    rows = pl.read_csv(estimate / "estimate" / "estimate.csv")
    assert rows["runs"][0] == "reward model"
    assert rows.height == 1 + len(distinct) < 1 + len(plan(config))
    assert "GoalRank = GoalRank default = GoalRank K=4 = GoalRank β=0.0 = GoalRank 8x2" in rows["runs"].to_list()
    # a run of the tuning study alone trains on its seed (0), every other run on both seeds
    tune_only = {spec.label for spec in plan(config) if spec.study == "tune"} - {"GoalRank default", "EGRerank default"}
    for row in rows.iter_rows(named=True):
        assert row["seeds"] == (1 if row["runs"] in tune_only else 2), row["runs"]
    assert not (estimate / "runs").exists()  # timing runs live in the scratch folder only


def test_projection_is_setup_plus_epochs_of_batches_and_validation_plus_test(estimate: Path) -> None:
    rows = pl.read_csv(estimate / "estimate" / "estimate.csv")
    train_lists = len(PreparedDataset(estimate / "data" / "sim").split("train"))
    for row in rows.iter_rows(named=True):
        assert row["batch_s"] > 0 and row["valid_s"] >= 0 and row["setup_s"] >= 0 and row["test_s"] >= 0
        assert row["batches"] == min(math.ceil(train_lists / 64), 2)  # TINY caps every run at 2 batches of 64
        expected = row["setup_s"] + row["epochs"] * (row["batches"] * row["batch_s"] + row["valid_s"]) + row["test_s"]
        assert row["projected_s"] == pytest.approx(expected)
    report = (estimate / "estimate" / "estimate.md").read_text()
    one_seed, every_seed = rows["projected_s"].sum(), (rows["projected_s"] * rows["seeds"]).sum()
    assert f"| sim | {one_seed / 60:.1f} min | {every_seed / 60:.1f} min |" in report


def test_estimate_needs_a_positive_number_of_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _estimate(tmp_path, "0") == 2
    assert "--estimate" in capsys.readouterr().err
