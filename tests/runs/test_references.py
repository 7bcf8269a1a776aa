"""A run and a dataset point to what they were made from, by path and SHA-256: a changed input is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.io import read_json, sha256_file, write_json

WORLD = ["--set", "n_users=40", "--set", "n_items=30", "--set", "sessions_per_user=6", "--set", "list_len=3",
         "--set", "time_span=1000"]
PREPARE = ["--set", "kcore=2", "--set", "n_candidates=8", "--set", "history_len=4", "--set", "retriever.epochs=1"]
DNN = ["--model", "dnn", "--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "train.device=cpu",
       "--set", "train.epochs=1"]


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path, Path]:
    world, data, run = tmp_path / "w", tmp_path / "d", tmp_path / "run"
    assert main(["simulate", "--out", str(world), *WORLD]) == 0
    assert main(["prepare", "--source", "simulator", "--input", str(world), "--out", str(data), *PREPARE]) == 0
    assert main(["train", "--data", str(data), "--out", str(run), *DNN]) == 0
    assert main(["evaluate", "--run", str(run), "--beam-width", "4"]) == 0
    return world, data, run


def test_a_world_simulated_again_in_its_folder_is_refused(trained, capsys: pytest.CaptureFixture[str]) -> None:
    world, _, run = trained
    assert main(["simulate", "--out", str(world), "--overwrite", "--set", "seed=1", *WORLD]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--beam-width", "4"]) == 2
    assert "not the simulator world" in capsys.readouterr().err


def test_a_dataset_prepared_again_in_its_folder_is_refused(trained, capsys: pytest.CaptureFixture[str]) -> None:
    world, data, run = trained
    assert main(["prepare", "--source", "simulator", "--input", str(world), "--out", str(data), "--overwrite",
                 *PREPARE, "--set", "seed=1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--beam-width", "4"]) == 2
    assert "not the dataset this run was trained on" in capsys.readouterr().err


@pytest.mark.parametrize("edit", ["config", "manifest"])
def test_an_edited_run_config_or_dataset_manifest_is_refused(trained, edit: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _, data, run = trained
    path = run / "config.json" if edit == "config" else data / "manifest.json"
    values = read_json(path)
    write_json(path, {**values, "data": "/elsewhere"} if edit == "config" else {**values, "n_items": 5})
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--beam-width", "4"]) == 2
    assert f"{path}: checksum mismatch" in capsys.readouterr().err


def test_evaluating_on_a_dataset_of_another_catalogue_is_one_error(trained, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, _, run = trained
    other_world, other = tmp_path / "w2", tmp_path / "d2"
    assert main(["simulate", "--out", str(other_world), *WORLD, "--set", "n_items=40"]) == 0
    assert main(["prepare", "--source", "simulator", "--input", str(other_world), "--out", str(other), *PREPARE]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--data", str(other), "--beam-width", "4"]) == 2
    assert "has n_items=" in capsys.readouterr().err


def test_evaluating_an_unfinished_run_warns(trained, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, run = trained
    (run / "metrics.json").unlink()  # as a run killed after its first checkpoint
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--beam-width", "4"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run}: training has not finished (no metrics.json)" in err


def test_a_reward_run_trained_again_is_refused_by_the_runs_that_use_it(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, reward, pier = tiny_dataset(tmp_path / "data"), tmp_path / "reward", tmp_path / "pier"
    tiny = ["--data", str(data), "--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "train.device=cpu",
            "--set", "train.epochs=1"]
    assert main(["train", "--model", "reward", "--out", str(reward), *tiny, "--set", "model.layers=1"]) == 0
    assert main(["train", "--model", "pier", "--out", str(pier), "--reward", str(reward), *tiny]) == 0
    assert read_json(pier / "config.json")["reward_sha256"] == sha256_file(reward / "checkpoint.pt")
    assert main(["evaluate", "--run", str(pier)]) == 0
    shutil.rmtree(reward)
    assert main(["train", "--model", "reward", "--out", str(reward), *tiny, "--set", "model.layers=1",
                 "--set", "train.seed=1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(pier)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {reward.resolve()}: not the reward model this run was trained with (its checkpoint.pt changed "
        "since: trained again?); train the run again with it")
