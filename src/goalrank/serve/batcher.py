"""Micro-batching: requests that arrive together run as one model call in one worker thread.

A ranker's cost per request falls steeply with batch size (one encoder pass and L decoder
steps serve the whole batch), so the service gathers requests until ``max_batch`` are waiting
or ``max_wait_s`` has passed since the first one, ranks them in one call, and routes each row
back to its caller's future. The model lives in this one thread, loaded once; the event loop
only validates and waits. Requests with different candidate counts N run as separate calls,
since the ranker takes one (B, N) tensor and padding candidates would change its answer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, fields

import torch

from goalrank.data.storage import RankingBatch
from goalrank.models.base import RankOutput

RankFn = Callable[[RankingBatch], RankOutput]


@dataclass
class _Pending:
    request: RankingBatch
    future: Future[RankOutput]


def concat(batches: list[RankingBatch]) -> RankingBatch:
    """Stack batches with equal shapes (besides B) into one batch."""
    return RankingBatch(**{f.name: torch.cat([getattr(b, f.name) for b in batches]) for f in fields(RankingBatch)})


class MicroBatcher:
    """Gathers single-row requests into batches and ranks them in a dedicated worker thread.

    ``warmup`` (a batch) is ranked once before the first request, so the first caller does
    not pay for lazy initialisation (or compilation); ``ready`` is set after it. ``batch_sizes``
    counts how many model calls ran with each batch size. ``max_batch`` and ``max_wait_s`` come
    from a validated ``ServeConfig`` (the one place the service's settings are checked).
    """

    def __init__(self, rank_fn: RankFn, max_batch: int, max_wait_s: float, warmup: RankingBatch | None = None,
                 poll_s: float = 0.1) -> None:
        self.rank_fn = rank_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.warmup = warmup
        self.poll_s = poll_s
        self.ready = threading.Event()
        self.batch_sizes: Counter[int] = Counter()
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="goalrank-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def submit(self, request: RankingBatch) -> Future[RankOutput]:
        """Queue one request (a batch of one row); the future gets its (1, ·) RankOutput."""
        future: Future[RankOutput] = Future()
        self._queue.put(_Pending(request, future))
        return future

    def _run(self) -> None:
        with torch.inference_mode():
            if self.warmup is not None:
                self.rank_fn(self.warmup)
            self.ready.set()
            while not self._stop.is_set():
                gathered = self._gather()
                groups: dict[tuple[int, ...], list[_Pending]] = {}
                for pending in gathered:
                    if pending.future.set_running_or_notify_cancel():  # skip callers that gave up
                        groups.setdefault(tuple(pending.request.candidates.shape[1:]), []).append(pending)
                for group in groups.values():
                    self._rank_group(group)

    def _gather(self) -> list[_Pending]:
        """Block for a first request, then take more until max_batch or max_wait_s after it."""
        try:
            gathered = [self._queue.get(timeout=self.poll_s)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.max_wait_s
        while len(gathered) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                gathered.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return gathered

    def _rank_group(self, group: list[_Pending]) -> None:
        try:
            output = self.rank_fn(concat([pending.request for pending in group]))
        except Exception as exc:  # a model failure is the callers' 500, never the thread's death
            for pending in group:
                pending.future.set_exception(exc)
            return
        self.batch_sizes[len(group)] += 1
        for row, pending in enumerate(group):
            pending.future.set_result(RankOutput(output.lists[row : row + 1], output.scores[row : row + 1]))
