"""The `goalrank simulate` folder: the one owner of its file names.

- ``world.npz``: the drawn world (embeddings, biases, categories, interaction matrix), from which
  the exact expected reward of any list follows;
- ``interactions.parquet``: the exposure log in the generic format ``prepare`` reads;
- ``manifest.json``: config, seed, counts and the SHA-256 of both files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from goalrank.io import Folder


@dataclass(frozen=True)
class SimulatorFolder(Folder):
    @property
    def world(self) -> Path:
        return self.root / "world.npz"

    @property
    def interactions(self) -> Path:
        return self.root / "interactions.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"
