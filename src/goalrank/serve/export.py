"""Inference paths for serving: eager PyTorch, TorchScript and torch.compile, compared for speed and parity.

Every path runs the same ``Ranker.rank`` (so any ranker is served alike) behind a module that
takes and returns plain tensors, which is what tracing and compilation need. A path is *exact*
when it returns the same lists as eager PyTorch on the same batch; scores may differ by float
rounding (compiled kernels fuse and reorder arithmetic). The service uses the fastest exact path
measured by ``compare_backends`` (``goalrank bench serve --backends ...``).

ONNX Runtime is not offered: GoalRank's greedy decoder is a Python loop over L steps with a
growing key/value cache, and exporting it needs the onnx/onnxscript toolchain on top of the
runtime, heavy dependencies for a path the measurements would have to justify first.
"""

from __future__ import annotations

import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.errors import ConfigError
from goalrank.models.base import Ranker, RankOutput

Backend = Literal["eager", "torchscript", "compile"]
BACKENDS: tuple[Backend, ...] = typing.get_args(Backend)
RankFn = Callable[[RankingBatch], RankOutput]


class TensorRanker(nn.Module):
    """``ranker.rank`` with tensors in and out: (users, history, history_labels, candidates) -> (lists, scores).

    Training-only fields of RankingBatch (labels, exposed) are filled with zeros; no ranker
    reads them when ranking.
    """

    def __init__(self, ranker: Ranker) -> None:
        super().__init__()
        self.ranker = ranker

    def forward(
        self, users: torch.Tensor, history: torch.Tensor, history_labels: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = RankingBatch(
            users=users,
            history=history,
            history_labels=history_labels,
            candidates=candidates,
            labels=candidates.new_zeros(candidates.shape, dtype=torch.float),  # (B, N)
            exposed=candidates.new_zeros(candidates.shape[0], self.ranker.list_len),  # (B, L)
        )
        output = self.ranker.rank(batch)
        return output.lists, output.scores


def _inputs(batch: RankingBatch) -> tuple[torch.Tensor, ...]:
    return batch.users, batch.history, batch.history_labels, batch.candidates


def build_rank_fn(ranker: Ranker, backend: Backend, example: RankingBatch) -> RankFn:
    """A ``rank`` function on ``backend``; ``example`` is traced (TorchScript) or run once (compile).

    Raises whatever the backend raises when it cannot handle the model, so callers can report it.
    """
    ranker.eval()
    if backend == "eager":
        return ranker.rank
    module = TensorRanker(ranker).eval()
    with torch.inference_mode(), warnings.catch_warnings():
        if backend == "torchscript":
            # Tracing warns about its deprecation and about every Python branch on a shape; the
            # parity check of compare_backends, not these warnings, decides whether a trace is usable.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            compiled = torch.jit.trace(module, _inputs(example), check_trace=False)
        elif backend == "compile":
            compiled = torch.compile(module, dynamic=True)
            compiled(*_inputs(example))
        else:
            raise ConfigError(f"serve.backend={backend!r}: expected one of {list(BACKENDS)}")

    def rank(batch: RankingBatch) -> RankOutput:
        lists, scores = compiled(*_inputs(batch))
        return RankOutput(lists=lists, scores=scores)

    return rank


@dataclass
class BackendResult:
    """One backend on one path (e.g. ``single`` B=1, ``batched`` B=64).

    p50_ms: median latency of one call; exact: same lists as eager on the batch; max_score_diff:
    largest absolute score difference to eager; setup_s: trace/compile time; error: why the
    backend could not run the model (then the numbers are absent).
    """

    backend: str
    path: str
    batch_size: int
    setup_s: float
    p50_ms: float | None = None
    exact: bool | None = None
    max_score_diff: float | None = None
    error: str | None = None


def median_call_ms(fn: RankFn, batch: RankingBatch, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn(batch)`` over ``repeats`` calls, after ``warmup`` calls."""
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            fn(batch)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def compare_backends(
    ranker: Ranker, batches: dict[str, RankingBatch], backends: tuple[Backend, ...] = BACKENDS, repeats: int = 20
) -> list[BackendResult]:
    """Latency and parity with eager of each backend on each named batch (e.g. single, batched)."""
    reference = {}
    with torch.inference_mode():
        for path, batch in batches.items():
            reference[path] = ranker.rank(batch)
    example = next(iter(batches.values()))
    results = []
    for backend in backends:
        start = time.perf_counter()
        try:
            rank_fn = build_rank_fn(ranker, backend, example)
        except Exception as exc:  # report why a backend cannot run this model, then go on
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            for path, batch in batches.items():
                results.append(BackendResult(backend, path, len(batch), time.perf_counter() - start,
                                             error=f"{type(exc).__name__}: {first_line[:120]}"))
            continue
        setup_s = time.perf_counter() - start
        for path, batch in batches.items():
            with torch.inference_mode():
                output = rank_fn(batch)
            expected = reference[path]
            results.append(BackendResult(
                backend, path, len(batch), setup_s,
                p50_ms=median_call_ms(rank_fn, batch, repeats),
                exact=bool(torch.equal(output.lists, expected.lists)),
                max_score_diff=float((output.scores.float() - expected.scores.float()).abs().max()),
            ))
    return results


def fastest_exact(results: list[BackendResult], path: str) -> str:
    """The exact backend with the lowest median latency on ``path`` (eager is always exact)."""
    exact = [r for r in results if r.path == path and r.exact]
    return min(exact, key=lambda r: r.p50_ms or float("inf")).backend


def format_backends(results: list[BackendResult]) -> str:
    """Markdown table of ``compare_backends`` results."""
    lines = ["| backend | path | B | setup s | p50 ms | exact lists | max score diff |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.backend} | {r.path} | {r.batch_size} | {r.setup_s:.2f} | unsupported: {r.error} | | |")
        else:
            lines.append(f"| {r.backend} | {r.path} | {r.batch_size} | {r.setup_s:.2f} | {r.p50_ms:.2f} |"
                         f" {r.exact} | {r.max_score_diff:.2e} |")
    return "\n".join(lines)
