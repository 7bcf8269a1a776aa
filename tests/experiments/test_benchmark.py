"""`goalrank benchmark`: report contents, shared and reused runs, the significance test, CLI errors.

One tiny end-to-end run (simulator of 60 users, 2 training steps per model, d_model 8) is shared
by the module; the statistical functions are checked on hand-made per-list data.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from builders import BENCHMARK_TINY as TINY
from builders import run_tiny_benchmark as _benchmark
from goalrank.cli import main
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ConfigError
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.experiments import evaluation
from goalrank.experiments.config import PROFILES, STUDIES, load_benchmark_config, merge_values, parse_size
from goalrank.experiments.folder import BenchmarkFolder
from goalrank.experiments.plan import REWARD_BEAM, SANITY_ROWS, TABLE1_BASELINES, TUNE_SETTINGS, plan
from goalrank.experiments.statistics import best_baseline, paired_bootstrap
from goalrank.io import SUMS
from goalrank.models.blocks import count_parameters
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import load_ranker, run_dataset

LIST_LEN = 3
METRICS = (f"H@{LIST_LEN}", f"NDCG@{LIST_LEN}", f"MAP@{LIST_LEN}", f"F1@{LIST_LEN}", "AUC")
TABLE1_LABELS = [label for label, _ in TABLE1_BASELINES] + ["MG-E G-3", "MG-E G-20", "MG-E G-100", "GoalRank"]
REFERENCE_ROWS = [REWARD_BEAM, *SANITY_ROWS]
ARTEFACTS = ("checkpoint.pt", "metrics.json", "eval-test.json", "per-list-test.npz")
REFERENCE_ARTEFACTS = ("eval-test.json", "per-list-test.npz")


def _run_dir(bench: Path, run: str) -> Path:
    return BenchmarkFolder(bench).seed("sim", 0) / run


def _section(report: str, title: str) -> str:
    return report.split(f"## {title}")[1].split("\n## ")[0]


def _table_rows(section: str) -> dict[str, list[str]]:
    """First markdown table of a section: {row label: cells}."""
    table = section.strip().split("\n\n")[1].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)}


def test_report_has_all_table1_rows_with_numeric_cells(bench: Path) -> None:
    report = (bench / "report.md").read_text()
    rows = _table_rows(_section(report, "Table 1 — sim"))
    assert list(rows) == TABLE1_LABELS + REFERENCE_ROWS
    for seeds, *cells in rows.values():
        assert seeds == "1"
        assert len(cells) == 12  # five metrics on logged labels, five on complete labels, true reward, oracle ratio
        assert all(re.fullmatch(r"-?\d+\.\d{4}", cell) for cell in cells)  # one seed: the mean alone
    table1 = pl.read_csv(bench / "table1.csv")
    assert table1.height == len(TABLE1_LABELS) + len(REFERENCE_ROWS)
    for column in (*METRICS, *(f"complete_{name}" for name in METRICS), "true_reward"):
        assert table1[column].is_between(0, 10).all()
    by_label = {row["label"]: row for row in table1.iter_rows(named=True)}
    assert by_label["list_oracle"]["oracle_ratio"] == pytest.approx(1.0)  # the oracle ratio's own oracle
    assert max(row["true_reward"] for row in by_label.values()) == by_label["list_oracle"]["true_reward"]
    assert (table1.filter(pl.col("model") == "reference")["parameters"] == 0).all()
    reward_run = pl.read_csv(bench / "reward.csv")["run"][0]
    assert by_label[REWARD_BEAM]["run"].endswith(reward_run)  # the seed's reward model's own beam search
    assert "goalrank benchmark --out" in report and "ML-1M" in report


def test_the_bias_section_has_one_row_per_beta_and_noise_kind(bench: Path) -> None:
    section = _section((bench / "report.md").read_text(), "Reward-model bias β (Table 3) — sim")
    assert list(_table_rows(section)) == ["GoalRank β=0.0", "GoalRank β=0.5", "GoalRank β=0.5 fixed"]


def test_significance_row_per_metric_names_the_best_baseline(bench: Path) -> None:
    table1 = pl.read_csv(bench / "table1.csv")
    section = _section((bench / "report.md").read_text(), "Table 1 — sim")
    significance = section.split("on the seeds both have):")[1].strip().split("\n\n")[0].splitlines()[2:]
    keys = [*METRICS, *(f"complete_{name}" for name in METRICS), "true_reward"]
    for line, metric in zip(significance, keys, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        baselines = table1.filter((pl.col("label") != "GoalRank") & (pl.col("model") != "reference"))
        best = baselines.filter(pl.col(metric) == baselines[metric].max())["label"].to_list()
        assert cells[0] == metric and cells[1] in best and cells[2] == "1"  # one seed in common
        assert 0 < float(cells[7]) <= 1


def test_studies_share_runs_and_count_parameters(bench: Path) -> None:
    table1, tune, _, groups, bias, scaling = (pl.read_csv(bench / f"{study}.csv") for study in STUDIES)
    goalrank_run = table1.filter(pl.col("label") == "GoalRank")["run"][0]
    assert tune.filter(pl.col("label") == "GoalRank default")["run"][0] == goalrank_run
    assert groups.filter(pl.col("setting") == "K=4")["run"][0] == goalrank_run  # K=4 is the default group size
    assert bias.filter(pl.col("grid_value") == 0.0)["run"][0] == goalrank_run
    assert scaling.filter(pl.col("label") == "GoalRank 8x2")["run"][0] == goalrank_run  # d_model 8, 2 layers
    mge_run = table1.filter(pl.col("label") == "MG-E G-3")["run"][0]
    assert scaling.filter(pl.col("label") == "MG-E G-3")["run"][0] == mge_run
    manifest = pl.read_json(bench / "data" / "sim" / "manifest.json")
    small = GoalRankGenerator(GeneratorConfig(n_items=int(manifest["n_items"][0]), n_users=int(manifest["n_users"][0]),
                                              d_model=4, encoder_layers=1, decoder_layers=1, list_len=LIST_LEN))
    assert scaling.filter(pl.col("label") == "GoalRank 4x1")["parameters"][0] == count_parameters(small)
    assert (bench / "scaling-sim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (bench / "groupsize-sim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_passes_on_simulator_data_measure_the_true_reward_of_the_chosen_checkpoint(bench: Path) -> None:
    table1 = pl.read_csv(bench / "table1.csv")
    row = table1.filter(pl.col("label") == "GoalRank").row(0, named=True)
    curves = pl.read_csv(bench / "results" / "table1" / "curves.csv", infer_schema_length=None)
    chosen = curves.filter((pl.col("run") == row["run"]) & (pl.col("step") == row["best_step"])).row(0, named=True)
    model, _ = load_ranker(_run_dir(bench, row["run"]))  # the chosen checkpoint
    dataset = PreparedDataset(bench / "data" / "sim")
    simulator = simulator_for(dataset)
    assert simulator is not None
    again = evaluate_ranker(model, dataset.split("valid"), 512, torch.device("cpu"), TrueReward(simulator, dataset, 1))
    for key in ("true_reward", "complete_NDCG@3", "NDCG@3"):
        assert chosen[f"valid_{key}"] == pytest.approx(again[key], rel=1e-6), key


def test_tuning_study_picks_each_methods_best_validation_setting(bench: Path) -> None:
    tune = pl.read_csv(bench / "tune.csv")
    for model, settings in TUNE_SETTINGS.items():
        rows = tune.filter(pl.col("model") == model)
        assert sorted(rows["setting"].to_list()) == sorted(setting for setting, _ in settings)
        assert rows["run"].n_unique() == len(settings)  # every knob changes the run
    curves = pl.concat([pl.read_csv(path, infer_schema_length=None) for path in bench.glob("results/*/curves.csv")],
                       how="diagonal_relaxed")
    at_best = tune.join(curves, on=["run", "seed"]).filter(pl.col("step") == pl.col("best_step"))
    report = (bench / "report.md").read_text()
    assert "## Tuning study — sim (validation split only)" in report
    for name in ("GoalRank", "EGRerank"):
        rows = at_best.filter(pl.col("name") == name).sort("valid_NDCG@3", descending=True)
        assert f"- {name}: **{rows['setting'][0]}** (valid_NDCG@3 {rows['valid_NDCG@3'][0]:.4f}" in report


def test_oracle_study_trains_every_ge_method_and_goalrank_against_the_exact_reward(bench: Path) -> None:
    oracle = pl.read_csv(bench / "oracle.csv")
    assert sorted(oracle["model"].unique().to_list()) == ["egrerank", "goalrank", "mge", "nar4rec", "pier"]
    assert oracle.height == 7  # MG-E at G = 3, 20, 100
    for run in oracle["run"]:
        config = json.loads((_run_dir(bench, run) / "config.json").read_text())
        assert config["reward"] == "oracle" and config["select_metric"] == "true_reward"
    table1 = pl.read_csv(bench / "table1.csv")
    assert not set(oracle["run"]) & set(table1["run"])  # not the learned-reward runs
    assert oracle["oracle_ratio"].is_between(0, 1.0001).all()
    # 8 candidates, L = 3: the 336 lists are enumerated, and π* with them (evaluate.policy_kl)
    with_policy = oracle.filter(pl.col("model").is_in(["goalrank", "mge"]))
    assert (with_policy["kl_oracle_t1"] > 0).all() and (with_policy["kl_oracle_t0.25"] > 0).all()
    mge = oracle.filter(pl.col("model") == "mge")
    assert (mge["kl_mixture_t1"] <= mge["kl_oracle_t1"] + 1e-4).all()
    assert oracle.filter(pl.col("model") == "pier")["kl_oracle_t1"].is_null().all()
    assert oracle["kl_uniform_t1"].n_unique() == 1  # the uniform policy's KL depends on the data alone
    assert "KL(π* ‖ the method's policy)" in (bench / "report.md").read_text()
    reward = pl.read_csv(bench / "reward.csv")
    assert reward.height == 1 and reward["test_auc"].is_between(0, 1).all()
    assert {"ceiling_auc", "spearman_random", "spearman_group", "test_ece"} <= set(reward.columns)
    report = (bench / "report.md").read_text()
    assert "## Exact-reward diagnostic — sim" in report and "## Reward model" in report


def test_one_tensorboard_logdir_shows_every_trained_run(bench: Path) -> None:
    trained = {run for study in STUDIES for run, model in pl.read_csv(bench / f"{study}.csv")
               .select("run", "model").iter_rows() if model != "reference"}
    rewards = {path.parent.name for path in bench.glob("runs/*/seed*/reward-*/config.json")}
    curves = EventMultiplexer().AddRunsFromDirectory(str(BenchmarkFolder(bench).runs)).Reload()
    assert set(curves.Runs()) == {f"sim/seed0/{run}/tensorboard" for run in trained | rewards}
    assert all("train/loss" in tags["scalars"] for tags in curves.Runs().values())


def test_rerun_reuses_every_run(bench: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {(run, model) for study in STUDIES for run, model in pl.read_csv(bench / f"{study}.csv")
            .select("run", "model").iter_rows()}
    artefacts = [_run_dir(bench, run) / name for run, model in runs for name in ARTEFACTS
                 if model != "reference" or name in REFERENCE_ARTEFACTS]  # reference rankers are not trained
    assert all(path.is_file() for path in artefacts)
    before = {p: p.stat().st_mtime_ns for p in artefacts}
    report_before = (bench / "report.md").read_text()
    capsys.readouterr()
    assert _benchmark(bench) == 0
    out = capsys.readouterr().out
    assert "[run ]" not in out and "[skip]" in out
    assert {p: p.stat().st_mtime_ns for p in artefacts} == before
    strip_time = lambda text: re.sub(r"took \d+ s", "", text)  # noqa: E731
    assert strip_time((bench / "report.md").read_text()) == strip_time(report_before)


def test_report_files_are_recorded_and_a_corrupted_run_result_is_named(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = subprocess.run(["sha256sum", "-c", SUMS], cwd=bench, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    recorded = {line.split("  ", 1)[1] for line in (bench / SUMS).read_text().splitlines()}
    assert {"report.md", "table1.csv", "scaling-sim.png", "benchmark-config.json"} <= recorded
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    shutil.rmtree(BenchmarkFolder(copy).results)  # recorded runs are read back from there, not from run folders
    run = pl.read_csv(copy / "table1.csv")["run"][0]
    results = _run_dir(copy, run) / "eval-test.json"
    results.write_text(results.read_text().replace("0.", "0.9", 1))
    capsys.readouterr()
    assert _benchmark(copy) == 2
    assert f"{results}: checksum mismatch" in capsys.readouterr().err


def test_bad_study_or_dataset_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "--out", str(tmp_path / "b"), "--only", "table1,tabel3"]) == 2
    assert "--only" in capsys.readouterr().err
    for bad, named in (("ml1m", "NAME=SOURCE:PATH"), ("x=ml1m:ratings.dat", "source 'ml1m'"),
                       ("x=movielens", "needs a path")):
        assert main(["benchmark", "--out", str(tmp_path / "b"), "--dataset", bad]) == 2
        assert named in capsys.readouterr().err
    twice = ["--dataset", "a=simulator", "--dataset", "a=simulator"]
    assert main(["benchmark", "--out", str(tmp_path / "b"), *twice]) == 2
    assert "distinct names" in capsys.readouterr().err
    assert main(["benchmark", "--out", str(tmp_path / "b"), "--dataset", f"x=movielens:{tmp_path / 'none.csv'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "b" / "report.md").exists()


def test_table1_runs_on_a_generic_log_named_on_the_command_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users, items, per_user = 40, 30, 24
    rows = [(u, int(i), t, int(rng.random() < 0.4)) for u in range(users)
            for t, i in enumerate(rng.choice(items, size=per_user, replace=False))]
    log = tmp_path / "mine.csv"
    pl.DataFrame(rows, schema=["user", "item", "timestamp", "label"], orient="row").write_csv(log)
    out = tmp_path / "bench"
    sets = ["prepare.list_len=3", "prepare.kcore=2", "prepare.n_candidates=8", "prepare.history_len=5",
            "prepare.retriever.epochs=1", "reward.model.d_model=8", "reward.train.max_steps_per_epoch=2",
            "ranker.model.d_model=8", "ranker.train.max_steps_per_epoch=2", "ranker.group.group_size=4",
            "mge_generators=3", "bootstrap_samples=100"]
    argv = ["benchmark", "--out", str(out), "--profile", "quick", "--dataset", f"mine=generic:{log}",
            "--seeds", "0", "--only", "table1", *[arg for item in sets for arg in ("--set", item)]]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    rows_by_label = _table_rows(_section(report, "Table 1 — mine"))
    assert list(rows_by_label) == [label for label, _ in TABLE1_BASELINES] + ["MG-E G-3", "GoalRank", REWARD_BEAM,
                                                                              "random", "popularity", "exposure_rate"]
    assert all(len(cells) == 6 for cells in rows_by_label.values())  # seeds and no true reward off the simulator
    table1 = pl.read_csv(out / "table1.csv")
    assert set(table1["dataset"]) == {"mine"} and table1["NDCG@3"].is_between(0, 1).all()


def test_paired_bootstrap_identical_inputs_give_p_one() -> None:
    values = np.random.default_rng(0).random((2, 50))
    result = paired_bootstrap(values, values.copy(), samples=500, seed=0)
    assert result.p_value == 1.0 and result.mean_difference == 0.0
    assert result.ci_low == 0.0 == result.ci_high


@pytest.mark.parametrize("shift", [0.05, -0.05])
def test_paired_bootstrap_shifted_copy_is_significant(shift: float) -> None:
    control = np.random.default_rng(1).random((2, 200))
    noise = np.random.default_rng(2).normal(0, 0.01, control.shape)
    result = paired_bootstrap(control + shift + noise, control, samples=1000, seed=0)
    assert result.p_value == pytest.approx(1 / 1001)
    assert np.sign(result.mean_difference) == np.sign(shift)
    assert result.ci_low <= result.mean_difference <= result.ci_high
    assert not result.ci_low <= 0 <= result.ci_high


def test_paired_bootstrap_matches_exhaustive_enumeration_and_drops_nan_lists() -> None:
    differences = np.array([1.0, -1.0, 3.0])
    observed = differences.mean()
    resample_means = [np.mean(c) for c in itertools.product(differences, repeat=3)]  # 27 equally likely
    exact = np.mean([abs(m - observed) >= abs(observed) for m in resample_means])
    treatment = np.array([[1.0, -1.0, 3.0, np.nan]])
    result = paired_bootstrap(treatment, np.zeros_like(treatment), samples=40_000, seed=0)
    assert result.n_lists == 3 and result.mean_difference == pytest.approx(observed)
    assert result.p_value == pytest.approx(exact, abs=0.01)


def test_best_baseline_and_relative_improvement_hand_computed() -> None:
    label, improvement = best_baseline({"DNN": 0.50, "PIER": 0.60, "GoalRank": 0.75}, "GoalRank")
    assert label == "PIER" and improvement == pytest.approx(0.25)
    label, improvement = best_baseline({"DNN": 0.80, "GoalRank": 0.60}, "GoalRank")
    assert label == "DNN" and improvement == pytest.approx(-0.25)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_is_a_valid_config_and_gives_every_method_one_budget(profile: str) -> None:
    config = load_benchmark_config(profile, None, [], {})
    runs = {spec.label: merge_values(config.ranker, spec.values) for spec in plan(config) if spec.study == "table1"}
    budgets = {(values.get("train", {}).get("epochs"), values.get("train", {}).get("max_steps_per_epoch"),
                values.get("train", {}).get("patience")) for values in runs.values()}
    assert len(budgets) <= 1  # one maximum budget and stopping rule shared by every Table 1 method


def test_tune_settings_run_only_the_named_settings_and_an_unknown_name_is_refused() -> None:
    config = load_benchmark_config("converged", None, ["studies=tune", "tune_settings=temperature=0.25,K=10"], {})
    assert [(spec.model, spec.setting) for spec in plan(config)] == [("goalrank", "temperature=0.25"),
                                                                      ("goalrank", "K=10")]
    every = load_benchmark_config("converged", None, ["studies=tune"], {})
    assert len(plan(every)) == sum(len(settings) for settings in TUNE_SETTINGS.values())
    with pytest.raises(ConfigError, match="tune_settings=\\('temperature=0.3',\\)"):
        plan(load_benchmark_config("converged", None, ["studies=tune", "tune_settings=temperature=0.3"], {}))


def test_methods_keep_only_their_runs_in_every_study() -> None:
    values = ["studies=table1,groupsize,bias,scaling", "group_sizes=3,5", "reward_noises=0.2",
              "scaling_sizes=32x1,64x2", "scaling_generators=3"]
    everything = plan(load_benchmark_config("converged", None, values, {}))
    assert {spec.model for spec in everything if spec.study == "scaling"} == {"goalrank", "dnn", "pier", "mge"}
    chosen = plan(load_benchmark_config("converged", None, [*values, "methods=pier,mge"], {}))
    assert [(spec.study, spec.model, spec.setting) for spec in chosen] == [
        ("table1", "pier", ""), ("table1", "mge", "G-3"), ("table1", "mge", "G-20"), ("table1", "mge", "G-100"),
        ("scaling", "pier", "32x1"), ("scaling", "pier", "64x2"), ("scaling", "mge", "G-3")]
    goalrank = plan(load_benchmark_config("converged", None, [*values, "methods=goalrank"], {}))
    assert [(spec.study, spec.setting) for spec in goalrank if spec.study != "table1"] == [
        ("groupsize", "K=3"), ("groupsize", "K=5"), ("bias", "β=0.2"), ("bias", "β=0.2 fixed"), ("scaling", "32x1"),
        ("scaling", "64x2")]


def test_the_bias_study_runs_each_noise_kind_and_beta_zero_once() -> None:
    def settings(*values: str) -> list[tuple[str, dict[str, Any]]]:
        return [(spec.setting, spec.values["reference"]) for spec in
                plan(load_benchmark_config("converged", None, ["studies=bias", *values], {}))]

    assert settings() == [
        ("β=0.0", {"reward_noise": 0.0, "reward_noise_kind": "fresh"}),  # no noise: Table 1's GoalRank
        ("β=0.2", {"reward_noise": 0.2, "reward_noise_kind": "fresh"}),
        ("β=0.2 fixed", {"reward_noise": 0.2, "reward_noise_kind": "fixed"}),
        ("β=0.5", {"reward_noise": 0.5, "reward_noise_kind": "fresh"}),
        ("β=0.5 fixed", {"reward_noise": 0.5, "reward_noise_kind": "fixed"})]
    assert [setting for setting, _ in settings("bias_kinds=fixed")] == ["β=0.0", "β=0.2 fixed", "β=0.5 fixed"]
    with pytest.raises(ConfigError, match="bias_kinds"):
        settings("bias_kinds=stale")
    # a repeated grid value would be one run read back twice and counted as two seeds
    for repeated in ("bias_kinds=fixed,fixed", "reward_noises=0.2,0.2", "group_sizes=8,8", "scaling_sizes=16x1,16x1"):
        with pytest.raises(ConfigError, match=f"{repeated.partition('=')[0]}=.*expected distinct values"):
            settings(repeated)


def test_merge_values_and_parse_size() -> None:
    merged = merge_values({"ranker": {"train": {"epochs": 1, "lr": 0.1}, "model": {"d_model": 8}}, "seeds": (0, 1)},
                          {"ranker": {"train": {"epochs": "3"}}, "seeds": "4"})
    assert merged == {"ranker": {"train": {"epochs": "3", "lr": 0.1}, "model": {"d_model": 8}}, "seeds": "4"}
    assert parse_size("256x4") == (256, 4)
    for bad in ("256", "x4", "0x2", "axb"):
        with pytest.raises(ConfigError, match="scaling_sizes"):
            parse_size(bad)


def test_a_finished_stage_made_with_another_config_is_refused_not_reused(bench: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "bench"
    shutil.copytree(bench / "data", copy / "data")
    argv = ["benchmark", "--out", str(copy), "--profile", "quick", "--seeds", "0", "--only", "table1",
            *[arg for item in TINY for arg in ("--set", item)]]
    assert main([*argv, "--set", "simulate.logging_policy=popularity"]) == 2
    err = capsys.readouterr().err
    assert "sim-world: made with another config than this run asks for (logging_policy: saved 'production', " \
           "now 'popularity')" in err
    assert main([*argv, "--set", "prepare.candidates=matched"]) == 2
    assert "candidates: saved 'retrieved', now 'matched'" in capsys.readouterr().err


def test_the_kl_to_the_oracle_policy_covers_the_first_kl_requests_of_the_test_split(
        bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = pl.read_csv(bench / "oracle.csv").filter(pl.col("model") == "goalrank")["run"][0]
    ranker, config = load_ranker(_run_dir(bench, run), "cpu")
    dataset = run_dataset(config)
    monkeypatch.setattr(evaluation, "KL_REQUESTS", 3)
    copy = RunFolder(tmp_path / run)
    metrics = evaluation.record_test(copy, ranker, dataset, 2, torch.device("cpu"),  # batches of 2: the third
                                     evaluation.true_reward_of(dataset, 2))    # request's batch is cut
    with np.load(copy.per_list("test")) as lists:
        kl = lists["kl_oracle_t1"]
    assert np.isfinite(kl[:3]).all() and np.isnan(kl[3:]).all() and len(kl) > 3
    assert metrics["kl_oracle_t1"] == pytest.approx(float(kl[:3].mean()))
