"""DDP training under torchrun (gloo, 2 processes) matches one process on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from builders import tiny_dataset
from goalrank import cli
from goalrank.data.storage import RankingBatch
from goalrank.io import exclusive_lock
from goalrank.runs.folder import RunFolder
from goalrank.train.distributed import Distributed, rank_seed

LAST = RunFolder(Path()).last.name

D_MODEL = 8
COMMON = ["--set", f"model.d_model={D_MODEL}", "--set", "model.n_heads=2", "--set", "train.device=cpu",
          "--set", "train.epochs=2", "--set", "train.patience=2", "--set", "train.batch_size=16"]
# Deterministic losses: no dropout, no random negatives, no random cold-start users, so only
# all-reduce rounding may differ.
MODELS = {
    "reward": ["--set", "model.dropout=0", "--set", "negatives=0", "--set", "model.cold_start_rate=0",
               "--set", "model.layers=1"],
    "dnn": [],
}


def _batch(size: int) -> RankingBatch:
    rows = torch.arange(size)
    return RankingBatch(users=rows, history=rows[:, None], history_labels=rows[:, None], candidates=rows[:, None],
                        labels=rows[:, None].float(), exposed=rows[:, None])


@given(size=st.integers(1, 40), world_size=st.integers(1, 5))
def test_shards_partition_the_global_batch_and_weights_recover_its_mean(size: int, world_size: int) -> None:
    """Σ_r w_r · mean(shard_r) / W = mean(global batch): DDP's gradient average is the global one."""
    values = torch.rand(size, dtype=torch.float64)
    shards = [Distributed(rank, world_size).shard(_batch(size)) for rank in range(world_size)]
    kept = [shard.users for shard, weight in shards if weight > 0]
    assert torch.equal(torch.cat(kept), torch.arange(size))
    assert all(len(shard) == 1 for shard, weight in shards if weight == 0)
    combined = sum(weight * values[shard.users].mean() for shard, weight in shards) / world_size
    assert combined.item() == pytest.approx(values.mean().item(), rel=1e-12)


def test_single_process_context_is_the_identity() -> None:
    single = Distributed()
    batch = _batch(5)
    shard, weight = single.shard(batch)
    assert shard is batch and weight == 1.0
    assert single.on_main(lambda: 7) == 7 and single.gather("x") == ["x"]
    assert single.mean({"loss": 2.5}) == {"loss": 2.5}
    assert not single.all_finite(torch.tensor([1.0, float("nan")])) and single.all_finite(torch.tensor(1.0))


def test_rank_zero_keeps_the_single_process_seed_and_other_ranks_differ() -> None:
    seeds = [rank_seed(5, rank) for rank in range(4)]
    assert seeds[0] == 5 and len(set(seeds)) == 4
    assert seeds == [rank_seed(5, rank) for rank in range(4)]


def _comparable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All weights except attention key biases, which no loss can move.

    Softmax is shift-invariant, so a key bias has gradient exactly 0 in exact arithmetic; in float
    it is round-off noise, which Adam rescales into full-size steps. The value half is kept.
    """
    return {name: tensor[D_MODEL:] if name.endswith("attention.key_value.bias") else tensor
            for name, tensor in state.items()}


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_torchrun_two_processes_match_one_process(tmp_path: Path, model: str) -> None:
    """65 training lists in global batches of 16: the last batch has 1 list, so rank 1's shard is empty."""
    data = tiny_dataset(tmp_path / "data", sizes=(65, 16, 16))
    args = ["train", "--model", model, "--data", str(data), *COMMON, *MODELS[model]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "goalrank.cli"]
    done = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "ddp")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run written to") == 1  # rank 0 alone reports
    assert cli.main([*args, "--out", str(tmp_path / "single")]) == 0

    ddp, single = (_comparable(torch.load(tmp_path / run / LAST)["model"]) for run in ("ddp", "single"))
    assert ddp.keys() == single.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=0, msg=name)
    ddp_log, single_log = _records(tmp_path / "ddp"), _records(tmp_path / "single")
    assert [r["epoch"] for r in ddp_log] == [r["epoch"] for r in single_log] == [1, 2]  # one writer
    assert [r["steps"] for r in ddp_log] == [5, 5]
    np.testing.assert_allclose([r["train_loss"] for r in ddp_log], [r["train_loss"] for r in single_log],
                               rtol=0, atol=1e-5)


def test_under_torchrun_a_busy_run_folder_is_one_error_line_on_every_rank(tmp_path: Path) -> None:
    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "goalrank.cli", "train", "--model", "dnn", "--data", str(data), "--out", str(out), *COMMON]
    with exclusive_lock(RunFolder(out).lock, "held by this test"):  # as a first `train` in progress holds it
        done = subprocess.run(torchrun, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {out}: another goalrank process is training this run (lock {RunFolder(out).lock}); "
                      "wait for it to finish"] * 2
    assert "goalrank/train" not in done.stderr  # no rank's traceback (torchrun's own summary names no goalrank frame)
    assert not out.exists()
