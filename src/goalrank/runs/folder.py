"""The run folder: the one owner of every file name in a trained run's directory.

A run folder is what ``goalrank train`` writes and what ``evaluate``, ``serve`` and the benchmark
read back:

- ``config.json``: everything needed to rebuild the model (model name, model config, training
  config, dataset and reward-run paths with the SHA-256 of the dataset's manifest and of the
  reward run's checkpoint);
- ``checkpoint.pt`` (+ ``.sha256``): the best validation weights;
- ``last.pt`` (+ ``.sha256``): the latest training state, to resume from;
- ``log.jsonl``: one JSON line per epoch and event;
- ``tensorboard/``: TensorBoard event files of the training curves (``train.tensorboard``);
- ``metrics.json``: validation metrics of the kept checkpoint, written when training finished (so
  its presence marks a complete run);
- ``eval-<split>.json`` and ``per-list-<split>.npz``: evaluation results, recorded in
  ``SHA256SUMS``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goalrank.config import config_differences
from goalrank.errors import ArtifactError, ConfigError
from goalrank.io import SUMS, Folder, read_recorded_json, write_recorded_json


@dataclass(frozen=True)
class RunFolder(Folder):
    """Paths of one run folder's files; no other module spells their names."""

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def tensorboard(self) -> Path:
        """The run's TensorBoard log directory (``tensorboard --logdir`` it, or any folder above it)."""
        return self.root / "tensorboard"

    @property
    def lock(self) -> Path:
        """Held by the process that trains the run; beside the folder, so it can be taken first."""
        root = self.root.resolve()  # one lock per folder, however its path is spelt
        return root.parent / f".{root.name}.lock"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def onnx(self) -> Path:
        """The service's ONNX export of the trained ranker, stamped with its weights (serve/export.py)."""
        return self.root / "ranker.onnx"

    def evaluation(self, split: str) -> Path:
        """The means of ``goalrank evaluate`` on ``split``."""
        return self.root / f"eval-{split}.json"

    def per_list(self, split: str) -> Path:
        """Every list's metrics on ``split``, kept for the paired significance test."""
        return self.root / f"per-list-{split}.npz"

    @property
    def is_complete(self) -> bool:
        """Training finished: ``metrics.json`` is written last."""
        return self.metrics.is_file()

    def read_config(self) -> dict[str, Any]:
        """config.json, verified against the folder's SHA256SUMS: an edited config is refused."""
        if self.config.is_file() and not (self.root / SUMS).is_file():
            raise ArtifactError(f"{self.root}: written by an older goalrank (its config.json is not recorded in "
                                f"{SUMS}); remove the folder and train the run again")
        config: dict[str, Any] = read_recorded_json(self.config)
        return config

    def open(self, config: dict[str, Any], resume: bool = False) -> bool:
        """Create the folder and write its config.json; refuse a non-empty folder unless resuming.

        With ``resume``, an existing run folder is reopened only if its config.json equals
        ``config``: a resumed run must train exactly what the interrupted one did. Returns whether
        a new run was started here (False: an existing one reopened), for ``resumable_or_removed``.
        """
        if resume and self.config.is_file():
            differences = config_differences(self.read_config(), config)
            if differences:
                raise ConfigError(f"{self.config}: --resume needs the run's own config, but " + "; ".join(differences))
            return False
        if self.root.exists() and any(self.root.iterdir()):
            hint = "it has no config.json to resume from" if resume else "choose another --out or pass --resume"
            raise ArtifactError(f"{self.root}: run folder exists and is not empty; {hint}")
        self.root.mkdir(parents=True, exist_ok=True)
        write_recorded_json(self.config, config)
        return True

    @contextlib.contextmanager
    def resumable_or_removed(self, started_here: bool) -> Iterator[None]:
        """A run that fails in the block leaves a folder ``--resume`` continues, or none at all.

        A run started here that wrote no ``last.pt`` yet has nothing to continue from, and its
        half-written folder would only block the rerun ("exists and is not empty"), so it is
        removed. Otherwise the folder is kept and the error gets a note saying that ``--resume``
        continues it.
        """
        try:
            yield
        except BaseException as exc:
            if started_here and not self.last.is_file():
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                exc.add_note(f"{self.root} keeps its last checkpoint: rerun with --resume to continue")
            raise
