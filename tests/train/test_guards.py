"""Training refuses what it can refuse before any work, and one run folder has one trainer at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.io import exclusive_lock
from goalrank.runs.folder import RunFolder

DNN = ["--model", "dnn", "--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "train.device=cpu",
       "--set", "train.epochs=1"]


@pytest.mark.parametrize(("overrides", "named"), [
    (["select_metric=bogus"], "select_metric='bogus': expected one of ['H', 'NDCG', 'MAP', 'F1', 'AUC']"),
    (["model.list_len=7"], "model.list_len='7': set by the dataset"),
    (["model.n_items=5"], "model.n_items='5': set by the dataset"),
    (["train.device=cuda:7"], "train.device='cuda:7': expected a CUDA device of this machine"),
    (["train=5"], "train='5': expected a table of its fields"),
    (["train.lr=inf"], "train.lr='inf': expected a finite number"),
])
def test_bad_settings_fail_before_the_run_folder_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        overrides: list[str], named: str) -> None:
    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *DNN,
                 *[arg for item in overrides for arg in ("--set", item)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not out.exists()


def test_a_second_trainer_of_one_run_folder_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    with exclusive_lock(RunFolder(out).lock, "held by this test"):  # as a first `train` in progress holds it
        assert main(["train", "--data", str(data), "--out", str(out), "--resume", *DNN]) == 2
    assert "another goalrank process is training this run" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--data", str(data), "--out", str(out), *DNN]) == 0  # released: the run trains
    assert not RunFolder(out).lock.exists()
