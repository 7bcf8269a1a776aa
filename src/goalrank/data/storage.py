"""The prepared-dataset folder: the one contract between data preparation and every model.

Layout of a prepared dataset ``DIR``::

    DIR/manifest.json           config, source checksums, seed, statistics, array checksums
    DIR/user_raw_ids.npy        (U,)   raw user id of each user index
    DIR/item_raw_ids.npy        (I+1,) raw item id of each item index; index 0 is padding (-1)
    DIR/<split>/<array>.npy     one folder per split in SPLITS, arrays in ARRAYS

Per split, sample ``s`` is one exposed list of ``L`` items shown to user ``users[s]``:

    users           (S,)    int64  user index in [0, U)
    timestamps      (S,)    int64  time of the list's first interaction
    history         (S, H)  int32  item indices of the user's last H interactions strictly before
                                   the list, oldest first, left-padded with 0
    history_labels  (S, H)  int8   their binary labels (0 on padding)
    candidates      (S, N)  int32  item indices of the N candidates, in a random order per sample
    labels          (S, N)  int8   1 where the candidate was exposed in this list and positive
    exposed         (S, L)  int16  positions into ``candidates`` of the exposed list, in logged order

Item indices start at 1 so that 0 can pad histories. Arrays are plain ``.npy`` files opened
memory-mapped, so a dataset larger than memory is read lazily batch by batch, and they are
written chunk by chunk (``write_prepared``), so preparing one never holds all samples in memory.
Item arrays are int32 and positions int16 (the 100M-interaction Industry-shaped dataset is 8.3 GB
on disk instead of ~16 GB in int64); batches are widened to int64. Format 1 (all int64) is still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch

from goalrank.errors import ArtifactError, DataError
from goalrank.io import (
    SUMS,
    atomic_dir,
    read_json,
    read_recorded_json,
    read_sha256sums,
    sha256_file,
    write_recorded_json,
)

SplitName = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = typing.get_args(SplitName)
ARRAYS: dict[str, type[np.signedinteger[Any]]] = {
    "users": np.int64,
    "timestamps": np.int64,
    "history": np.int32,
    "history_labels": np.int8,
    "candidates": np.int32,
    "labels": np.int8,
    "exposed": np.int16,
}
MANIFEST = "manifest.json"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 only differs in wider integer dtypes


@dataclass
class RankingBatch:
    """A batch of ranking requests as tensors; what every ranker, reward model and policy takes.

    Shapes: users (B,), history (B, H), history_labels (B, H), candidates (B, N),
    labels (B, N) float, exposed (B, L) positions into candidates.
    """

    users: torch.Tensor
    history: torch.Tensor
    history_labels: torch.Tensor
    candidates: torch.Tensor
    labels: torch.Tensor
    exposed: torch.Tensor

    def to(self, device: torch.device | str) -> RankingBatch:
        return RankingBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return self.users.shape[0]

    def select(self, index: torch.Tensor | slice) -> RankingBatch:
        """Rows ``index`` of every tensor (a sub-batch)."""
        return RankingBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class Split:
    """The arrays of one split, memory-mapped; ``len`` is the number of lists."""

    name: str
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.arrays["users"].shape[0]

    def spread(self, size: int) -> Split:
        """``size`` evenly spaced lists (all of them if fewer): a cheap sample across users and time,
        which are the storage order."""
        if size >= len(self):
            return self
        index = np.linspace(0, len(self) - 1, size).round().astype(np.int64)
        arrays = {key: np.asarray(array[index]) for key, array in self.arrays.items()}
        return Split(f"{self.name}[{size} spread]", arrays)

    def batch(self, index: np.ndarray | slice) -> RankingBatch:
        """Copy rows ``index`` into a RankingBatch on the CPU (labels as float for losses)."""
        tensors = {
            key: torch.from_numpy(np.array(self.arrays[key][index], dtype=np.int64))
            for key in ARRAYS if key != "timestamps"
        }
        tensors["labels"] = tensors["labels"].float()
        return RankingBatch(**tensors)

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, start: int = 0
    ) -> Iterator[RankingBatch]:
        """Iterate over the split in batches; a shuffled order is a pure function of ``seed``.

        ``start`` skips the first ``start`` batches of that order (used to resume mid-epoch).
        """
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        for lo in range(start * batch_size, n, batch_size):
            index = np.sort(order[lo : lo + batch_size]) if shuffle else slice(lo, lo + batch_size)
            yield self.batch(index)


class PreparedDataset:
    """A prepared-dataset folder opened for reading; validates layout and checksums on open."""

    @staticmethod
    def manifest_path(root: Path | str) -> Path:
        """The manifest of a prepared-dataset folder, written last: its presence marks a complete folder."""
        return Path(root) / MANIFEST

    def __init__(self, root: Path | str, verify: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: prepared dataset folder not found")
        self.manifest: dict[str, Any] = (read_recorded_json if verify and _has_record(self.root) else read_json)(
            self.root / MANIFEST)  # datasets older than the manifest's checksum record are read as they are
        if self.manifest.get("format_version") not in READABLE_VERSIONS:
            raise ArtifactError(
                f"{self.root / MANIFEST}: format_version {self.manifest.get('format_version')!r},"
                f" expected one of {list(READABLE_VERSIONS)}"
            )
        if verify:
            self._verify()
        self.user_raw_ids = self._load("user_raw_ids.npy")
        self.item_raw_ids = self._load("item_raw_ids.npy")

    @property
    def n_users(self) -> int:
        return int(self.manifest["n_users"])

    @property
    def n_items(self) -> int:
        """Number of real items; item indices run from 1 to n_items."""
        return int(self.manifest["n_items"])

    @property
    def list_len(self) -> int:
        return int(self.manifest["list_len"])

    @property
    def n_candidates(self) -> int:
        return int(self.manifest["n_candidates"])

    @property
    def history_len(self) -> int:
        return int(self.manifest["history_len"])

    @property
    def simulator_world(self) -> str | None:
        """The `goalrank simulate` folder this dataset was prepared from (``prepare`` records it);
        None for a real log. What makes a dataset simulator data to every stage."""
        world = self.manifest.get("simulator")
        return str(world) if world else None

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"split {name!r}: expected one of {list(SPLITS)}")
        return Split(name, {key: self._load(f"{name}/{key}.npy") for key in ARRAYS})

    def _load(self, relative: str) -> np.ndarray:
        path = self.root / relative
        if not path.is_file():
            raise ArtifactError(f"{path}: missing from prepared dataset")
        try:
            return np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise ArtifactError(f"{path}: unreadable array ({exc})") from exc

    def _verify(self) -> None:
        for relative, expected in self.manifest.get("checksums", {}).items():
            path = self.root / relative
            if not path.is_file():
                raise ArtifactError(f"{path}: missing from prepared dataset")
            if sha256_file(path) != expected:
                raise ArtifactError(f"{path}: checksum mismatch (file truncated or corrupted)")


@dataclass(frozen=True)
class SplitSource:
    """One split to write: its number of lists and its arrays (ARRAYS keys) in consecutive row chunks."""

    size: int
    chunks: Iterable[dict[str, np.ndarray]]


def write_prepared(
    root: Path | str,
    splits: dict[str, SplitSource],
    user_raw_ids: np.ndarray,
    item_raw_ids: np.ndarray,
    manifest: dict[str, Any],
    overwrite: bool = False,
    locked: bool = False,
) -> Path:
    """Write a prepared dataset atomically, streaming each split chunk by chunk.

    ``manifest`` must hold n_users, n_items, list_len, n_candidates, history_len (and whatever
    provenance the caller records: config, source checksums, seed, stats); it gets the format
    version and the SHA-256 of every array, computed while writing (no second pass over the data).
    ``locked``: the caller holds the folder's ``target_lock`` (see ``atomic_dir``).
    """
    for key in ("n_users", "n_items", "list_len", "n_candidates", "history_len"):
        if key not in manifest:
            raise ValueError(f"manifest lacks {key!r}")
    if sorted(splits) != sorted(SPLITS):
        raise ValueError(f"splits {sorted(splits)}: expected {sorted(SPLITS)}")
    if int(manifest["n_items"]) > np.iinfo(ARRAYS["candidates"]).max:
        raise DataError(f"{manifest['n_items']:,} items do not fit the int32 item arrays")
    root = Path(root)
    checksums = {}
    with atomic_dir(root, overwrite=overwrite, locked=locked) as tmp:
        for name, raw in (("user_raw_ids.npy", user_raw_ids), ("item_raw_ids.npy", item_raw_ids)):
            raw = np.asarray(raw, dtype=np.int64)
            with _NpyWriter(tmp / name, raw.dtype, raw.shape) as writer:
                writer.append(raw)
            checksums[name] = writer.sha256
        for name, source in splits.items():
            (tmp / name).mkdir()
            checksums.update(_write_split(tmp, name, source, manifest))
        write_recorded_json(tmp / MANIFEST, {**manifest, "format_version": FORMAT_VERSION,
                                             "checksums": dict(sorted(checksums.items()))})
    return root


def _write_split(tmp: Path, name: str, source: SplitSource, manifest: dict[str, Any]) -> dict[str, str]:
    """Stream one split's chunks into its ARRAYS files; their checksums by relative path."""
    widths = {"history": (manifest["history_len"],), "history_labels": (manifest["history_len"],),
              "candidates": (manifest["n_candidates"],), "labels": (manifest["n_candidates"],),
              "exposed": (manifest["list_len"],)}
    with contextlib.ExitStack() as stack:
        writers = {key: stack.enter_context(_NpyWriter(tmp / name / f"{key}.npy", np.dtype(dtype),
                                                       (source.size, *widths.get(key, ()))))
                   for key, dtype in ARRAYS.items()}
        for chunk in source.chunks:
            for key, writer in writers.items():
                writer.append(chunk[key])
    return {f"{name}/{key}.npy": writer.sha256 for key, writer in writers.items()}


class _NpyWriter:
    """Appends row chunks to a ``.npy`` file whose shape is known up front, hashing as it goes.

    Plain buffered writes rather than a writable memmap: dirty pages of a mapping count as the
    process's resident memory until the kernel flushes them, so a 9 GB dataset would look (and,
    under pressure, behave) like 9 GB of RAM.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, dtype, shape
        self.rows = 0
        self._digest = hashlib.sha256()
        self._handle: BinaryIO = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(_HashingWriter(self._handle, self._digest), header)

    def append(self, chunk: np.ndarray) -> None:
        if chunk.shape[1:] != self.shape[1:] or self.rows + chunk.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path.name}: chunk of shape {chunk.shape} does not fit {self.shape}"
                             f" after {self.rows} rows")
        if chunk.size and np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            if chunk.min() < info.min or chunk.max() > info.max:
                raise DataError(f"{self.path.name}: values outside the range of {self.dtype}")
        data = np.ascontiguousarray(chunk, dtype=self.dtype).tobytes()
        self._digest.update(data)
        self._handle.write(data)
        self.rows += chunk.shape[0]

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self._handle.close()
        if kind is None and self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} declared")


@dataclass(frozen=True)
class _HashingWriter:
    """A write-only file view that also feeds what it writes into a hash (for the npy header)."""

    handle: BinaryIO
    digest: Any

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def _has_record(root: Path) -> bool:
    """Whether the folder records its manifest's SHA-256 (every dataset this version writes does)."""
    return any(name == MANIFEST for _, name in read_sha256sums(root / SUMS)) if (root / SUMS).is_file() else False
