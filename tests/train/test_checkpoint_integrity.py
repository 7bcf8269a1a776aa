"""Checksummed checkpoints: a truncated, corrupted or unverifiable checkpoint is an ArtifactError naming it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.errors import ArtifactError
from goalrank.io import read_json
from goalrank.runs import checkpoint
from goalrank.runs.checkpoint import checksum_path, load_checkpoint, save_checkpoint
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import load_run
from goalrank.train.run import train_ranker

CHECKPOINT, LAST = RunFolder(Path()).checkpoint.name, RunFolder(Path()).last.name

DNN_VALUES = {"model": {"d_model": 8, "n_heads": 2},
              "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "checkpoint_every": 2}}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    data = tiny_dataset(root / "data")
    train_ranker("dnn", data, root / "run", DNN_VALUES)
    return root / "run"


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run, free to corrupt."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _flip_byte_inside_a_tensor(path: Path) -> tuple[str, torch.Tensor]:
    """Flip one byte of a stored weight tensor; return its name and its original value."""
    state = torch.load(path, weights_only=True)["model"]
    name = max(state, key=lambda key: state[key].numel())
    content = bytearray(path.read_bytes())
    offset = content.find(state[name].numpy().tobytes())
    assert offset >= 0, f"{name}'s bytes not found in {path}"
    content[offset + 1] ^= 0xFF
    path.write_bytes(bytes(content))
    return name, state[name]


def test_every_checkpoint_has_a_sha256sum_line_beside_it(trained_run: Path) -> None:
    for name in (CHECKPOINT, LAST):
        path = trained_run / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert checksum_path(path).read_text() == f"{digest}  {name}\n"
    assert not list(trained_run.glob(".*")), "a temporary file was left behind"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    payload = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 4}
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]


def test_truncated_checkpoint_is_an_artifact_error_naming_it(run: Path) -> None:
    path = run / CHECKPOINT
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match=rf"^{path}: unreadable checkpoint \(SHA-256 .* truncated or corrupted"):
        load_run(run)


def test_flipped_byte_loads_silently_in_torch_but_is_an_artifact_error_here(run: Path) -> None:
    path = run / CHECKPOINT
    name, original = _flip_byte_inside_a_tensor(path)
    assert not torch.equal(torch.load(path, weights_only=True)["model"][name], original)  # torch alone: no error
    with pytest.raises(ArtifactError, match=rf"^{path}: unreadable checkpoint \(SHA-256"):
        load_run(run)


def test_corrupted_last_checkpoint_stops_resume(run: Path) -> None:
    path = run / LAST
    _flip_byte_inside_a_tensor(path)
    with pytest.raises(ArtifactError, match=rf"^{path}: unreadable checkpoint \(SHA-256"):
        train_ranker("dnn", read_json(run / "config.json")["data"], run, DNN_VALUES, resume=True)


def test_cli_reports_a_corrupted_checkpoint_in_one_line(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / CHECKPOINT
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: unreadable checkpoint") and err.count("\n") == 1


def test_missing_or_malformed_checksum_file_is_an_artifact_error_naming_it(run: Path) -> None:
    record = checksum_path(run / CHECKPOINT)
    record.write_text("not a digest\n")
    with pytest.raises(ArtifactError, match=rf"^{record}: expected lines '<64 hex digits>  checkpoint.pt'"):
        load_run(run)
    record.unlink()
    with pytest.raises(ArtifactError, match=rf"^{record}: checksum file not found"):
        load_run(run)


class _Killed(BaseException):
    """Stands in for SIGKILL at an exact point of ``save_checkpoint``."""


@pytest.mark.parametrize("killed_at", ["rename", "final record"])
def test_a_save_killed_midway_leaves_a_checkpoint_that_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 killed_at: str) -> None:
    """Killed before the rename the old checkpoint stays; after it, the new one; both must load."""
    path = tmp_path / LAST
    old, new = {"step": torch.tensor(1)}, {"step": torch.tensor(2)}
    save_checkpoint(path, old)
    real_replace, real_write = checkpoint.os.replace, checkpoint.write_sha256sums
    writes = []

    def replace(src: Path, dst: Path) -> None:
        if killed_at == "rename" and Path(dst) == path:
            raise _Killed
        real_replace(src, dst)

    def write(target: Path, entries: list[tuple[str, str]]) -> None:
        writes.append(entries)
        if killed_at == "final record" and len(writes) == 2:
            raise _Killed
        real_write(target, entries)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(checkpoint, "write_sha256sums", write)
    with pytest.raises(_Killed):
        save_checkpoint(path, new)
    monkeypatch.undo()
    assert len(checksum_path(path).read_text().splitlines()) == 2  # new and previous digest, pending
    expected = old if killed_at == "rename" else new
    assert torch.equal(load_checkpoint(path)["step"], expected["step"])
    save_checkpoint(path, new)
    assert len(checksum_path(path).read_text().splitlines()) == 1
