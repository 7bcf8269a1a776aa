"""Checkpoint and resume: a killed run continued with --resume ends with an uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import tiny_dataset
from goalrank.errors import ArtifactError, ConfigError
from goalrank.runs.folder import RunFolder
from goalrank.train import run as run_module
from goalrank.train.run import train_reward
from goalrank.train.runtime import RunLog, TrainConfig, capture_rng, restore_rng

CHECKPOINT, LAST = RunFolder(Path()).checkpoint.name, RunFolder(Path()).last.name

DNN_ARGS = ["--model", "dnn", "--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "train.device=cpu",
            "--set", "train.epochs=3", "--set", "train.patience=3", "--set", "train.batch_size=8",
            "--set", "train.checkpoint_every=5"]
REWARD_VALUES = {"model": {"d_model": 8, "n_heads": 2, "layers": 1, "history_layers": 1, "dropout": 0.1},
                 "negatives": 0.5,
                 "train": {"epochs": 3, "patience": 3, "batch_size": 8, "checkpoint_every": 3, "device": "cpu"}}


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "goalrank.cli", "train", "--data", str(data), "--out", str(out), *DNN_ARGS, *extra]


def _env() -> dict[str, str]:
    """One intra-op thread, as in this suite: float reductions then run in one fixed order."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _assert_same_weights(a: Path, b: Path) -> None:
    """Every tensor of the two checkpoints is bit-for-bit equal."""
    first, second = torch.load(a)["model"], torch.load(b)["model"]
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{a.name}: {name} differs"


def _log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _epoch_records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "valid_s")}
            for r in _log_records(run_dir) if "event" not in r]


def _events(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in _log_records(run_dir) if "event" in r]


def test_run_killed_by_sigkill_and_resumed_matches_uninterrupted_run(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", sizes=(128, 16, 16))
    subprocess.run(_cli(data, tmp_path / "straight"), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli(data, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ((killed / LAST).is_file() and (killed / "log.jsonl").is_file()
               and '"epoch": 1' in (killed / "log.jsonl").read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before SIGKILL; nothing was resumed"

    subprocess.run(_cli(data, killed, "--resume"), check=True, env=_env(), capture_output=True)
    for name in (LAST, CHECKPOINT):
        _assert_same_weights(tmp_path / "straight" / name, killed / name)
    assert _epoch_records(killed) == _epoch_records(tmp_path / "straight")


class _Killed(Exception):
    """Stands in for a kill at an exact batch."""


def test_resume_mid_epoch_restores_objective_generator_and_dropout_streams(tmp_path: Path, monkeypatch) -> None:
    """Killed at batch 5 of epoch 2 (last.pt from batch 3): random negatives and dropout must replay."""
    data = tiny_dataset(tmp_path / "data", sizes=(64, 16, 16))
    train_reward(data, tmp_path / "straight", REWARD_VALUES)

    calls = {"n": 0}
    objective_cls = run_module.RewardObjective

    class KilledObjective(objective_cls):
        def __call__(self, batch):
            calls["n"] += 1
            if calls["n"] == 8 + 5:  # 64 lists / batch 8 = 8 batches per epoch
                raise _Killed
            return super().__call__(batch)

    monkeypatch.setattr(run_module, "RewardObjective", KilledObjective)
    with pytest.raises(_Killed):
        train_reward(data, tmp_path / "resumed", REWARD_VALUES)
    saved = torch.load(tmp_path / "resumed" / LAST)["state"]
    assert (saved["epoch"], saved["position"]) == (1, 3)

    monkeypatch.setattr(run_module, "RewardObjective", objective_cls)
    metrics = train_reward(data, tmp_path / "resumed", REWARD_VALUES, resume=True)
    assert _events(tmp_path / "resumed") == [{"event": "resumed", "epoch": 2, "position": 3}]
    for name in (LAST, CHECKPOINT):
        _assert_same_weights(tmp_path / "straight" / name, tmp_path / "resumed" / name)
    assert _epoch_records(tmp_path / "resumed") == _epoch_records(tmp_path / "straight")
    assert metrics == json.loads((tmp_path / "straight" / "metrics.json").read_text())


def test_a_resume_with_nothing_to_resume_from_logs_no_resumed_event(tmp_path: Path) -> None:
    """The learning curve reads a ``resumed`` event as another process's wall time starting."""
    data = tiny_dataset(tmp_path / "data")
    values = {**REWARD_VALUES, "train": {**REWARD_VALUES["train"], "epochs": 1}}
    train_reward(data, tmp_path / "run", values, resume=True)
    assert _events(tmp_path / "run") == []
    assert _epoch_records(tmp_path / "run")  # the epoch was logged


def test_truncated_last_checkpoint_is_an_artifact_error_naming_it(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    values = {**REWARD_VALUES, "train": {**REWARD_VALUES["train"], "epochs": 1}}
    train_reward(data, tmp_path / "run", values)
    last = tmp_path / "run" / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=rf"{last}: unreadable checkpoint"):
        train_reward(data, tmp_path / "run", values, resume=True)


def test_resume_refuses_a_different_config_and_plain_rerun_refuses_the_folder(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    values = {**REWARD_VALUES, "train": {**REWARD_VALUES["train"], "epochs": 1}}
    train_reward(data, tmp_path / "run", values)
    changed = {**values, "train": {**values["train"], "lr": 0.01}}
    with pytest.raises(ConfigError, match=r"config.json: --resume .*train\.lr: saved 0\.001, now 0\.01"):
        train_reward(data, tmp_path / "run", changed, resume=True)
    with pytest.raises(ArtifactError, match=r"not empty; choose another --out or pass --resume"):
        train_reward(data, tmp_path / "run", values)


def test_resume_without_last_checkpoint_starts_over_in_the_folder(tmp_path: Path) -> None:
    """Killed before the first checkpoint: --resume trains from scratch and drops the stale log."""
    data = tiny_dataset(tmp_path / "data")
    values = {**REWARD_VALUES, "train": {**REWARD_VALUES["train"], "epochs": 1}}
    train_reward(data, tmp_path / "straight", values)
    RunFolder(tmp_path / "run").open(json.loads((tmp_path / "straight" / "config.json").read_text()))
    (tmp_path / "run" / "log.jsonl").write_text('{"epoch": 7}\n')
    train_reward(data, tmp_path / "run", values, resume=True)
    _assert_same_weights(tmp_path / "straight" / LAST, tmp_path / "run" / LAST)
    assert _epoch_records(tmp_path / "run") == _epoch_records(tmp_path / "straight")


def test_restored_rng_streams_draw_the_same_numbers() -> None:
    generator = torch.Generator().manual_seed(3)
    state = capture_rng(generator, torch.device("cpu"))
    first = (torch.rand(3), torch.rand(3, generator=generator), np.random.rand(2), random.random())
    restore_rng(state, generator, torch.device("cpu"))
    second = (torch.rand(3), torch.rand(3, generator=generator), np.random.rand(2), random.random())
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert list(first[2]) == list(second[2]) and first[3] == second[3]


def test_run_log_truncate_drops_records_after_the_saved_size(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "log.jsonl")
    log.write(epoch=1)
    size = log.size()
    log.write(epoch=2)
    log.truncate(size)
    assert [json.loads(line)["epoch"] for line in log.path.read_text().splitlines()] == [1]
    silent = RunLog(tmp_path / "other" / "log.jsonl", enabled=False)
    silent.write(epoch=1)
    assert silent.size() == 0 and not silent.path.exists()


def test_checkpoint_every_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every=-1"):
        TrainConfig(checkpoint_every=-1)
