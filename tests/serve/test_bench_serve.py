"""`goalrank bench serve` in-process on the tiny run: the tables hold the measurements asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from goalrank.cli import main
from goalrank.serve.bench import Latency, ratio_table


def test_bench_serve_in_process_report(goalrank_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "serve", "--run", str(goalrank_run), "--mge-run", str(goalrank_run), "--no-http",
                 "--requests", "6", "--batch-size", "4"]) == 0
    report = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| GoalRank |")]
    assert [(r[1].strip(), r[2].strip(), r[3].strip(), r[4].strip()) for r in rows] == [
        ("in-process", "single", "1", "6"), ("in-process", "batched", "4", "2")]  # 6 requests in batches of 4
    assert "| in-process | single |" in report.split("GoalRank / MG-E")[1]
    assert "FLOPs per request" in report


def test_ratio_table_divides_goalrank_by_mge_median() -> None:
    def latency(model: str, values: list[float]) -> Latency:
        return Latency(model, "http", "single", 1, torch.tensor(values).numpy(), 1.0)

    table = ratio_table([latency("GoalRank", [1.0, 2.0, 9.0]), latency("MG-E", [4.0, 8.0, 0.0]),
                         latency("PIER", [1.0])])
    assert table.splitlines()[2] == "| http | single | 0.50 |"

