"""Training refuses what it can refuse before any work, and one run folder has one trainer at a time."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.errors import ArtifactError
from goalrank.io import exclusive_lock
from goalrank.runs.folder import RunFolder

DNN = ["--model", "dnn", "--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "train.device=cpu",
       "--set", "train.epochs=1"]


@pytest.mark.parametrize(("overrides", "named"), [
    (["select_metric=bogus"], "select_metric='bogus': expected one of ['H', 'NDCG', 'MAP', 'F1', 'AUC', 'true_rew"),
    (["model.list_len=7"], "model.list_len='7': set by the dataset"),
    (["model.n_items=5"], "model.n_items='5': set by the dataset"),
    (["train.device=cuda:999"], "train.device='cuda:999': expected a CUDA device of this machine"),
    (["model=5"], "model='5': expected a table of values"),
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


def test_absurd_learning_rates_and_world_sizes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_dataset(tmp_path / "data")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *DNN, "--set", "train.lr=1e30"]) == 2
    assert "train.lr=1e+30: expected in (0, 10.0]" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "w"), "--set", "n_users=100000000000"]) == 2
    assert "n_users=100000000000: expected at most 1e+10 interactions in all" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_checkpoint_the_disk_refuses_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def full(*args: object, **kwargs: object) -> None:  # what torch.save raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr("goalrank.runs.checkpoint.torch.save", full)
    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *DNN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {out}/checkpoint.pt: could not write the checkpoint (")


def test_a_full_disk_is_one_error_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp,label\n" + "".join(f"{u},{i},{u * 100 + i},1\n" for u in range(30)
                                                        for i in range(12)))

    def full(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("goalrank.data.prepare.write_prepared", full)
    assert main(["prepare", "--source", "generic", "--input", str(log), "--out", str(tmp_path / "d"),
                 "--set", "kcore=1", "--set", "n_candidates=8", "--set", "history_len=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: [Errno {errno.ENOSPC}] No space left on device: '{tmp_path / 'd'}'"]


def test_a_group_larger_than_the_dataset_allows_fails_before_the_run_folder_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, reward, out = tiny_dataset(tmp_path / "data", n_candidates=4), tmp_path / "reward", tmp_path / "run"
    assert main(["train", "--model", "reward", "--data", str(data), "--out", str(reward), *DNN[2:],
                 "--set", "model.layers=1"]) == 0
    capsys.readouterr()
    goalrank = ["train", "--model", "goalrank", "--data", str(data), "--out", str(out), "--reward", str(reward),
                *DNN[2:]]
    assert main([*goalrank, "--set", "group.group_size=25"]) == 2  # 4 candidates give 4·3·2 = 24 lists of L=3
    assert capsys.readouterr().err.strip() == (
        "error: group.group_size=25: expected at most 24, the number of distinct lists of length 3 from 4 candidates")
    assert main([*goalrank, "--set", "group.group_size=8", "--set", "group.spaced_pool_size=30"]) == 2
    assert "group.spaced_pool_size=30: expected at most 24" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def fails(*args: object, **kwargs: object) -> None:  # a failure once the run folder is open
        raise ArtifactError("the first batch could not be read")

    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr("goalrank.train.run.fit", fails)
        assert main(["train", "--data", str(data), "--out", str(out), *DNN]) == 2
    assert capsys.readouterr().err.strip() == "error: the first batch could not be read"
    assert not out.exists()
    assert main(["train", "--data", str(data), "--out", str(out), *DNN]) == 0  # the rerun is not blocked


def test_a_run_failing_after_a_checkpoint_says_resume_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def full(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr("goalrank.train.run.write_recorded_json", full)  # metrics.json, after training
        assert main(["train", "--data", str(data), "--out", str(out), *DNN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1:] == [f"error: [Errno {errno.ENOSPC}] No space left on device: '{out / 'metrics.json'}'; "
                   f"{out} keeps its last checkpoint: rerun with --resume to continue"]
    assert RunFolder(out).last.is_file() and not RunFolder(out).is_complete
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *DNN]) == 0
    assert RunFolder(out).is_complete
