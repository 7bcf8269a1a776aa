"""The results folder: recorded runs are read back instead of trained, and the report is rebuilt
from it alone (the shared tiny benchmark's, and the small fixture committed under tests/fixtures)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from builders import run_tiny_benchmark
from goalrank.cli import main
from goalrank.data.storage import PreparedDataset
from goalrank.experiments.folder import BenchmarkFolder
from goalrank.experiments.results import ResultsStore, dataset_identity, learning_curve, run_cost
from goalrank.runs.folder import RunFolder

FIXTURE = Path(__file__).parent.parent / "fixtures" / "results"


def _tables(report: str) -> str:
    """The report without its header (command line, wall time): every section's tables and text."""
    return report.split("\n## ", 1)[1]


def test_every_run_is_recorded_with_cost_curve_and_lists(bench: Path) -> None:
    store = ResultsStore(BenchmarkFolder(bench).results)
    table1 = pl.read_csv(store.table("table1", "sim"))
    trained = table1.filter(pl.col("model") != "reference")
    assert trained.height == 13 and table1.height == 13 + 6
    assert sorted(table1["method"]) == sorted([
        "dnn", "dlcm", "setrank", "prm", "mir", "rankmixer", "egrerank", "pier", "nar4rec", "mge-3", "mge-20",
        "mge-100", "goalrank", "reward_beam", "random", "popularity", "exposure_rate", "itemwise_oracle",
        "list_oracle"])
    assert (trained["best_step"] <= trained["steps"]).all() and (trained["steps"] == 2).all()
    assert (trained["wall_s"] > 0).all() and (trained["epochs"] > 0).all()
    curves = pl.read_csv(store.curves("table1"))
    assert set(curves["run"]) == set(trained["run"])
    assert {"step", "wall_s", "valid_NDCG@3"} <= set(curves.columns)
    for row in table1.iter_rows(named=True):
        lists = store.per_list(row)
        assert abs(float(np.nanmean(lists["NDCG@3"])) - row["NDCG@3"]) < 1e-5  # the row's mean is its lists'
    rewards = pl.read_csv(store.table("reward", "sim"))
    assert rewards.height == 1 and {"test_auc", "ceiling_auc", "spearman_group", "steps"} <= set(rewards.columns)


def test_each_row_names_the_reward_run_it_was_trained_against(bench: Path) -> None:
    store = ResultsStore(BenchmarkFolder(bench).results)
    reward_run = pl.read_csv(store.table("reward", "sim"))["run"][0]
    table1 = pl.read_csv(store.table("table1", "sim"), schema_overrides={"reward_run": pl.String})
    by_method = dict(zip(table1["method"], table1["reward_run"], strict=True))
    assert {method: by_method[method] for method in ("goalrank", "egrerank", "pier", "mge-20", "reward_beam")} \
        == dict.fromkeys(("goalrank", "egrerank", "pier", "mge-20", "reward_beam"), reward_run)
    assert not by_method["dnn"] and not by_method["random"]  # no evaluator
    oracle = pl.read_csv(store.table("oracle", "sim"), schema_overrides={"reward_run": pl.String})
    assert set(oracle["reward_run"]) == {"oracle"}


def test_a_row_recorded_without_reward_run_is_named_when_a_benchmark_finds_it(bench: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(BenchmarkFolder(bench).results, results)
    store = ResultsStore(results)
    schema = {"reward_run": pl.String, "data": pl.String, "run": pl.String}
    named = {study: pl.read_csv(store.table(study, "sim"), schema_overrides=schema) for study in ("table1", "tune")}
    for study, table in named.items():  # as recorded before the column existed
        table.drop("reward_run").write_csv(store.table(study, "sim"))
    out = tmp_path / "out"
    assert run_tiny_benchmark(out, "--results", str(results), "--only", "table1,tune",
                              "--set", "methods=goalrank,dnn") == 0
    for study, table in named.items():
        again = pl.read_csv(store.table(study, "sim"), schema_overrides=schema)
        planned = again.filter(pl.col("model").is_in(["goalrank", "reference"]) | (pl.col("method") == "reward_beam"))
        before = table.filter(pl.col("run").is_in(planned["run"].to_list()))
        assert {run: name or None for run, name in zip(planned["run"], planned["reward_run"], strict=True)} == \
            {run: name or None for run, name in zip(before["run"], before["reward_run"], strict=True)}, study
        assert again.filter(pl.col("method") == "egrerank")["reward_run"].null_count() > 0  # not planned: unnamed
    assert not list(BenchmarkFolder(out).runs.glob("*/seed*/*/checkpoint.pt"))  # nothing trained


def test_a_recorded_reward_run_trained_again_for_a_new_ranker_keeps_its_row(bench: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(BenchmarkFolder(bench).results, results)
    rewards = ResultsStore(results).table("reward", "sim")
    before = rewards.read_bytes()
    out = tmp_path / "out"
    # a temperature no recorded GoalRank run has: the ranker is trained, so the reward model must be too
    assert run_tiny_benchmark(out, "--results", str(results), "--only", "table1", "--set", "methods=goalrank",
                              "--set", "ranker.reference.temperature=0.5") == 0
    assert list(BenchmarkFolder(out).runs.glob("*/seed0/reward-*/checkpoint.pt"))  # it was trained again
    assert rewards.read_bytes() == before


def test_the_report_names_each_rows_reward_model_and_flags_a_seed_that_mixes_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    table1 = pl.read_csv(results / "table1" / "sim.csv")
    evaluated = ("EGRerank", "PIER", "NAR4Rec", "MG-E G-3", "MG-E G-20", "MG-E G-100", "GoalRank")

    def reward_run(label: str, seed: int) -> str | None:
        if label not in evaluated or (label, seed) == ("PIER", 1):  # PIER seed 1: recorded before the column
            return None
        return "reward-one" if seed == 1 else "reward-new" if label == "GoalRank" else "reward-old"

    table1.with_columns(pl.Series("reward_run", [reward_run(label, seed) for label, seed in
                                                 zip(table1["label"], table1["seed"], strict=True)],
                                  dtype=pl.String)).write_csv(results / "table1" / "sim.csv")
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    others = "EGRerank, MG-E G-100, MG-E G-20, MG-E G-3, NAR4Rec"
    assert (f"seed 0: `reward-new` (GoalRank); `reward-old` ({others}, PIER) · "
            f"seed 1: not recorded (PIER); `reward-one` ({others.replace('EGRerank', 'EGRerank, GoalRank')})."
            in report)
    assert "**Seeds 0, 1 mix reward models**" in report


def test_the_tuning_rule_compares_only_settings_trained_against_the_defaults_reward_model(
        bench: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(BenchmarkFolder(bench).results, results)
    path = ResultsStore(results).table("tune", "sim")
    tune = pl.read_csv(path, schema_overrides={"reward_run": pl.String, "data": pl.String, "run": pl.String})
    egrerank = tune.filter(pl.col("method") == "egrerank")
    assert set(egrerank["reward_run"]) == set(tune.filter(pl.col("setting") == "default")["reward_run"])
    other = egrerank.filter(pl.col("setting") != "default")["setting"][0]
    tune.with_columns(pl.when((pl.col("method") == "egrerank") & (pl.col("setting") == other))
                      .then(pl.lit("reward-older")).otherwise(pl.col("reward_run")).alias("reward_run")).write_csv(path)
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| EGRerank | {other} | 1 | `reward-older` |" in report
    line = next(line for line in report.splitlines() if line.startswith("- EGRerank: **"))
    assert line.endswith(f"not compared, trained against another reward model than the default's: {other})")
    assert f"**{other}**" not in line


def test_a_recorded_run_is_read_back_not_trained_under_the_plans_current_names(
        bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    shutil.copytree(BenchmarkFolder(bench).results, results)
    # the default's run recorded as a knob, as a knob that became the default was
    path = ResultsStore(results).table("tune", "sim")
    tune = pl.read_csv(path, schema_overrides={"reward_run": pl.String, "data": pl.String, "run": pl.String})
    default = (pl.col("method") == "goalrank") & (pl.col("setting") == "default")
    tune.with_columns(pl.when(default).then(pl.lit("old knob")).otherwise(pl.col("setting")).alias("setting"),
                      pl.when(default).then(pl.lit("GoalRank old knob")).otherwise(pl.col("label")).alias("label")
                      ).write_csv(path)
    out = tmp_path / "elsewhere"  # another benchmark folder: no run folders, only the recorded results
    capsys.readouterr()
    assert run_tiny_benchmark(out, "--results", str(results)) == 0
    printed = capsys.readouterr().out
    assert not [line for line in printed.splitlines() if line.startswith("[run ]") and "train" in line]
    assert not list(BenchmarkFolder(out).runs.glob("*/seed*/*/checkpoint.pt"))
    assert _tables((out / "report.md").read_text()) == _tables((bench / "report.md").read_text())
    relabelled = pl.read_csv(path, schema_overrides={"run": pl.String}).filter(pl.col("method") == "goalrank")
    assert "old knob" not in relabelled["setting"].to_list() and relabelled["run"].is_unique().all()


def test_a_changed_run_is_trained_and_recorded_beside_the_old(bench: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(BenchmarkFolder(bench).results, results)
    out = tmp_path / "out"
    shutil.copytree(bench / "data", out / "data")
    assert run_tiny_benchmark(out, "--results", str(results), "--only", "table1", "--set", "methods=dnn",
                              "--set", "ranker.train.lr=0.002") == 0
    dnn = pl.read_csv(ResultsStore(results).table("table1", "sim")).filter(pl.col("method") == "dnn")
    assert dnn.height == 2 and dnn["run"].n_unique() == 2


def test_report_command_rebuilds_the_report_from_the_results_folder_alone(bench: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"  # no data, no run folders, no checkpoints beside it
    shutil.copytree(BenchmarkFolder(bench).results, results)
    assert main(["report", str(results), "--out", str(tmp_path / "report"), "--set", "bootstrap_samples=200"]) == 0
    rebuilt = (tmp_path / "report" / "report.md").read_text()
    assert _tables(rebuilt) == _tables((bench / "report.md").read_text())
    assert (tmp_path / "report" / "groupsize-sim.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_the_committed_fixture_matches_its_tables(tmp_path: Path) -> None:
    assert main(["report", str(FIXTURE), "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    table1 = pl.read_csv(FIXTURE / "table1" / "sim.csv")
    for method in ("GoalRank", "DNN", "random"):
        rows = table1.filter(pl.col("label") == method)
        line = next(line for line in report.splitlines() if line.startswith(f"| {method} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1] == str(rows.height)
        assert float(cells[3].split(" ± ")[0]) == pytest.approx(rows["NDCG@3"].mean(), abs=5e-5)
    assert re.search(r"\| NDCG@3 \| \S.* \| 0\.\d{4} \| 0\.\d{4} \|", report)  # the paired test's row
    trained = table1.filter(pl.col("model") != "reference")
    stopped = trained.filter(pl.col("best_step") < pl.col("steps")).height
    assert f"Early stopping: in {stopped} of {trained.height} runs" in report


def test_the_paired_row_compares_means_on_the_seeds_both_methods_have(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    table1 = pl.read_csv(results / "table1" / "sim.csv")
    table1.filter((pl.col("label") != "GoalRank") | (pl.col("seed") == 0)).write_csv(results / "table1" / "sim.csv")
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("| NDCG@3 |"))
    _, baseline, seeds, baseline_mean, goalrank_mean, improvement, *_ = (c.strip() for c in line.strip("|").split("|"))
    seed0 = table1.filter(pl.col("seed") == 0)
    assert seeds == "1"
    assert float(goalrank_mean) == pytest.approx(seed0.filter(pl.col("label") == "GoalRank")["NDCG@3"][0], abs=5e-5)
    assert float(baseline_mean) == pytest.approx(seed0.filter(pl.col("label") == baseline)["NDCG@3"][0], abs=5e-5)
    assert float(improvement.rstrip("%")) / 100 == pytest.approx(
        float(goalrank_mean) / float(baseline_mean) - 1, abs=2e-3)


def test_report_of_a_folder_without_studies_is_one_error_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results").mkdir()
    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 2
    assert "holds no study table" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_dataset_identity_ignores_where_the_data_lies_not_what_it_is(bench: Path, tmp_path: Path) -> None:
    data = BenchmarkFolder(bench).dataset("sim")
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    assert dataset_identity(PreparedDataset(moved)) == dataset_identity(PreparedDataset(data))
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["config"]["n_candidates"] += 1  # what the data is made from: another identity
    other = SimpleNamespace(manifest=manifest)  # all that dataset_identity reads
    assert dataset_identity(other) != dataset_identity(PreparedDataset(data))
    same_logs = json.loads((moved / "manifest.json").read_text())
    same_logs["simulator_sha256"] = "0" * 64  # another world config that wrote the same logs
    assert dataset_identity(SimpleNamespace(manifest=same_logs)) != dataset_identity(PreparedDataset(data))


def test_learning_curve_adds_steps_and_wall_time_across_a_resume(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    lines = [{"event": "resumed", "epoch": 1, "elapsed_s": 0.0},
             {"epoch": 1, "steps": 10, "elapsed_s": 5.0, "valid_NDCG@6": 0.2, "train_loss": 1.0},
             {"event": "resumed", "epoch": 2, "elapsed_s": 0.0},
             {"epoch": 2, "steps": 10, "elapsed_s": 4.0, "valid_NDCG@6": 0.3},
             {"epoch": 3, "steps": 5, "elapsed_s": 6.5, "valid_NDCG@6": 0.25}]
    run.log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    curve = learning_curve(tmp_path)
    assert [(p["eval"], p["step"], p["wall_s"]) for p in curve] == [(1, 10, 5.0), (2, 20, 9.0), (3, 25, 11.5)]
    assert run_cost(curve, best_eval=2, batch_size=4, train_lists=50) == {
        "steps": 25, "best_step": 20, "evals": 3, "wall_s": 11.5, "epochs": 2.0}


def test_a_run_recorded_again_under_another_config_supersedes_the_old_row(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    table = results / "table1" / "sim.csv"
    rows = pl.read_csv(table, infer_schema_length=None, schema_overrides={"data": pl.String, "run": pl.String})
    old = rows.filter((pl.col("label") == "DNN") & (pl.col("seed") == 0))
    store = ResultsStore(results)
    newer = {**old.to_dicts()[0], "run": "dnn-0000000000", "NDCG@3": 0.999}
    shutil.copy(store.lists(old.to_dicts()[0]), tmp_path / "lists.npz")
    store.record(newer, [], tmp_path / "lists.npz")
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    assert f"DNN seed 0: run {old['run'][0]} (data {old['data'][0]}) superseded by dnn-0000000000" \
        in capsys.readouterr().err
    report = (tmp_path / "out" / "report.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("| DNN |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    seed1 = rows.filter((pl.col("label") == "DNN") & (pl.col("seed") == 1))["NDCG@3"][0]
    assert cells[1] == "2" and float(cells[3].split(" ± ")[0]) == pytest.approx((0.999 + seed1) / 2, abs=5e-5)


def test_group_size_rows_are_reported_in_grid_order_not_in_text_order(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    groups = pl.read_csv(results / "groupsize" / "sim.csv")
    ten = pl.col("grid_value") == 4  # relabelled K=10, which sorts before K=2 as text
    groups.with_columns(pl.when(ten).then(10).otherwise(pl.col("grid_value")).alias("grid_value"),
                        *(pl.col(c).str.replace("K=4", "K=10") for c in ("label", "setting"))
                        ).write_csv(results / "groupsize" / "sim.csv")
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    section = (tmp_path / "report" / "report.md").read_text().split("## Group size K")[1]
    assert section.index("| GoalRank K=2 |") < section.index("| GoalRank K=10 |")
