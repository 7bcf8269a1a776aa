"""A checkpoint that does not fit its config.json is one ArtifactError that says why, not torch's dump."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.errors import ArtifactError
from goalrank.io import read_recorded_json, write_recorded_json
from goalrank.runs.load import load_run

REWARD = ["--model", "reward", "--set", "train.epochs=1", "--set", "train.device=cpu", "--set", "model.d_model=8",
          "--set", "model.n_heads=2", "--set", "model.layers=1", "--set", "model.user_embedding=false"]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("load")
    data, run = tiny_dataset(root / "data"), root / "reward"
    assert main(["train", "--data", str(data), "--out", str(run), *REWARD]) == 0
    return run


def _as_an_older_version_wrote_it(run: Path, tmp_path: Path, field: str) -> Path:
    """A copy of ``run`` whose config.json lacks ``model.<field>`` (re-recorded, so only the field differs)."""
    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    config = read_recorded_json(copy / "config.json")
    del config["model"][field]
    write_recorded_json(copy / "config.json", config)
    return copy


def test_the_run_loads_as_written(reward_run: Path) -> None:
    model, config = load_run(reward_run)
    assert config["model"]["user_embedding"] is False and model.user_ids is None


def test_a_field_whose_new_default_adds_a_module_is_named(reward_run: Path, tmp_path: Path) -> None:
    old = _as_an_older_version_wrote_it(reward_run, tmp_path, "user_embedding")
    with pytest.raises(ArtifactError) as caught:
        load_run(old)
    message = str(caught.value)
    assert "weights missing from it: user_ids." in message
    assert "lacks model.user_embedding=True" in message and "train it again" in message


def test_a_field_whose_default_changes_a_shape_is_named(reward_run: Path, tmp_path: Path) -> None:
    old = _as_an_older_version_wrote_it(reward_run, tmp_path, "d_model")
    with pytest.raises(ArtifactError, match=r"size mismatch .*lacks model\.d_model=128"):
        load_run(old)
