"""`goalrank bench serve`: ranking latency and throughput, GoalRank raced against MG-E (paper App. D.3).

The paper reports 18.6 ms online latency for GoalRank against 34.2 ms for the multi-generator
(MG-E) pipeline: one generator call versus several generators plus an evaluator. This benchmark
races, in one run, GoalRank against ``mge`` (G separately trained generators, ``--mge-generators``,
scored by GoalRank's reward model: models/mge.py ``MultiGenerator``), ``mge-heads`` (G heads on one
trunk, ``--mge-heads-run``) and ``pier``, each on the path the service would use (``auto``):

* ``inproc-1`` / ``inproc-batch``: the rank function on pre-encoded requests, one at a time and in
  batches of ``--batch-size``; GoalRank also on eager PyTorch when ``auto`` chose another path;
* ``http-1`` / ``http-C``: over HTTP on loopback, the service in a subprocess, one request at a
  time, then ``--concurrency`` C requests in flight (the server's micro-batcher gathers them);
* FLOPs of one request of each model (FlopCounterMode, on eager: the same arithmetic) against the
  machine's float32 matmul peak measured in the same run: the FLOP limit, FLOPs / peak;
* ``--load N``: N HTTP requests, a share of them malformed, counting status codes (no 5xx).

Requests are the test split's lists of each run's dataset, in raw ids. Every measurement stops
after ``--requests`` requests or ``--max-seconds``, whichever comes first. ``--json FILE`` writes
one row per (model, backend, path).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from goalrank.config import check
from goalrank.data.storage import PreparedDataset, RankingBatch
from goalrank.errors import ArtifactError
from goalrank.io import write_rows_json
from goalrank.models.blocks import PAD
from goalrank.perf import count_flops, matmul_peak_flops
from goalrank.runs.ensemble import write_ensemble
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import load_ranker, run_dataset
from goalrank.serve.batcher import RankFn, concat
from goalrank.serve.catalog import Catalog, HistoryEvent
from goalrank.serve.export import Backend, auto_rank_fn, compare_backends, format_backends

READY_TIMEOUT_S = 120.0
PEAK_MATMUL_SIZE = 1024
OVERSIZED_BYTES = 512 * 1024  # over ServeConfig.max_body_bytes


@dataclass
class Latency:
    """One measurement: per-call latencies (ms), requests served per second, and one request's compute.

    path: ``inproc-1``, ``inproc-batch``, ``http-1`` or ``http-C`` (C clients); backend: the
    inference path (the service's own choice over HTTP); flops: of one request; peak_flops: the
    matmul peak measured in the same run.
    """

    model: str
    backend: str
    path: str
    batch_size: int
    latencies_ms: np.ndarray
    throughput: float
    flops: int = 0
    peak_flops: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def row(self) -> dict[str, Any]:
        """The ``--json`` row."""
        return {"model": self.model, "backend": self.backend, "path": self.path, "batch_size": self.batch_size,
                "calls": len(self.latencies_ms), "p50_ms": self.percentile(50), "p95_ms": self.percentile(95),
                "p99_ms": self.percentile(99), "rps": self.throughput, "flops": self.flops,
                "peak_flops": self.peak_flops}


@dataclass
class BenchServeConfig:
    """`goalrank bench serve`: which runs, how many requests, which paths.

    run: the GoalRank run. mge_generators: runs of the G separately trained generators of ``mge``
    (their shared evaluator is the GoalRank run's reward model; empty: skip); mge_heads_run: an
    ``mge`` (G heads on one trunk) run; pier_run: a PIER run ("": skip). requests and max_seconds
    bound each measurement; batch_size is the batched path's, concurrency the number of HTTP
    clients of the batched path. load: requests of the HTTP load test (0: skip), malformed the
    share of them that is malformed. backends: GoalRank's inference paths to compare (empty:
    skip). threads: torch intra-op threads of client and server (0: torch's default; 1 avoids
    oversubscription when clients share the cores). http: also measure over HTTP on loopback.
    seed: of the request sampling. json: also write the rows to this file ("": no).
    """

    run: str
    mge_generators: tuple[str, ...] = ()
    mge_heads_run: str = ""
    pier_run: str = ""
    requests: int = 200
    max_seconds: float = 20.0
    batch_size: int = 64
    concurrency: int = 16
    load: int = 0
    malformed: float = 0.2
    backends: tuple[Backend, ...] = ()
    threads: int = 1
    http: bool = True
    seed: int = 0
    json: str = ""

    def __post_init__(self) -> None:
        for name in ("requests", "batch_size", "concurrency"):
            check(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        check(math.isfinite(self.max_seconds) and self.max_seconds > 0, "max_seconds", "a finite number > 0",
              self.max_seconds)
        check(self.load >= 0, "load", ">= 0 (0: skip)", self.load)
        check(0.0 <= self.malformed <= 1.0, "malformed", "in [0, 1]", self.malformed)
        check(self.threads >= 0, "threads", ">= 0", self.threads)


def bench_serve(settings: BenchServeConfig) -> str:
    """Run every measurement ``settings`` asks for and return the markdown report."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    peak = matmul_peak_flops(torch.device("cpu"), size=PEAK_MATMUL_SIZE)
    results: list[Latency] = []
    sections = []
    with tempfile.TemporaryDirectory() as scratch:
        runs = {"goalrank": Path(settings.run)}
        if settings.mge_generators:
            reward = Path(load_ranker(runs["goalrank"], "cpu")[1]["reward"])
            runs["mge"] = write_ensemble(Path(scratch) / "mge", [Path(r) for r in settings.mge_generators], reward)
        runs.update({name: Path(run) for name, run in (("mge-heads", settings.mge_heads_run),
                                                        ("pier", settings.pier_run)) if run})
        for name, run in runs.items():
            ranker, config = load_ranker(run, "cpu")
            dataset = run_dataset(config)
            catalog = Catalog(dataset, ranker.list_len)
            bodies = request_bodies(catalog, dataset, settings.requests, settings.seed)
            singles = [encode(catalog, body) for body in bodies]
            with torch.inference_mode():
                flops = count_flops(partial(ranker.rank, singles[0]))
            backend, rank_fn = auto_rank_fn(ranker, catalog.example_request(), RunFolder(run).onnx)
            paths = [(backend, rank_fn)] + ([("eager", ranker.rank)] if backend != "eager" else [])
            for path_backend, fn in paths:
                results += [replace(r, flops=flops, peak_flops=peak) for r in
                            in_process(name, path_backend, fn, singles, settings.batch_size, settings.max_seconds)]
            if name == "goalrank" and settings.backends:
                batched = concat((singles * settings.batch_size)[: settings.batch_size])
                sections.append("## Inference paths (GoalRank, CPU)\n\n" + format_backends(compare_backends(
                    ranker, {"single": singles[0], "batched": batched}, settings.backends)))
            if settings.http:
                with ServerProcess(run, settings.batch_size, settings.threads) as url:
                    results += [replace(r, flops=flops, peak_flops=peak) for r in
                                over_http(name, url, bodies, settings.concurrency, settings.max_seconds)]
                    if name == "goalrank" and settings.load:
                        sections.append(load_section(url, bodies, settings.load, settings.malformed,
                                                     settings.concurrency, settings.seed))
    if settings.json:
        write_rows_json(Path(settings.json), [r.row() for r in results])
    report = [f"## Ranking latency (CPU, {torch.get_num_threads()} torch threads; FLOP limit = FLOPs / "
              f"measured {PEAK_MATMUL_SIZE}² fp32 matmul peak {peak / 1e9:.1f} GFLOP/s)\n", format_latencies(results)]
    if any(r.model in ("mge", "mge-heads") for r in results):
        report += ["\n## GoalRank / MG-E latency (paper App. D.3: 18.6 / 34.2 = 0.54 online; goal p99 <= 0.25 "
                   "in-process, single request)\n", ratio_table(results)]
    return "\n\n".join(["\n".join(report), *sections])


def request_bodies(catalog: Catalog, dataset: PreparedDataset, count: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``count`` JSON request bodies from random test lists, in raw ids."""
    test = dataset.split("test")
    rows = np.random.default_rng(seed).permutation(len(test))[:count]
    raw = catalog.item_raw
    user_raw = np.asarray(dataset.user_raw_ids)
    bodies = []
    for row in rows:
        history, labels = test.arrays["history"][row], test.arrays["history_labels"][row]
        bodies.append({
            "user": int(user_raw[test.arrays["users"][row]]),
            "history": [{"item": int(raw[i]), "label": int(v)}
                        for i, v in zip(history, labels, strict=True) if i != PAD],
            "candidates": [int(raw[i]) for i in test.arrays["candidates"][row]],
        })
    return bodies


def encode(catalog: Catalog, body: dict[str, Any]) -> RankingBatch:
    history = [HistoryEvent(h["item"], h["label"]) for h in body["history"]]
    return catalog.encode(body["user"], history, body["candidates"])


def _timed_calls(call: Callable[[int], int], count: int, max_seconds: float) -> tuple[np.ndarray, float, int]:
    """Run ``call(i)`` (returns requests served) until ``count`` calls or ``max_seconds``."""
    latencies, served = [], 0
    start = time.perf_counter()
    for index in range(count):
        begin = time.perf_counter()
        served += call(index)
        latencies.append(1e3 * (time.perf_counter() - begin))
        if time.perf_counter() - start > max_seconds:
            break
    return np.array(latencies), time.perf_counter() - start, served


def in_process(name: str, backend: str, rank_fn: RankFn, singles: list[RankingBatch], batch_size: int,
               max_seconds: float) -> list[Latency]:
    """``rank_fn`` alone: one request per call (``inproc-1``), then ``batch_size`` per call (``inproc-batch``)."""
    batches = [concat([singles[(start + k) % len(singles)] for k in range(batch_size)])
               for start in range(0, len(singles), batch_size)]
    results = []
    with torch.inference_mode():
        rank_fn(singles[0])  # warm-up: lazy initialisation is not latency
        for path, inputs in (("inproc-1", singles), ("inproc-batch", batches)):

            def call(index: int, inputs: list[RankingBatch] = inputs) -> int:
                rank_fn(inputs[index])
                return len(inputs[index])

            latencies, elapsed, served = _timed_calls(call, len(inputs), max_seconds)
            results.append(Latency(name, backend, path, len(inputs[0]), latencies, served / elapsed))
    return results


def over_http(name: str, url: str, bodies: list[dict[str, Any]], concurrency: int,
              max_seconds: float) -> list[Latency]:
    """Sequential requests (``http-1``), then ``concurrency`` clients in flight, micro-batched by the server."""
    with httpx.Client(base_url=url) as client:

        def call(index: int) -> int:
            client.post("/rank", json=bodies[index]).raise_for_status()
            return 1

        latencies, elapsed, served = _timed_calls(call, len(bodies), max_seconds)
    results = [Latency(name, "service", "http-1", 1, latencies, served / elapsed)]
    statuses, latencies, elapsed = concurrent_posts(url, [json.dumps(b).encode() for b in bodies], concurrency,
                                                    max_seconds)
    if set(statuses) != {200}:
        raise ArtifactError(f"{url}: valid benchmark requests answered {dict(statuses)}")
    results.append(Latency(name, "service", f"http-{concurrency}", concurrency, latencies,
                           sum(statuses.values()) / elapsed))
    return results


def concurrent_posts(url: str, payloads: list[bytes], concurrency: int,
                     max_seconds: float) -> tuple[Counter[int], np.ndarray, float]:
    """POST every payload from ``concurrency`` threads; status counts (0: no answer) and latencies."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(len(payloads)))
    start = time.perf_counter()

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            while time.perf_counter() - start < max_seconds:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                begin = time.perf_counter()
                try:
                    status = client.post("/rank", content=payloads[index],
                                         headers={"content-type": "application/json"}).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    statuses[status] += 1
                    latencies.append(1e3 * (time.perf_counter() - begin))

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, np.array(latencies), time.perf_counter() - start


class ServerProcess:
    """``goalrank serve`` in a subprocess on a free loopback port; the context yields its URL once ready."""

    def __init__(self, run: Path, max_batch: int, threads: int) -> None:
        self.run = Path(run)
        self.max_batch = max_batch
        self.threads = threads

    def __enter__(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "goalrank.cli", "serve", "--run", str(self.run), "--port", str(port),
             "--max-batch", str(self.max_batch), "--threads", str(self.threads)],
            stdout=subprocess.DEVNULL, stderr=self.log, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.process.kill()
        self.process.wait()
        self.log.seek(0)
        raise ArtifactError(f"--run {self.run}: server not ready within {READY_TIMEOUT_S:.0f} s:"
                            f" {self.log.read()[-500:]}")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def malformed_payloads(body: dict[str, Any], list_len: int) -> list[bytes]:
    """One payload per kind of malformed request, built from a valid ``body``."""
    candidates = body["candidates"]
    kinds: list[Any] = [
        {**body, "unexpected": 1},
        {**body, "candidates": [candidates[0], *candidates[:-1]]},
        {**body, "candidates": candidates[: list_len - 1]},
        {**body, "candidates": [str(c) for c in candidates]},
        {**body, "history": [{"item": 1, "label": 5}]},
        {**body, "candidates": [max(candidates) + 10**12, *candidates[1:]]},
    ]
    return [json.dumps(kind).encode() for kind in kinds] + [b'{"candidates": [', b"x" * OVERSIZED_BYTES]


def load_section(url: str, bodies: list[dict[str, Any]], count: int, malformed_share: float, concurrency: int,
                 seed: int) -> str:
    """``count`` requests, a share malformed, from ``concurrency`` clients: status counts and latency."""
    rng = np.random.default_rng(seed)
    list_len = len(httpx.post(f"{url}/rank", json=bodies[0]).json()["items"])
    bad = malformed_payloads(bodies[0], list_len)
    payloads = [bad[rng.integers(len(bad))] if rng.random() < malformed_share
                else json.dumps(bodies[rng.integers(len(bodies))]).encode() for _ in range(count)]
    statuses, latencies, elapsed = concurrent_posts(url, payloads, concurrency, max_seconds=float("inf"))
    alive = httpx.get(f"{url}/healthz").status_code == 200
    server_errors = sum(n for status, n in statuses.items() if status >= 500 or status == 0)
    lines = [f"## Load test (GoalRank over HTTP): {sum(statuses.values())} requests, "
             f"{concurrency} clients, {elapsed:.1f} s, {sum(statuses.values()) / elapsed:.0f} req/s\n",
             "| status | count |", "|---|---|"]
    lines += [f"| {status or 'no answer'} | {n} |" for status, n in sorted(statuses.items())]
    lines += ["", f"5xx or no answer: {server_errors}; server alive after the test: {alive}; latency p50 "
              f"{np.percentile(latencies, 50):.2f} ms, p95 {np.percentile(latencies, 95):.2f} ms, "
              f"p99 {np.percentile(latencies, 99):.2f} ms"]
    return "\n".join(lines)


def format_latencies(results: list[Latency]) -> str:
    lines = ["| model | backend | path | B / clients | calls | p50 ms | p95 ms | p99 ms | req/s | MFLOPs "
             "| p50 / FLOP limit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        in_process = r.path.startswith("inproc") and r.peak_flops > 0
        limit = f"{r.percentile(50) / (1e3 * r.flops * r.batch_size / r.peak_flops):.1f}×" if in_process else ""
        lines.append(f"| {r.model} | {r.backend} | {r.path} | {r.batch_size} | {len(r.latencies_ms)} |"
                     f" {r.percentile(50):.2f} | {r.percentile(95):.2f} | {r.percentile(99):.2f} |"
                     f" {r.throughput:.0f} | {r.flops / 1e6:.1f} | {limit} |")
    return "\n".join(lines)


def ratio_table(results: list[Latency]) -> str:
    """GoalRank's p50 and p99 over each MG-E build's, path by path (GoalRank on the service's path)."""
    first: dict[tuple[str, str], Latency] = {}
    for r in results:  # each model's first row per path is the service's own path (auto)
        first.setdefault((r.model, r.path), r)
    lines = ["| path | against | GoalRank p50 / MG-E p50 | GoalRank p99 / MG-E p99 |", "|---|---|---|---|"]
    for (model, path), other in first.items():
        goalrank = first.get(("goalrank", path))
        if model in ("mge", "mge-heads") and goalrank is not None:
            lines.append(f"| {path} | {model} | {goalrank.percentile(50) / other.percentile(50):.2f} |"
                         f" {goalrank.percentile(99) / other.percentile(99):.2f} |")
    return "\n".join(lines)
