"""Data-parallel training under ``torchrun``: process group, batch sharding, rank-0 side effects.

``fit`` (loop.py) is written once against the ``Distributed`` context below. In a single process
(WORLD_SIZE unset or 1) every method is the identity, so one loop serves both modes:

- Sharding: every rank walks the same shuffled order of global batches (``Split.batches`` with
  the run's seed) and takes a disjoint contiguous slice of each. Its loss is scaled by
  ``n_rank * W / n_global`` so that DDP's gradient average over the W ranks equals the gradient
  of the global batch's mean loss even when slices differ in size (the last, partial global
  batch). A rank whose slice is empty trains on one row with weight 0. Every objective's loss
  is a mean over requests, which is what makes this weighting exact.
- Side effects: only rank 0 touches the run folder and runs validation; ``on_main`` runs a
  function there and hands every rank its result or its GoalRankError, so ranks never disagree
  about whether to go on.
- Randomness: initial weights come from the shared seed (and DDP broadcasts rank 0's anyway);
  the streams drawn while training (dropout, GoalRank's group construction, the reward model's
  corrupted lists) are seeded by ``rank_seed(seed, rank)``. Rank 0's stream is the
  single-process one, so multi-process GoalRank is equivalent in distribution, not bit for bit,
  to a single process; a model whose loss draws no random numbers (reward model with
  ``negatives=0`` and no dropout, pointwise baselines) reaches the same weights up to float
  rounding of the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from goalrank.data.storage import RankingBatch
from goalrank.errors import ConfigError, GoalRankError
from goalrank.objectives.base import Objective
from goalrank.train.runtime import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: rank, number of processes W, GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> Distributed:
        """The joined process group's ranks, or a single process when none was joined."""
        if not (torch_dist.is_available() and torch_dist.is_initialized()):
            return cls()
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """``train.device`` resolved; under torchrun every CUDA choice becomes this rank's own GPU."""
        device = resolve_device(name)
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, batch: RankingBatch) -> tuple[RankingBatch, float]:
        """This rank's rows of a global batch and the weight of its mean loss (1.0 in one process)."""
        if not self.enabled:
            return batch, 1.0
        size = len(batch)
        lo, hi = size * self.rank // self.world_size, size * (self.rank + 1) // self.world_size
        if hi == lo:
            return batch.select(slice(0, 1)), 0.0
        return batch.select(slice(lo, hi)), (hi - lo) * self.world_size / size

    def wrap(self, model: nn.Module, loss_fn: Objective) -> Objective:
        """``loss_fn`` whose backward all-reduces ``model``'s gradients (DDP) across ranks.

        Objectives call model methods other than ``forward`` (``score``, ``encode``, ...), which
        DDP would not see, so DDP wraps a module whose ``forward`` is the whole objective.
        ``find_unused_parameters`` lets models leave some parameters out of a step's loss.
        """
        if not self.enabled:
            return loss_fn
        return DistributedDataParallel(_ObjectiveModule(model, loss_fn), find_unused_parameters=True)

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every rank: a step is skipped everywhere or nowhere."""
        finite = torch.isfinite(value).all()
        if self.enabled:
            flag = finite.to(torch.int32)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MIN)
            return bool(flag)
        return bool(finite)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-key mean over ranks of weighted sums (see ``shard``): the global batches' mean."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        summed = torch.tensor([values[key] for key in keys], dtype=torch.float64)
        torch_dist.all_reduce(summed)
        return {key: float(total) / self.world_size for key, total in zip(keys, summed, strict=True)}

    def gather(self, value: T) -> list[T]:
        """``value`` of every rank, in rank order (picklable values only)."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every rank returns its result or raises its GoalRankError."""
        if not self.enabled:
            return fn()
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome[0] = (fn(), None)
            except GoalRankError as exc:
                outcome[0] = (None, exc)
        torch_dist.broadcast_object_list(outcome, src=0)
        result, error = outcome[0]
        if error is not None:
            raise error
        return result


SINGLE_PROCESS = Distributed()  # a run outside torchrun: the default of ``fit``


class _ObjectiveModule(nn.Module):
    """``forward(batch)`` = the objective; ``model`` is a submodule so DDP syncs its gradients."""

    def __init__(self, model: nn.Module, loss_fn: Objective) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(batch)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s training streams: ``seed`` itself on rank 0, independent elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


@contextlib.contextmanager
def process_group() -> Iterator[Distributed]:
    """Join the job ``torchrun`` describes in the environment; one process when WORLD_SIZE is unset or 1.

    Rendezvous comes from MASTER_ADDR/MASTER_PORT (or torchrun's c10d rendezvous). CPU tensors
    go through gloo and, where CUDA is present, CUDA tensors through NCCL, so ``train.device``
    may be either.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE/LOCAL_RANK environment variables: expected integers ({exc})") from exc
    if world_size == 1 or torch_dist.is_initialized():
        yield Distributed.current()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        torch_dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        torch_dist.init_process_group("gloo")
    try:
        yield Distributed.current()
        torch_dist.barrier()
    finally:
        # A 2-process run on a busy machine aborted at exit, after writing its run, in 2 of 15
        # tries ("terminate called without an active exception"): DDP's reducer, kept alive by
        # a reference cycle, was freed after the group it uses. Collecting it first (and leaving
        # the group together, barrier above) made 32 tries in a row pass under the same load.
        gc.collect()
        torch_dist.destroy_process_group()
