"""Micro-batcher: gathers waiting requests into one call, groups by candidate count, routes rows back."""

from __future__ import annotations

import pytest
import torch

from goalrank.data.storage import RankingBatch
from goalrank.models.base import RankOutput
from goalrank.serve.batcher import MicroBatcher


def request(first_item: int, n_candidates: int) -> RankingBatch:
    """One request whose candidates are first_item, first_item + 1, ...: its answer identifies it."""
    candidates = torch.arange(first_item, first_item + n_candidates)[None]  # (1, N)
    return RankingBatch(torch.zeros(1, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long),
                        torch.zeros(1, 2, dtype=torch.long), candidates, torch.zeros(1, n_candidates),
                        torch.zeros(1, 2, dtype=torch.long))


class Recorder:
    """A fake ranker: lists = the two highest-valued candidates' positions; records call shapes."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, batch: RankingBatch) -> RankOutput:
        self.calls.append(tuple(batch.candidates.shape))
        scores = batch.candidates.float()  # (B, N)
        return RankOutput(lists=scores.topk(2, dim=1).indices, scores=scores)


def test_waiting_requests_share_calls_of_at_most_max_batch() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=4, max_wait_s=0.05)
    futures = [batcher.submit(request(10 * k, 5)) for k in range(10)]  # all queued before the worker starts
    batcher.start()
    outputs = [future.result(timeout=10) for future in futures]
    batcher.stop()
    assert recorder.calls == [(4, 5), (4, 5), (2, 5)]
    assert batcher.batch_sizes == {4: 2, 2: 1}
    for k, output in enumerate(outputs):
        assert output.lists.tolist() == [[4, 3]]
        assert output.scores.tolist() == [[10.0 * k + i for i in range(5)]]  # its own row


def test_requests_with_different_candidate_counts_run_separately() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=8, max_wait_s=0.05)
    futures = [batcher.submit(request(0, n)) for n in (3, 5, 3, 5, 5)]
    batcher.start()
    outputs = [future.result(timeout=10) for future in futures]
    batcher.stop()
    assert sorted(recorder.calls) == [(2, 3), (3, 5)]
    assert [o.lists.tolist() for o in outputs] == [[[2, 1]], [[4, 3]], [[2, 1]], [[4, 3]], [[4, 3]]]


def test_warm_up_runs_before_ready_and_failures_reach_every_caller() -> None:
    def failing(batch: RankingBatch) -> RankOutput:
        if batch.candidates.shape[1] == 7:
            raise RuntimeError("model failed")
        return Recorder()(batch)

    batcher = MicroBatcher(failing, max_batch=8, max_wait_s=0.05, warmup=request(0, 3))
    futures = [batcher.submit(request(0, 7)) for _ in range(3)]
    cancelled = batcher.submit(request(0, 3))
    assert cancelled.cancel()
    batcher.start()
    assert batcher.ready.wait(timeout=10)
    for future in futures:
        with pytest.raises(RuntimeError, match="model failed"):
            future.result(timeout=10)
    assert batcher.submit(request(0, 3)).result(timeout=10).lists.tolist() == [[2, 1]]  # the worker lives on
    batcher.stop()
    assert batcher.batch_sizes == {1: 1}  # the cancelled request never ran
