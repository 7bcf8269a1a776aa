"""Checkpoint files: written atomically with their SHA-256 beside them, verified before every load.

Below ``train`` so that the service and the evaluation load a run's weights without importing the
training code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from goalrank.errors import ArtifactError
from goalrank.io import read_sha256sums, sha256_file, write_sha256sums


def checksum_path(path: Path) -> Path:
    """The file beside checkpoint ``path`` that records its SHA-256 (``checkpoint.pt.sha256``)."""
    return path.with_name(f"{path.name}.sha256")


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through a temporary file and rename, with the file's SHA-256 recorded beside it.

    The rename means a crash never leaves a half-written ``path``; the checksum, one
    ``sha256sum`` line (``sha256sum -c`` checks it in the run folder), catches what a rename
    cannot: a file truncated or altered afterwards (a full disk on copy, bit rot, a power loss
    before the data reached the disk). Checkpoint and record cannot be replaced in one step, so
    while the rename is in flight the record lists both the new and the previous digest: a
    process killed at any moment leaves a checkpoint that still verifies.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        try:
            torch.save(payload, tmp)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
            raise ArtifactError(f"{path}: could not write the checkpoint ({str(exc).splitlines()[0]})") from exc
        digest = sha256_file(tmp)
        _write_digests(path, [digest, *(d for d in _recorded_digests(path) if d != digest)])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _write_digests(path, [digest])


def verify_checkpoint(path: Path) -> None:
    """Raise ArtifactError naming ``path`` unless its SHA-256 is one ``save_checkpoint`` recorded."""
    record = checksum_path(path)
    if not record.is_file():
        raise ArtifactError(f"{record}: checksum file not found, so {path.name} cannot be verified "
                            "(written by an older goalrank?); retrain the run")
    digests = _recorded_digests(path)
    if not digests:
        raise ArtifactError(f"{record}: expected lines '<64 hex digits>  {path.name}'")
    actual = sha256_file(path)
    if actual not in digests:
        raise ArtifactError(f"{path}: unreadable checkpoint (SHA-256 {actual[:12]}... differs from the "
                            f"{digests[0][:12]}... recorded in {record.name}: the file is truncated or corrupted)")


def _recorded_digests(path: Path) -> list[str]:
    """The digests recorded for checkpoint ``path``: one, or two while a save was in flight."""
    return [digest for digest, _ in read_sha256sums(checksum_path(path))]


def _write_digests(path: Path, digests: list[str]) -> None:
    write_sha256sums(checksum_path(path), [(digest, path.name) for digest in digests])


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Verify a checkpoint's checksum, then load it; any failure is an ArtifactError naming the file."""
    verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: unreadable checkpoint ({exc})") from exc
