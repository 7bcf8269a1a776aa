"""Run-time plumbing shared by every training loop: seeding, device choice, run folders.

One seed drives everything: Python, NumPy and torch generators are all derived from it, and
batch order comes from ``Split.batches(seed=...)``, so a run is reproducible on the same machine.
``capture_rng``/``restore_rng`` carry those generators' states through a checkpoint, so that a
resumed run draws the same numbers as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from goalrank.config import check

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
MAX_LR = 10.0


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model's training loop.

    batch_size is the global batch: under torchrun each of the W processes takes ~1/W of it.
    checkpoint_every: batches between writes of ``last.pt`` (0: only at epoch ends), the state
    ``--resume`` continues from.
    precision: the forward pass's compute dtype: ``auto`` is bf16 autocast on CUDA (tensor cores;
    bf16 keeps fp32's exponent range, so no loss scaling is needed) and fp32 elsewhere (CPUs
    without bf16 matmul units gain nothing); ``bf16`` forces autocast, ``fp32`` disables it.
    Weights, gradients and the optimizer stay fp32.
    tensorboard: write the training curves as TensorBoard events under the run folder
    (``RunFolder.tensorboard``; see ``loop.TrainingCurves`` for the tags).
    """

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
    checkpoint_every: int = 200
    precision: Precision = "auto"
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        check(self.batch_size >= 1, "train.batch_size", ">= 1", self.batch_size)
        check(0 < self.lr <= MAX_LR, "train.lr", f"in (0, {MAX_LR}] (AdamW steps are about lr in size)", self.lr)
        check(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        check(self.grad_clip >= 0, "train.grad_clip", ">= 0 (0 disables clipping)", self.grad_clip)
        check(self.patience >= 1, "train.patience", ">= 1", self.patience)
        check(self.eval_batch_size >= 1, "train.eval_batch_size", ">= 1", self.eval_batch_size)
        check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", ">= 0 (0: whole epoch)",
              self.max_steps_per_epoch)
        check(self.checkpoint_every >= 0, "train.checkpoint_every", ">= 0 batches (0: only at epoch ends)",
              self.checkpoint_every)
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
              "train.device", "auto, cpu, cuda[:i] or mps", self.device)
        if self.device.startswith("cuda"):
            index = int(self.device.partition(":")[2] or 0) if self.device.partition(":")[2].isdigit() else -1
            check(torch.cuda.is_available() and 0 <= index < torch.cuda.device_count(), "train.device",
                  f"a CUDA device of this machine ({torch.cuda.device_count()} visible)", self.device)
        check(self.precision in PRECISIONS, "train.precision", f"one of {list(PRECISIONS)}", self.precision)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def capture_rng(generator: torch.Generator | None, device: torch.device) -> dict[str, Any]:
    """States of the Python, NumPy, torch CPU (and ``device``'s CUDA) and ``generator`` streams.

    Plain lists, ints and tensors only, so the checkpoint loads with ``weights_only=True``.
    """
    # The global RandomState is an MT19937, whose legacy state (the default) is always the tuple form.
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None, device: torch.device) -> None:
    """Put back the streams ``capture_rng`` recorded."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.precision`` on ``device``; None for plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context of a training forward pass (see ``TrainConfig.precision``)."""
    dtype = autocast_dtype(device, precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class RunLog:
    """Appends one JSON line per event to a run's log (``RunFolder.log``: per-epoch metrics, skips, ...).

    ``enabled=False`` makes every call a no-op: ranks other than 0 of a distributed run log nothing.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.start = time.perf_counter()

    def size(self) -> int:
        """Bytes logged so far; a checkpoint records it so a resumed run can cut what follows."""
        return self.path.stat().st_size if self.enabled and self.path.is_file() else 0

    def truncate(self, size: int) -> None:
        """Drop the records written after byte ``size``: the part a resumed run is about to replay."""
        if self.enabled and self.path.is_file():
            with open(self.path, "r+b") as handle:
                handle.truncate(size)

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        record = {"elapsed_s": round(time.perf_counter() - self.start, 3), **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
