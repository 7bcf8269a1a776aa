"""`goalrank bench train`: the stage split, the step ratio and MFU from counted FLOPs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.perf import count_flops, matmul_peak_flops
from goalrank.train.bench import StepCost
from goalrank.train.run import train_reward


def test_count_flops_of_a_linear_forward_and_backward_is_six_b_i_o() -> None:
    layer, x = torch.nn.Linear(16, 8, bias=False), torch.randn(4, 16, requires_grad=True)
    assert count_flops(lambda: layer(x).sum().backward()) == 6 * 4 * 16 * 8


def test_mfu_is_flops_over_time_over_peak_and_the_peak_is_measured() -> None:
    assert StepCost(seconds=0.5, flops=10**9).mfu(peak=4e9) == 0.5
    assert matmul_peak_flops(torch.device("cpu"), size=64, repeats=2) > 1e6


def test_bench_train_reports_every_k_with_flops_and_mfu(tmp_path: Path, capsys) -> None:
    data = tiny_dataset(tmp_path / "data")
    train_reward(data, tmp_path / "reward", {"model": {"d_model": 8}, "train": {"epochs": 1, "device": "cpu"}})
    argv = ["bench", "train", "--data", str(data), "--reward", str(tmp_path / "reward"), "--group-sizes", "2,6",
            "--batch-size", "8", "--steps", "1", "--warmup", "0", "--device", "cpu", "--peak-tflops", "0.001",
            "--json", str(tmp_path / "rows.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "peak 0.001 TFLOP/s (given)" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row[0]) for row in rows] == [2, 6]
    gflops = [float(row[6]) for row in rows]
    mfu = [float(row[9].rstrip(" %")) for row in rows]
    assert 0 < gflops[0] < gflops[1] and all(value > 0 for value in mfu)
    written = json.loads((tmp_path / "rows.json").read_text())
    assert [row["K"] for row in written] == [0, 2, 6] and written[0]["ratio"] == 1.0
    for row, table_row in zip(written[1:], rows):
        assert f"{row['step_ms']:.1f}" == table_row[4].strip() and f"{row['ratio']:.2f}×" == table_row[5].strip()
        assert f"{100 * row['mfu']:.2f} %" == table_row[9].strip()
        # the stages' FLOPs add up to the step's; without group construction the rest over the supervised step's
        assert row["group_flops"] + row["reward_flops"] + row["loss_flops"] == row["flops"]
        assert row["group_flops"] > 0 and row["reward_flops"] > 0 and row["loss_flops"] > 0
        assert table_row[7].strip() == " / ".join(f"{row[key] / 1e9:.1f}" for key in
                                                  ("group_flops", "reward_flops", "loss_flops"))
        floor = (row["reward_flops"] + row["loss_flops"]) / written[0]["flops"]
        assert table_row[8].strip() == f"{floor:.2f}×" and 1 < floor < row["flops"] / written[0]["flops"]
