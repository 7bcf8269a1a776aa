"""Timing and peak-throughput helpers shared by the `goalrank bench ...` commands.

MFU (model FLOPs utilisation) is achieved FLOP/s over a peak. The peak used here is *measured*:
the best time of a large square matmul in the step's compute dtype on the same device and
thread count, so the figure says how much of what this machine can actually do a step uses.
A datasheet peak (e.g. 989 TFLOP/s dense bf16 on an H100 SXM) can be passed instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timings cover the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()`` and its wall time in seconds, synchronised on ``device``."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def counted(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and its FLOPs (matmuls and attention, forward and backward), via FlopCounterMode.

    Counting slows the call down, so benchmarks count once, outside their timed calls.
    """
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, counter.get_total_flops()


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (``counted``)."""
    return counted(step)[1]


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 1024,
                      repeats: int = 10) -> float:
    """Measured matmul FLOP/s: the best of ``repeats`` (size × size) products in ``dtype`` on ``device``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b), device)[1] for _ in range(repeats))
    return 2 * size**3 / best
