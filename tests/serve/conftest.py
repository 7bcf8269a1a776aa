"""A tiny trained GoalRank run, shared by the serving tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank.cli import main

TINY = ["--set", "train.epochs=1", "--set", "train.device=cpu", "--set", "train.batch_size=32"]


@pytest.fixture(scope="session")
def goalrank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    data = tiny_dataset(root / "data", n_items=30, n_candidates=8, list_len=3, history_len=5)
    reward, run = root / "reward", root / "goalrank"
    assert main(["train", "--model", "reward", "--data", str(data), "--out", str(reward), *TINY,
                 "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.layers=1"]) == 0
    assert main(["train", "--model", "goalrank", "--data", str(data), "--out", str(run), "--reward", str(reward),
                 *TINY, "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "group.group_size=4"]) == 0
    return run
