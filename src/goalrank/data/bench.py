"""`goalrank bench prepare`: wall time and peak memory of `goalrank prepare` on logs of several sizes.

Each log is prepared in a fresh child process, so its peak resident memory (``ru_maxrss`` of
that child, from ``os.wait4``) is its own and not inflated by earlier runs; ``--config``/``--set``
are passed on to each child (e.g. ``--set retriever.search=hnsw``). Simulated logs come
from `goalrank simulate` in the paper's Industry-0.1B shape scaled to the requested size
(``industry_shape``); they are generated once and reused from ``--workdir``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goalrank.config import PAPER_LIST_LEN, check, config_differences, flatten_values, to_dict
from goalrank.data.storage import PreparedDataset
from goalrank.errors import DataError
from goalrank.io import read_json
from goalrank.simulate.folder import SimulatorFolder
from goalrank.simulate.logs import simulate
from goalrank.simulate.simulator import SimConfig

KIB_PER_MIB = 1024
INDUSTRY_ITEMS_PER_USER = 0.3 / 1.1  # Industry-0.1B: 0.3M items, 1.1M users


@dataclass(frozen=True)
class Measurement:
    """One `prepare` run: what was prepared, how long it took and its peak memory."""

    name: str
    users: int
    items: int
    interactions: int
    lists: int
    wall_s: float
    peak_rss_mib: float
    search: str = "exact"
    recall: float = 1.0


@dataclass
class BenchPrepareConfig:
    """`goalrank bench prepare`: which logs to prepare, and how.

    ml100k: an ML-100K ratings file to include ("": skip). sizes: simulated log sizes
    (interactions) in the paper's Industry shape. workdir: scratch folder. prepare: PrepareConfig
    values every child ``prepare`` gets (as its ``--set`` keys, e.g. ``prepare.kcore=5``).
    """

    ml100k: str = ""
    sizes: tuple[int, ...] = (1_000_000, 10_000_000)
    workdir: str = "runs/bench-prepare"
    prepare: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(all(size >= 1 for size in self.sizes), "sizes", "interaction counts >= 1", self.sizes)
        check(isinstance(self.prepare, dict), "prepare", "a table of PrepareConfig values", self.prepare)


def bench_prepare(config: BenchPrepareConfig) -> str:
    """Run `prepare` on ML-100K (``config.ml100k``) and simulated logs (``config.sizes``); a markdown table."""
    workdir = Path(config.workdir)
    flags = [f"--set={key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
             for key, value in flatten_values(config.prepare)]
    rows = []
    if config.ml100k:
        rows.append(measure_prepare("ML-100K", "movielens", Path(config.ml100k), workdir / "prepared-ml100k", flags))
    for size in config.sizes:
        folder = simulated_log(size, workdir / f"simulated-{size}")
        rows.append(measure_prepare(f"simulated {size:,}", "simulator", folder,
                                    workdir / f"prepared-{size}", flags))
    return format_table(rows)


def industry_shape(size: int) -> SimConfig:
    """A simulator config with about ``size`` interactions in the paper's Industry-0.1B shape.

    Industry-0.1B has 100M interactions from 1.1M users on 0.3M items (App. D.1): users and items
    scale with ``size`` in that ratio, each user has 15 sessions of L=6 (~91 interactions per user
    in the paper), and the logging policy draws from a per-user pool of 200 items, so simulating
    costs O(size) however large the catalogue (whole-catalogue logging would cost O(size · items)).
    """
    sessions, length = 15, PAPER_LIST_LEN
    n_users = math.ceil(size / (sessions * length))
    n_items = max(1000, round(n_users * INDUSTRY_ITEMS_PER_USER))
    return SimConfig(n_users=n_users, n_items=n_items, sessions_per_user=sessions, list_len=length,
                     logging_pool=200, chunk_users=2000)


def simulated_log(size: int, folder: Path) -> Path:
    """A `goalrank simulate` folder of ``industry_shape(size)``, reused if one of that very config is there."""
    config, manifest = industry_shape(size), SimulatorFolder(folder).manifest
    if manifest.is_file() and not config_differences(read_json(manifest).get("config"), to_dict(config)):
        return folder
    simulate(config, folder, overwrite=True)
    return folder


def measure_prepare(name: str, source: str, log: Path, out: Path, flags: Sequence[str] = ()) -> Measurement:
    """Run `goalrank prepare` on ``log`` (with config ``flags``) in a child process; time it and read its peak RSS."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "goalrank.cli", "prepare", "--source", source,
               "--input", str(log), "--out", str(out), "--overwrite", *flags]
    stderr_path = out.parent / f"{out.name}.stderr.txt"
    with open(stderr_path, "w") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise DataError(f"prepare of {log} failed (exit code {child.returncode}); see {stderr_path}")
    manifest = PreparedDataset(out, verify=False).manifest
    total, retriever = manifest["stats"]["total"], manifest["retriever"] or {"search": "none (matched candidates)"}
    return Measurement(name, total["users"], total["items"], total["interactions"], total["lists"], wall,
                       usage.ru_maxrss / KIB_PER_MIB, retriever["search"], retriever.get("recall_at_k", 1.0))


def format_table(rows: list[Measurement]) -> str:
    """Markdown table of measurements."""
    lines = ["| log | users | items | interactions (k-cored) | lists | candidates (recall@N) | wall time (s)"
             " | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    lines += [f"| {r.name} | {r.users:,} | {r.items:,} | {r.interactions:,} | {r.lists:,} | {r.search}"
              f" ({r.recall:.4f}) | {r.wall_s:.1f} | {r.peak_rss_mib:,.0f} |" for r in rows]
    return "\n".join(lines)
