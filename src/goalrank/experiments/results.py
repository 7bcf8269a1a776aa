"""Results kept in the repository: every benchmark run's test row, learning curve and per-list test
metrics, so that a recorded run is never trained again and the report is rebuilt from them alone.

    RESULTS/STUDY/DATASET.csv            one row per run: identity, size, cost, test metrics and,
                                         for a ranker trained against an evaluator, ``reward_run``
    RESULTS/STUDY/curves.csv             every validation pass of every run: step, wall time, metrics
    RESULTS/lists/DATASET/DATA/seedS/RUN.npz  per-list test metrics (the report's paired bootstrap)
    RESULTS/reward/DATASET.csv           each seed's reward model: its quality figures and cost

A run is known by its dataset's name and identity (``dataset_identity``: what the data was made
from, not where it lies), its seed, its run-folder name (a digest of its whole config,
``benchmark.ranker_run``) and the beam width of the oracle its ratio is taken to, so runs
recorded on one machine are reused on another and studies that share a run (Table 1's GoalRank
is K=20 of the group-size study) share its row. A run of another config is another row; the
report keeps, per study, dataset, method and seed, the one recorded last. The files are plain
CSV and NumPy archives meant for version control, so they carry no ``SHA256SUMS``: git is their
record. Writers take a blocking lock on the folder, so benchmarks of two seeds run side by side
can record into one store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from goalrank.data.storage import PreparedDataset
from goalrank.errors import ArtifactError
from goalrank.experiments.config import STUDIES
from goalrank.io import Folder, atomic_file, write_text_atomic
from goalrank.runs.folder import RunFolder

REWARD_STUDY = "reward"
IDENTITY = ("dataset", "data", "seed", "run", "beam_width")  # the oracle ratio depends on the oracle's beam
CURVE_IDENTITY = ("dataset", "data", "seed", "run")
# the per-list metrics kept: the report's table columns (bases of "NDCG@6", "complete_NDCG@6", ...)
LIST_KEYS = ("H", "NDCG", "MAP", "F1", "AUC", "true_reward")
# read as text whatever they look like: a digest can be all digits
TEXT_COLUMNS = {"dataset": pl.String, "data": pl.String, "run": pl.String, "setting": pl.String,
                "reward_run": pl.String}


def dataset_identity(dataset: PreparedDataset) -> str:
    """A short digest of what a prepared dataset was made from: its prepare config without the input's
    path, the content checksums of its source files and, for simulator data, the checksum of the
    world's manifest (its config: what the true reward is, beyond the logs it wrote)."""
    manifest = dataset.manifest
    config = {key: value for key, value in manifest.get("config", {}).items() if key != "input"}
    sources = sorted(manifest.get("source_checksums", {}).values())
    return digest({"config": config, "sources": sources, "world": manifest.get("simulator_sha256")})


def digest(payload: Any) -> str:
    """Ten hex digits of the SHA-256 of ``payload`` as canonical JSON: the names of run folders
    (``benchmark.ranker_run``) and of datasets (``dataset_identity``)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def learning_curve(run_dir: Path) -> list[dict[str, Any]]:
    """One row per validation pass of a run (its ``log.jsonl``): pass number, optimizer steps so far,
    training wall time so far (summed over the processes of a resumed run) and the validation metrics."""
    rows: list[dict[str, Any]] = []
    steps, offset, segment = 0, 0.0, 0.0
    for line in RunFolder(run_dir).log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "resumed":
            offset, segment = offset + segment, 0.0
            continue
        if "event" in entry or "epoch" not in entry:
            continue
        segment = entry.get("elapsed_s", segment)
        steps += int(entry.get("steps", 0))
        rows.append({"eval": entry["epoch"], "step": steps, "wall_s": round(offset + segment, 3),
                     **{key: value for key, value in entry.items() if key.startswith(("valid_", "train_loss"))}})
    return rows


def run_cost(curve: list[dict[str, Any]], best_eval: int, batch_size: int, train_lists: int) -> dict[str, Any]:
    """``steps`` and ``wall_s`` of the whole run, ``best_step`` (the chosen checkpoint's) and ``epochs``
    (passes over the training split), from its learning curve."""
    if not curve:
        raise ArtifactError("a finished run without a validation pass in its log.jsonl")
    best = next((row for row in curve if row["eval"] == best_eval), curve[-1])
    steps = curve[-1]["step"]
    return {"steps": steps, "best_step": best["step"], "evals": len(curve), "wall_s": curve[-1]["wall_s"],
            "epochs": round(steps * batch_size / max(train_lists, 1), 3)}


@dataclass(frozen=True)
class ResultsStore(Folder):
    def table(self, study: str, dataset: str) -> Path:
        return self.root / study / f"{dataset}.csv"

    def curves(self, study: str) -> Path:
        return self.root / study / "curves.csv"

    def lists(self, row: dict[str, Any]) -> Path:
        return self.root / "lists" / row["dataset"] / row["data"] / f"seed{row['seed']}" / f"{row['run']}.npz"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Wait for, then hold, the store's write lock (two benchmarks recording side by side)."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)

    def studies(self) -> list[str]:
        """The benchmark's studies (and the reward models) with at least one table here."""
        return [study for study in (*STUDIES, REWARD_STUDY) if any((self.root / study).glob("*.csv"))]

    def rows(self, study: str) -> list[dict[str, Any]]:
        """Every recorded row of ``study`` over all datasets (curves excluded)."""
        rows: list[dict[str, Any]] = []
        for path in sorted((self.root / study).glob("*.csv")):
            if path.name != "curves.csv":
                rows += _read_rows(path)
        return rows

    def find(self, dataset: str, data: str, seed: int, run: str, beam_width: int | None) -> dict[str, Any] | None:
        """The recorded row of this run in any study (they share runs), or None; ``beam_width``:
        the oracle's of the row's ratio (None for a reward model)."""
        key = (dataset, data, seed, run, beam_width)
        for study in self.studies():
            path = self.table(study, dataset)
            if path.is_file():
                for row in _read_rows(path):
                    if _identity(row) == key:
                        return row
        return None

    def curve(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """A recorded run's learning curve (from the first study's curves that hold it)."""
        key = tuple(row[name] for name in CURVE_IDENTITY)
        for study in self.studies():
            path = self.curves(study)
            if path.is_file():
                found = [point for point in _read_rows(path) if tuple(point[name] for name in CURVE_IDENTITY) == key]
                if found:
                    return found
        return []

    def record(self, row: dict[str, Any], curve: list[dict[str, Any]], per_list: Path | None = None) -> None:
        """Add (or replace) ``row`` in its study's table, its learning curve in the study's curves and,
        from a run folder's per-list file ``per_list``, the lists archive."""
        with self.lock():
            if per_list is not None:
                self._record_lists(row, per_list)
            study, dataset = row["study"], row["dataset"]
            key = _identity(row)
            _upsert(self.table(study, dataset), [row], lambda r: _identity(r) == key)
            if curve:
                ident = {name: row[name] for name in CURVE_IDENTITY}
                _upsert(self.curves(study), [{**point, **ident} for point in curve],
                        lambda r: tuple(r.get(name) for name in CURVE_IDENTITY) == tuple(ident.values()))

    def name_reward_run(self, row: dict[str, Any], reward_run: str) -> dict[str, Any]:
        """``row`` with its ``reward_run``, recorded if the row was recorded before that column.

        The caller found the row by the run name it planned, and a run's name digests the name of
        the reward run it is trained against (``benchmark.ranker_run``), so the match proves it.
        """
        if row.get("reward_run") or not reward_run:
            return row
        key = _identity(row)
        with self.lock():
            # rewritten in place, not through _upsert: that moves the row to the end, and the
            # report takes the last recorded row of a method and seed as its current one
            for study in STUDIES:  # every study that shares the run holds its own copy of the row
                path = self.table(study, row["dataset"])
                rows = _read_rows(path) if path.is_file() else []
                if any(_identity(r) == key for r in rows):
                    named = [{**r, "reward_run": reward_run} if _identity(r) == key else r
                             for r in rows]
                    write_text_atomic(path, pl.from_dicts(named, infer_schema_length=None).write_csv())
        return {**row, "reward_run": reward_run}

    def share(self, row: dict[str, Any], columns: dict[str, Any]) -> None:
        """Record a run found in one study's table in ``columns["study"]``'s too (studies share runs),
        under the names the current plan gives it there: a tuning knob that has since become the
        default was recorded as that knob, and is relabelled ``default`` when a benchmark reads it
        back (the report takes a setting's rows by label, so it would otherwise mix an old default's
        seed with the new default's others)."""
        study = columns["study"]
        path = self.table(study, row["dataset"])
        key = _identity(row)
        here = next((r for r in _read_rows(path) if _identity(r) == key), None) if path.is_file() else None
        if here is not None and all((here.get(name) or "") == (columns[name] or "") for name in ("label", "setting")):
            return
        self.record({**(here or row), **columns}, self.curve(row))

    def _record_lists(self, row: dict[str, Any], per_list: Path) -> None:
        with np.load(per_list) as arrays:
            kept = {name: arrays[name].astype(np.float32) for name in arrays.files
                    if name.removeprefix("complete_").split("@")[0] in LIST_KEYS}
        path = self.lists(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            np.savez_compressed(tmp, allow_pickle=False, **kept)

    def per_list(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        path = self.lists(row)
        if not path.is_file():
            raise ArtifactError(f"{path}: the per-list test metrics of run {row['run']} are missing from the "
                                f"results folder {self.root}; record the run again")
        with np.load(path) as arrays:
            return dict(arrays)


def _identity(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a recorded run is known by (``IDENTITY``); rows recorded by older versions may lack a key."""
    return tuple(row.get(name) for name in IDENTITY)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        return pl.read_csv(path, infer_schema_length=None, schema_overrides=TEXT_COLUMNS).to_dicts()
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise ArtifactError(f"{path}: not a readable results table ({str(exc).splitlines()[0]})") from exc


def _upsert(path: Path, rows: list[dict[str, Any]], replaced: Any) -> None:
    """Write ``rows`` into the CSV ``path`` in place of the old rows for which ``replaced`` holds."""
    kept = [row for row in _read_rows(path) if not replaced(row)] if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, pl.from_dicts([*kept, *rows], infer_schema_length=None).write_csv())
