"""`goalrank bench serve` in-process on the tiny run: the tables and JSON rows hold the measurements asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from goalrank.cli import main
from goalrank.serve.bench import Latency, ratio_table


def test_bench_serve_in_process_report(goalrank_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows_file = tmp_path / "rows.json"
    assert main(["bench", "serve", "--run", str(goalrank_run), "--mge-heads-run", str(goalrank_run),
                 "--mge-generators", f"{goalrank_run},{goalrank_run}", "--no-http", "--requests", "6",
                 "--batch-size", "4", "--json", str(rows_file)]) == 0
    report = capsys.readouterr().out
    rows = json.loads(rows_file.read_text())
    served = {(r["model"], r["path"]): r for r in rows}  # each model's first row per path: the service's path
    assert {key for key in served} == {(m, p) for m in ("goalrank", "mge", "mge-heads")
                                       for p in ("inproc-1", "inproc-batch")}
    assert [served["goalrank", p]["calls"] for p in ("inproc-1", "inproc-batch")] == [6, 2]  # 6 requests, B=4
    assert served["mge", "inproc-1"]["backend"] == "eager"
    for row in rows:
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["rps"] > 0
        assert row["flops"] > 0 and row["peak_flops"] > 0
    # the two-generator MG-E runs GoalRank twice plus the evaluator: more FLOPs than GoalRank alone
    assert served["mge", "inproc-1"]["flops"] > 2 * served["goalrank", "inproc-1"]["flops"]
    assert "| inproc-1 | mge |" in report.split("GoalRank / MG-E")[1]


def test_ratio_table_divides_goalrank_by_mge_on_the_services_path() -> None:
    def latency(model: str, backend: str, values: list[float]) -> Latency:
        return Latency(model, backend, "http-1", 1, np.array(values), 1.0)

    table = ratio_table([latency("goalrank", "onnx", [1.0, 2.0, 9.0]), latency("goalrank", "eager", [50.0]),
                         latency("mge", "eager", [4.0, 8.0, 0.0]), latency("pier", "eager", [1.0])])
    p99 = np.percentile([1.0, 2.0, 9.0], 99) / np.percentile([4.0, 8.0, 0.0], 99)
    assert table.splitlines()[2] == f"| http-1 | mge | 0.50 | {p99:.2f} |"
