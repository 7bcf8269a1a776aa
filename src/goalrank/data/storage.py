"""The prepared-dataset folder: the one contract between data preparation and every model.

Layout of a prepared dataset ``DIR``::

    DIR/manifest.json           config, source checksums, seed, statistics, array checksums
    DIR/user_raw_ids.npy        (U,)   raw user id of each user index
    DIR/item_raw_ids.npy        (I+1,) raw item id of each item index; index 0 is padding (-1)
    DIR/<split>/<array>.npy     one folder per split in SPLITS, arrays in ARRAYS

Per split, sample ``s`` is one exposed list of ``L`` items shown to user ``users[s]``:

    users           (S,)    int64  user index in [0, U)
    timestamps      (S,)    int64  time of the list's first interaction
    history         (S, H)  int64  item indices of the user's last H interactions strictly before
                                   the list, oldest first, left-padded with 0
    history_labels  (S, H)  int8   their binary labels (0 on padding)
    candidates      (S, N)  int64  item indices of the N candidates, in a random order per sample
    labels          (S, N)  int8   1 where the candidate was exposed in this list and positive
    exposed         (S, L)  int64  positions into ``candidates`` of the exposed list, in logged order

Item indices start at 1 so that 0 can pad histories. Arrays are plain ``.npy`` files opened
memory-mapped, so a dataset larger than memory is read lazily batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goalrank.errors import ArtifactError, DataError
from goalrank.io import atomic_dir, read_json, sha256_file, write_json

SPLITS = ("train", "valid", "test")
ARRAYS = {
    "users": np.int64,
    "timestamps": np.int64,
    "history": np.int64,
    "history_labels": np.int8,
    "candidates": np.int64,
    "labels": np.int8,
    "exposed": np.int64,
}
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


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

    def __init__(self, root: Path | str, verify: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: prepared dataset folder not found")
        self.manifest: dict[str, Any] = read_json(self.root / MANIFEST)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{self.root / MANIFEST}: format_version {self.manifest.get('format_version')!r},"
                f" expected {FORMAT_VERSION}"
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


def write_prepared(
    root: Path | str,
    splits: dict[str, dict[str, np.ndarray]],
    user_raw_ids: np.ndarray,
    item_raw_ids: np.ndarray,
    manifest: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write a prepared dataset atomically; ``manifest`` gets format version and checksums added.

    ``manifest`` must hold n_users, n_items, list_len, n_candidates, history_len (and whatever
    provenance the caller records: config, source checksums, seed, stats).
    """
    for key in ("n_users", "n_items", "list_len", "n_candidates", "history_len"):
        if key not in manifest:
            raise ValueError(f"manifest lacks {key!r}")
    root = Path(root)
    with atomic_dir(root, overwrite=overwrite) as tmp:
        np.save(tmp / "user_raw_ids.npy", np.asarray(user_raw_ids, dtype=np.int64))
        np.save(tmp / "item_raw_ids.npy", np.asarray(item_raw_ids, dtype=np.int64))
        for name in SPLITS:
            (tmp / name).mkdir()
            for key, dtype in ARRAYS.items():
                np.save(tmp / name / f"{key}.npy", np.ascontiguousarray(splits[name][key], dtype=dtype))
        checksums = {
            str(path.relative_to(tmp)): sha256_file(path) for path in sorted(tmp.rglob("*.npy"))
        }
        write_json(tmp / MANIFEST, {**manifest, "format_version": FORMAT_VERSION, "checksums": checksums})
    return root
