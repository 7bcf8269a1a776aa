"""Run-time plumbing shared by every training loop: seeding, device choice, run folders.

One seed drives everything: Python, NumPy and torch generators are all derived from it, and
batch order comes from ``Split.batches(seed=...)``, so a run is reproducible on the same machine.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goalrank.config import check
from goalrank.io import write_json


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model's training loop."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 3
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 512
    max_steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        check(self.batch_size >= 1, "train.batch_size", ">= 1", self.batch_size)
        check(self.lr > 0, "train.lr", "> 0", self.lr)
        check(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        check(self.grad_clip >= 0, "train.grad_clip", ">= 0 (0 disables clipping)", self.grad_clip)
        check(self.patience >= 1, "train.patience", ">= 1", self.patience)
        check(self.eval_batch_size >= 1, "train.eval_batch_size", ">= 1", self.eval_batch_size)
        check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", ">= 0 (0: whole epoch)",
              self.max_steps_per_epoch)
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
              "train.device", "auto, cpu, cuda[:i] or mps", self.device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class RunLog:
    """Appends one JSON line per event to ``run_dir/log.jsonl`` (per-epoch metrics, skips, ...)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "log.jsonl"
        self.start = time.perf_counter()

    def write(self, **record: Any) -> None:
        record = {"elapsed_s": round(time.perf_counter() - self.start, 3), **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def save_run_config(run_dir: Path, payload: dict[str, Any]) -> None:
    """Write the full config beside the checkpoint so a run can be rebuilt and re-evaluated."""
    write_json(Path(run_dir) / "config.json", payload)
