"""Atomic artefact writing and checksums.

Every artefact (prepared dataset, simulator world, run folder) is built in a temporary sibling
folder and renamed into place only when complete, so a crash or a bad input never leaves a
half-written folder that a later stage could mistake for a good one.

Result files that later stages read back (a run's ``metrics.json`` and ``eval-*.json``, a
benchmark's per-list metrics, CSVs, report and plots) are written atomically and recorded in
their folder's ``SHA256SUMS`` (``sha256sum`` format, so ``sha256sum -c SHA256SUMS`` checks a
folder by hand); ``read_recorded_json`` verifies before it parses, so a file truncated or edited
after it was written is named instead of silently feeding a report.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goalrank.errors import ArtifactError

SUMS = "SHA256SUMS"


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so that large logs need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def check_target(target: Path, overwrite: bool, marker: str = "manifest.json") -> None:
    """Raise ArtifactError unless ``target`` may be written: absent, or (with ``overwrite``) empty or
    a folder goalrank wrote — its ``marker`` a JSON manifest with a ``format_version`` — and its
    parent a folder. Called before any work is done, and again under the lock before writing."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise ArtifactError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"{target}: is a file, not a folder; choose another output path")
    if target.is_dir() and any(target.iterdir()) and not _is_manifest(target / marker):
        raise ArtifactError(f"{target}: has no goalrank {marker}, so goalrank did not write it; refusing to replace "
                            "it with --overwrite (remove it yourself or choose another output path)")
    if target.parent.exists() and not target.parent.is_dir():
        raise ArtifactError(f"{target.parent}: is a file, not a folder; choose another output path")


def _is_manifest(path: Path) -> bool:
    try:
        return path.is_file() and "format_version" in json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError):
        return False


def target_lock(target: Path) -> contextlib.AbstractContextManager[None]:
    """The exclusive lock of writing folder ``target``: ``.<name>.lock`` beside it (``exclusive_lock``).

    ``atomic_dir`` takes it; a command whose work before writing is long (``prepare``) takes it
    first, so that a second writer of the same folder fails at its start, not after all its work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(target.parent.resolve() / f".{target.name}.lock",
                          f"{target} is being written by another process")


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = False, marker: str = "manifest.json",
               locked: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it to ``target`` if the block succeeds.

    On any exception the temporary folder is removed and ``target`` is left untouched. While the
    block runs, ``target_lock(target)`` is held (``locked``: the caller holds it already, from
    before its own work), so a second writer of the same folder fails instead of racing; holding
    it, temporary folders that an earlier, killed writer left (``.<name>.tmp-<8 hex>``) are
    removed. ``overwrite`` replaces only a folder that goalrank wrote or an empty one
    (``check_target``): never a folder of other files.
    """
    target = Path(target)
    check_target(target, overwrite, marker)
    with contextlib.nullcontext() if locked else target_lock(target):
        check_target(target, overwrite, marker)  # again: another writer may have finished meanwhile
        stale = re.compile(rf"\.{re.escape(target.name)}\.tmp-[0-9a-f]{{8}}")
        for path in target.parent.iterdir():
            if stale.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on file ``path`` for the block; ArtifactError ``busy`` if held.

    ``flock`` locks die with their process, so a killed writer never leaves a stale lock. The file
    is removed on release (while still locked); a process that locked a file just removed that
    way sees that ``path`` no longer names it and tries again, so two holders cannot coexist.
    """
    while True:
        handle = open(path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise ArtifactError(f"{busy} (lock {path}); wait for it to finish") from exc
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # locked a file its holder had just removed: take the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; rename it to ``path`` if the block succeeds.

    The rename replaces ``path`` in one step; if writing fails, ``path`` keeps its old content
    and the temporary file is removed. The temporary name keeps ``path``'s suffix, for writers
    that infer the format from it (matplotlib, numpy).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through ``atomic_file``, so readers never see a partial file."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def record_checksum(path: Path) -> None:
    """Record ``path``'s SHA-256 in its folder's ``SHA256SUMS``, replacing an older line for it.

    Read-modify-rename of the record, safe against crashes; the folder itself is ``flock``-ed
    meanwhile (waiting, not failing), so two processes recording results in one folder at once
    (two ``evaluate`` of one run) cannot lose each other's lines.
    """
    path = Path(path)
    recorded = sha256_file(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        digests = {**_recorded(path.parent), path.name: recorded}
        write_sha256sums(path.parent / SUMS, [(digest, name) for name, digest in sorted(digests.items())])
    finally:
        os.close(folder)  # releases the flock


def verify_checksum(path: Path) -> None:
    """Raise ArtifactError naming ``path`` unless it matches its line in the folder's ``SHA256SUMS``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    expected = _recorded(path.parent).get(path.name)
    if expected is None:
        raise ArtifactError(f"{path}: no checksum recorded in {SUMS} (written by an older goalrank or by"
                            " hand?); re-create it with the command that wrote it")
    if sha256_file(path) != expected:
        raise ArtifactError(f"{path}: checksum mismatch with {SUMS} (file truncated or corrupted);"
                            " re-create it with the command that wrote it")


def _recorded(folder: Path) -> dict[str, str]:
    """File name → SHA-256 from ``folder/SHA256SUMS`` (empty when there is none)."""
    return {name: digest for digest, name in read_sha256sums(folder / SUMS)}


def read_sha256sums(record: Path) -> list[tuple[str, str]]:
    """(digest, file name) of each well-formed ``sha256sum`` line of ``record``; [] when it is missing."""
    if not record.is_file():
        return []
    lines = record.read_bytes().decode("utf-8", errors="replace").splitlines()
    return [(match[1], match[2]) for line in lines if (match := re.fullmatch(r"([0-9a-f]{64})  (.+)", line))]


def write_sha256sums(record: Path, entries: list[tuple[str, str]]) -> None:
    """Write (digest, file name) pairs as ``sha256sum`` lines, atomically."""
    write_text_atomic(record, "".join(f"{digest}  {name}\n" for digest, name in entries))


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (``write_text_atomic``), so readers never see a partial file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_rows_json(path: Path, rows: Any) -> None:
    """Write a command's ``--json`` rows atomically, keys in the order given and strict JSON (a NaN
    is an error, not a token other tools cannot read)."""
    write_text_atomic(Path(path), json.dumps(rows, indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    """Read JSON, turning a missing or corrupt file into an ArtifactError that names it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def write_recorded_text(path: Path, text: str) -> None:
    """``write_text_atomic``, then ``record_checksum``: a result file that later stages read back."""
    write_text_atomic(path, text)
    record_checksum(path)


def write_recorded_json(path: Path, payload: Any) -> None:
    """``write_json``, then ``record_checksum``: a result file that later stages read back."""
    write_json(path, payload)
    record_checksum(path)


def read_recorded_json(path: Path) -> Any:
    """``verify_checksum``, then ``read_json``: read a result file only if it is what was written."""
    verify_checksum(path)
    return read_json(path)


@dataclass(frozen=True)
class Folder:
    """A folder on disk whose subclass is the one owner of its file names (run, dataset, benchmark)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
