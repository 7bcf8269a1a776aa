"""The benchmark's output folder: the one owner of its layout.

    OUT/data/NAME/               prepared dataset (and NAME-world/ for the built-in simulator)
    OUT/runs/NAME/seedS/RUN/     reward and ranker run folders (``RunFolder``), each with its tensorboard/
    OUT/report.md, OUT/STUDY.csv, OUT/*.png, OUT/benchmark-config.json   the report, in SHA256SUMS
    OUT/results/                 every finished run's recorded row, curve and per-list metrics (default)
    OUT/estimate/                the scratch runs and projection of ``--estimate``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from goalrank.io import Folder


@dataclass(frozen=True)
class BenchmarkFolder(Folder):
    def world(self, dataset: str) -> Path:
        """The simulated world of a built-in simulator dataset."""
        return self.root / "data" / f"{dataset}-world"

    def dataset(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    @property
    def runs(self) -> Path:
        """Every run of the benchmark, below: the one TensorBoard logdir that shows all their curves."""
        return self.root / "runs"

    def seed(self, dataset: str, seed: int) -> Path:
        """The folder of one dataset and seed's runs."""
        return self.runs / dataset / f"seed{seed}"

    @property
    def results(self) -> Path:
        """The default results folder (``experiments.results``) when the benchmark is given none."""
        return self.root / "results"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def config(self) -> Path:
        return self.root / "benchmark-config.json"

    def table(self, study: str) -> Path:
        return self.root / f"{study}.csv"

    def plot(self, study: str, dataset: str) -> Path:
        return self.root / f"{study}-{dataset}.png"

    @property
    def estimate(self) -> Path:
        """The scratch folder of ``--estimate``: its timing runs, ``estimate.md`` and ``estimate.csv``."""
        return self.root / "estimate"

    @property
    def estimate_report(self) -> Path:
        return self.estimate / "estimate.md"

    @property
    def estimate_table(self) -> Path:
        return self.estimate / "estimate.csv"
