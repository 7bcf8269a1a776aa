import re

import polars as pl

from goalrank.cli import main
from goalrank.experiments.plan import REWARD_BEAM, SANITY_ROWS
from goalrank.experiments.report import summary_table

TINY = [
    "--set", "simulate.n_users=60", "--set", "simulate.n_items=60", "--set", "simulate.sessions_per_user=12",
    "--set", "prepare.kcore=5", "--set", "prepare.n_candidates=12", "--set", "prepare.history_len=8",
    "--set", "prepare.retriever.epochs=1",
    "--set", "reward.train.epochs=1", "--set", "reward.model.d_model=16",
    "--set", "ranker.train.epochs=1", "--set", "ranker.model.d_model=16", "--set", "ranker.group.group_size=4",
]


def test_demo_runs_end_to_end_and_resumes_by_skipping_finished_stages(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "0,1", *TINY]) == 0
    report = (out / "report.md").read_text()
    table = report.split("## Table 1 — sim")[1]
    assert "| GoalRank |" in table and "| DNN |" in table and "true_reward" in table
    rows = pl.read_csv(out / "table1.csv")
    trained = rows.filter(pl.col("model") != "reference")
    assert sorted(trained["model"].to_list()) == ["dnn", "dnn", "goalrank", "goalrank"]
    assert sorted(set(rows.filter(pl.col("model") == "reference")["label"])) == sorted([REWARD_BEAM, *SANITY_ROWS])
    assert rows["NDCG@6"].is_between(0, 1).all() and (rows["oracle_ratio"] <= 1 + 1e-6).all()
    capsys.readouterr()
    checkpoints = {path: path.stat().st_mtime_ns for path in out.glob("runs/sim/seed*/*/checkpoint.pt")}
    assert len(checkpoints) == 2 * 3  # reward model, GoalRank and DNN per seed
    assert main(["demo", "--out", str(out), "--seeds", "0,1", *TINY]) == 0
    printed = capsys.readouterr().out
    # simulate, prepare; per seed the reward model, two rankers, the reward model's beam row and the
    # sanity rows, read back from OUT/results
    assert printed.count("[skip]") == 2 + 2 * (1 + 2 + 1 + len(SANITY_ROWS)) and "[run ]" not in printed
    assert {path: path.stat().st_mtime_ns for path in checkpoints} == checkpoints
    strip_time = lambda text: re.sub(r"took \d+ s", "", text)  # noqa: E731
    assert strip_time((out / "report.md").read_text()) == strip_time(report)


def test_demo_rejects_unknown_config_keys(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--set", "nonsense=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_summary_table_shows_the_spread_only_over_several_seeds():
    rows = {"dnn": [{"NDCG@6": 0.5, "AUC": 0.7}, {"NDCG@6": 0.7, "AUC": 0.9}],
            "goalrank": [{"NDCG@6": 0.6, "AUC": 0.8}]}
    lines = summary_table(rows).splitlines()
    assert lines[0] == "| model | seeds | NDCG@6 | AUC |"
    assert lines[2] == "| dnn | 2 | 0.6000 ± 0.1414 | 0.8000 ± 0.1414 |"
    assert lines[3] == "| goalrank | 1 | 0.6000 | 0.8000 |"
