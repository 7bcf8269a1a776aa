"""Inference paths for serving: eager PyTorch, ONNX Runtime, TorchScript, torch.compile; their speed and parity.

Every path runs the same ``Ranker.rank`` (so any ranker is served alike) behind a module that
takes and returns plain tensors, which is what tracing, export and compilation need. A path is
*exact* when it returns the same lists as eager PyTorch on the same batch; scores may differ by
float rounding (compiled kernels fuse and reorder arithmetic).

ONNX Runtime runs the whole ``rank``, GoalRank's encoder and its L-step greedy decode with the
key/value cache included, as one graph exported by ``torch.onnx.export(dynamo=True)``: the Python
loop over L steps unrolls (L is fixed per model) and the cache objects disappear, leaving ~800
ONNX nodes without PyTorch's per-operator dispatch, which is most of eager's time at B = 1
(measured: README "Benchmarks"). The graph is exported from a batch of two requests with the
batch, history and candidate dimensions symbolic (an export from one request would fix B = 1), and
``export_onnx`` refuses a graph whose inputs came out fixed.

``auto`` (the service's default) is the fastest *exact* path measured at start-up: for the rankers
in ``AUTO_ONNX``, the ONNX graph when it exports, returns eager's lists on the warm-up requests and
is faster; else eager. The export takes seconds to minutes, so it is cached beside the run
(``RunFolder.onnx``), stamped with a digest of the weights it was made from and of the code that
traced them (the ranker's modules, this one, the torch version); a stale or unreadable cache is
exported again. Every other ranker kind runs one or two passes per request,
where dispatch matters less; ``--backend onnx`` asks for the export of any of them, and a kind the
exporter cannot handle is refused with one line (measured on torch 2.13: the DNN, SetRank, MIR and
EGRerank export; DLCM, PRM, RankMixer, PIER, NAR4Rec and MG-E do not).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.errors import ArtifactError, ConfigError, GoalRankError
from goalrank.models.base import Ranker, RankOutput
from goalrank.models.goalrank import GoalRankGenerator

Backend = Literal["auto", "eager", "onnx", "torchscript", "compile"]
BACKENDS: tuple[Backend, ...] = typing.get_args(Backend)[1:]  # the measured paths; "auto" picks one of them
RankFn = Callable[[RankingBatch], RankOutput]
INPUT_NAMES = ("users", "history", "history_labels", "candidates")
SYMBOLIC_DIMS = {"users": (0,), "history": (0, 1), "history_labels": (0, 1), "candidates": (0, 1)}  # export's Dims
DIGEST_KEY = "goalrank_export_sha256"
AUTO_REPEATS = 10  # timed calls per path when "auto" chooses at start-up
# Rankers "auto" tries on ONNX Runtime: GoalRank's L-step decode is ~1,000 small operators per
# request, where ONNX Runtime measured 3-4x faster than eager at B = 1 (README "Benchmarks").
AUTO_ONNX: tuple[type[Ranker], ...] = (GoalRankGenerator,)

log = logging.getLogger(__name__)


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


def export_digest(ranker: Ranker) -> str:
    """SHA-256 of what an exported graph computes: the ranker's weights and the code that traced them.

    The weights are the ranker's and its attached evaluator's; the code is the source of every
    module that defines one of their layers or its base classes, this module and the torch version. Weights alone would
    let a graph exported before an upgrade be served after it, with the old graph's structure (and
    speed) although the Python model has changed.
    """
    digest = hashlib.sha256(f"{type(ranker).__qualname__} torch {torch.__version__}".encode())
    modules = [ranker] + [m for m in [getattr(ranker, "evaluator", None)] if isinstance(m, nn.Module)]
    for path in source_files(modules):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def source_files(modules: list[nn.Module]) -> list[Path]:
    """The goalrank source files that define the layers of ``modules`` or their base classes (the
    ``Ranker`` of ``models/base.py``), and this one, in a fixed order."""
    names = {cls.__module__ for module in modules for layer in module.modules() for cls in type(layer).__mro__}
    names.add(__name__)
    files = {Path(file) for name in names if name.startswith("goalrank")
             if (file := getattr(sys.modules[name], "__file__", None)) is not None}
    return sorted(files)


def _two_requests(example: RankingBatch) -> RankingBatch:
    """At least two requests to export from: a batch of one would fix the graph's batch size at 1."""
    if len(example) >= 2:
        return example
    return RankingBatch(**{f.name: torch.cat([getattr(example, f.name)] * 2) for f in fields(RankingBatch)})


def fixed_input_dims(path: Path) -> list[str]:
    """The input dimensions of an ONNX graph that should be symbolic but came out fixed, e.g. ``candidates[0]=2``."""
    import onnx

    fixed = []
    for value in onnx.load(str(path), load_external_data=False).graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis in SYMBOLIC_DIMS.get(value.name, ()):
            if not dims[axis].dim_param:
                fixed.append(f"{value.name}[{axis}]={dims[axis].dim_value}")
    return fixed


def export_onnx(ranker: Ranker, example: RankingBatch, path: Path) -> Path:
    """Export ``ranker.rank`` as one ONNX graph to ``path`` (atomically), stamped with ``export_digest``.

    The batch, history length and candidate count stay symbolic (checked: ArtifactError otherwise),
    so one graph serves every request the catalog accepts.
    """
    import onnx
    from torch.export import Dim

    module = TensorRanker(ranker.eval()).eval()
    batch, history = Dim("batch", min=1), Dim("history", min=1)
    dynamic_shapes = {"users": {0: batch}, "history": {0: batch, 1: history}, "history_labels": {0: batch, 1: history},
                      "candidates": {0: batch, 1: Dim("candidates", min=ranker.list_len)}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and FutureWarnings are not the model's
        program = torch.onnx.export(module, _inputs(_two_requests(example)), dynamo=True, optimize=True,
                                    dynamic_shapes=dynamic_shapes, input_names=list(INPUT_NAMES),
                                    output_names=["lists", "scores"], verbose=False)
    if program is None:
        raise ArtifactError(f"{path}: torch.onnx.export returned no program")
    model = program.model_proto
    onnx.helper.set_model_props(model, {DIGEST_KEY: export_digest(ranker)})
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        onnx.save(model, temporary)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the cache from a service run by another user
        fixed = fixed_input_dims(Path(temporary))
        if fixed:
            raise ArtifactError(f"{path}: exported graph has fixed input dimensions {fixed}; expected symbolic ones")
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


class OnnxRankFn:
    """``rank`` on ONNX Runtime over an exported graph, on torch's intra-op thread count."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: RankingBatch) -> RankOutput:
        feeds = {name: tensor.numpy(force=True) for name, tensor in zip(INPUT_NAMES, _inputs(batch), strict=True)}
        lists, scores = self.session.run(None, feeds)
        return RankOutput(lists=torch.from_numpy(lists), scores=torch.from_numpy(scores))


def _stamp(path: Path) -> str | None:
    import onnx

    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception:  # an unreadable or truncated cache is exported again, never served
        return None
    return next((p.value for p in props if p.key == DIGEST_KEY), None)


def onnx_rank_fn(ranker: Ranker, example: RankingBatch, cache: Path | None) -> RankFn:
    """ONNX Runtime ``rank`` from ``cache`` when it was exported from this ranker and code, else exported first.

    Without a cache, or when it cannot be written, the graph goes to a temporary file.
    """
    if cache is not None and cache.is_file() and _stamp(cache) == export_digest(ranker):
        return OnnxRankFn(cache)
    if cache is not None:
        try:
            return OnnxRankFn(export_onnx(ranker, example, cache))
        except OSError as exc:
            log.warning("%s: cannot write the ONNX export (%s); exporting to a temporary file", cache, exc)
    with tempfile.TemporaryDirectory() as folder:
        return OnnxRankFn(export_onnx(ranker, example, Path(folder) / "ranker.onnx"))


def _first_line(exc: BaseException) -> str:
    """An exception's first line, or its type when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def same_lists(rank_fn: RankFn, ranker: Ranker, batches: list[RankingBatch]) -> bool:
    """Whether ``rank_fn`` returns eager ``ranker.rank``'s lists on every batch."""
    with torch.inference_mode():
        return all(torch.equal(rank_fn(b).lists, ranker.rank(b).lists) for b in batches)


def parity_batches(example: RankingBatch, list_len: int) -> list[RankingBatch]:
    """The warm-up request, two of it, and it with its last candidates dropped: the shapes a service sees."""
    fewer = max(list_len, example.candidates.shape[1] - 2)
    return [example, _two_requests(example),
            RankingBatch(**{**{f.name: getattr(example, f.name) for f in fields(RankingBatch)},
                            "candidates": example.candidates[:, :fewer], "labels": example.labels[:, :fewer]})]


def auto_rank_fn(ranker: Ranker, example: RankingBatch, cache: Path | None) -> tuple[str, RankFn]:
    """The fastest exact path at start-up: ONNX Runtime when it exports, matches eager and is faster; else eager."""
    if not isinstance(ranker, AUTO_ONNX):
        return "eager", ranker.rank
    try:
        onnx_fn = onnx_rank_fn(ranker, example, cache)
    except Exception as exc:  # a model the exporter cannot handle is served eagerly
        log.warning("ONNX export of %s failed, serving eager PyTorch: %s", type(ranker).__name__, _first_line(exc))
        return "eager", ranker.rank
    if not same_lists(onnx_fn, ranker, parity_batches(example, ranker.list_len)):
        log.warning("ONNX Runtime's lists differ from eager PyTorch's for %s; serving eager", type(ranker).__name__)
        return "eager", ranker.rank
    onnx_ms = median_call_ms(onnx_fn, example, AUTO_REPEATS)
    eager_ms = median_call_ms(ranker.rank, example, AUTO_REPEATS)
    return ("onnx", onnx_fn) if onnx_ms < eager_ms else ("eager", ranker.rank)


def build_rank_fn(ranker: Ranker, backend: Backend, example: RankingBatch, cache: Path | None = None) -> RankFn:
    """A ``rank`` function on ``backend``; ``example`` is exported (ONNX), traced (TorchScript) or run once (compile).

    ``cache``: where the ONNX export is kept between starts (``onnx`` and ``auto``). Raises
    whatever the backend raises when it cannot handle the model, so callers can report it
    (``auto`` never raises for that: it falls back to eager).
    """
    ranker.eval()
    if backend == "eager":
        return ranker.rank
    if backend == "auto":
        return auto_rank_fn(ranker, example, cache)[1]
    if backend == "onnx":
        try:
            return onnx_rank_fn(ranker, example, cache)
        except (GoalRankError, OSError):
            raise
        except Exception as exc:  # the exporter's own errors are pages long; the user needs the way out
            raise ConfigError(f"serve.backend=onnx: {type(ranker).__name__} does not export to ONNX "
                              f"({_first_line(exc)}); serve it with backend eager or auto") from exc
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
