"""The training loop shared by the reward model, GoalRank and every baseline.

Reads top to bottom: for each epoch, shuffled mini-batches -> loss -> AdamW step; then a
validation pass picks the checkpoint (never the test split) and drives early stopping. A
model plugs in through two callables, so one loop serves every model without subclassing.

Resumable: every ``train.checkpoint_every`` batches and at each epoch end, the run's ``last.pt``
records weights, optimizer, RNG states and the ``TrainState`` (epoch, data position, best
value, early-stopping counter), so ``fit(resume=True)`` continues a killed run and reaches the
same weights as an uninterrupted one. Distributed: the loop is written once against
``Distributed`` (distributed.py), whose methods are the identity in a single process.

Watched: besides ``log.jsonl``, rank 0 writes the curves as TensorBoard events (``TrainingCurves``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from goalrank.data.storage import Split
from goalrank.errors import ConfigError, GoalRankError
from goalrank.objectives.base import Objective
from goalrank.progress import progress
from goalrank.runs.checkpoint import load_checkpoint, save_checkpoint
from goalrank.runs.folder import RunFolder
from goalrank.train.distributed import SINGLE_PROCESS, Distributed
from goalrank.train.runtime import RunLog, TrainConfig, autocast, capture_rng, restore_rng

ValidateFn = Callable[[], dict[str, float]]
MAX_NONFINITE_STEPS = 10


class TrainingDiverged(GoalRankError):
    """Too many steps produced a non-finite loss or gradient."""


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int


@dataclass
class TrainState:
    """Where training stands, besides weights, optimizer and RNGs: what ``last.pt`` must restore.

    ``position`` counts the current epoch's global batches consumed (stepped or skipped), the
    ``start`` of ``Split.batches`` on resume; ``steps`` counts its optimizer steps and ``totals``
    its summed training stats; ``log_bytes`` is the size of log.jsonl when the state was saved.
    ``batches`` counts the global batches consumed over all epochs: the x axis of the curves.
    """

    epoch: int = 0
    position: int = 0
    batches: int = 0
    steps: int = 0
    totals: dict[str, float] = field(default_factory=dict)
    best_value: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    stale: int = 0
    nonfinite: int = 0
    log_bytes: int = 0


class TrainingCurves(contextlib.AbstractContextManager["TrainingCurves"]):
    """TensorBoard scalars of one run, written under ``logdir`` (``RunFolder.tensorboard``).

    Tags, at global step ``TrainState.batches``: per optimizer step ``train/loss``, ``train/<stat>``
    for every stat of the objective (GoalRank's ``group_reward``, ``group_reward_std`` (σ_G) and
    ``reference_entropy`` (of π_ref), ...), ``train/lr`` and ``train/step_time_s`` (host wall time of
    forward, backward and update); ``train/nonfinite_skips`` (the running count) at each skipped step
    and each epoch end; per epoch ``valid/<metric>`` and ``valid/time_s``. These are rank 0's own
    numbers (its shard of the batch under torchrun). ``purge_step`` hides the events a killed run
    wrote after its last checkpoint, which the resumed run replays. Disabled, every call is a no-op
    and tensorboard is never imported.
    """

    def __init__(self, logdir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def add(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.writer is not None:
            self.writer.close()


def fit(
    model: nn.Module,
    loss_fn: Objective,
    validate: ValidateFn,
    select_metric: str,
    train_split: Split,
    config: TrainConfig,
    run: RunFolder,
    device: torch.device,
    rng: torch.Generator | None = None,
    resume: bool = False,
    dist: Distributed = SINGLE_PROCESS,
) -> FitResult:
    """Train ``model`` with AdamW; keep the weights of the best validation ``select_metric``.

    ``loss_fn`` maps a batch (already on ``device``) to (loss, stats to log), both means over the
    batch's requests; ``validate`` returns validation metrics, higher ``select_metric`` is
    better. ``rng`` is the generator ``loss_fn`` draws from, saved with the checkpoints. The best
    weights are saved to ``run.checkpoint`` and loaded back into ``model`` before
    returning. ``resume`` continues from ``run.last`` when it exists. Under ``dist``, each
    rank trains on its shard of every global batch of ``config.batch_size`` requests and rank 0
    alone validates and writes.
    """
    log = RunLog(run.log, enabled=dist.is_main)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    state = _resume(run.last, model, optimizer, rng, device, log, dist) if resume else TrainState()
    step_loss = dist.wrap(model, loss_fn)

    def save_last() -> None:
        per_rank = dist.gather({"rng": capture_rng(rng, device), "totals": state.totals})
        state.log_bytes = log.size()
        if dist.is_main:
            save_checkpoint(run.last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "state": asdict(state), "ranks": per_rank,
                                             "world_size": dist.world_size})

    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    curves = TrainingCurves(run.tensorboard, config.tensorboard and dist.is_main,
                            purge_step=state.batches + 1 if resume else None)
    with curves:
        while state.epoch < config.epochs and state.stale < config.patience:
            model.train()
            batches = train_split.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + state.epoch,
                                          start=state.position)
            bar = progress(batches, f"epoch {state.epoch + 1}/{config.epochs}", steps_per_epoch, "step",
                           state.position, enabled=dist.is_main)
            for batch in bar:
                if state.steps >= steps_per_epoch:
                    break
                start = time.perf_counter()
                state.position += 1
                state.batches += 1
                shard, weight = dist.shard(batch)
                with autocast(device, config.precision):
                    loss, stats = step_loss(shard.to(device))
                optimizer.zero_grad(set_to_none=True)
                if not dist.all_finite(loss):
                    _skip_step(log, curves, state, "loss")
                    continue
                (loss * weight).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
                if not torch.isfinite(grad_norm):
                    _skip_step(log, curves, state, "gradient")
                    continue
                optimizer.step()
                state.steps += 1
                values = {"loss": loss.item(), **stats}
                for key, value in values.items():
                    state.totals[key] = state.totals.get(key, 0.0) + weight * value
                curves.add("train", {**values, "lr": optimizer.param_groups[0]["lr"],
                                     "step_time_s": time.perf_counter() - start}, state.batches)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                if config.checkpoint_every and state.position % config.checkpoint_every == 0 \
                        and state.steps < steps_per_epoch:
                    save_last()
            _end_epoch(model, validate, select_metric, state, log, curves, run, dist)
            save_last()
    best = dist.on_main(lambda: load_checkpoint(run.checkpoint))
    model.load_state_dict(best["model"])
    return FitResult(best_epoch=state.best_epoch, best_metrics=state.best_metrics, epochs_run=state.epoch)


def _end_epoch(model: nn.Module, validate: ValidateFn, select_metric: str, state: TrainState, log: RunLog,
               curves: TrainingCurves, run: RunFolder, dist: Distributed) -> None:
    """Validate (rank 0), log the epoch, keep the best weights, count epochs without improvement."""
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        metrics = dist.on_main(validate)
    valid_s = round(time.perf_counter() - start, 3)  # `benchmark --estimate` splits an epoch's time with it
    train_stats = {f"train_{k}": v / max(state.steps, 1) for k, v in dist.mean(state.totals).items()}
    epoch = state.epoch + 1
    log.write(epoch=epoch, steps=state.steps, valid_s=valid_s, **train_stats,
              **{f"valid_{k}": v for k, v in metrics.items()})
    curves.add("valid", {**metrics, "time_s": valid_s}, state.batches)
    curves.add("train", {"nonfinite_skips": state.nonfinite}, state.batches)
    value = metrics[select_metric]
    if dist.is_main:
        tqdm.write(f"epoch {epoch}: train loss {train_stats.get('train_loss', float('nan')):.4f}, "
                   f"valid {select_metric} {value:.4f}")
    if value > state.best_value:
        state.best_value, state.stale = value, 0
        state.best_epoch, state.best_metrics = epoch, metrics
        if dist.is_main:
            save_checkpoint(run.checkpoint, {"model": model.state_dict(), "epoch": epoch, "valid": metrics})
    else:
        state.stale += 1
    state.epoch, state.position, state.steps, state.totals = epoch, 0, 0, {}


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rng: torch.Generator | None,
            device: torch.device, log: RunLog, dist: Distributed) -> TrainState:
    """Restore weights, optimizer, this rank's RNG streams and stat totals, and the TrainState, from ``last.pt``.

    Without ``last.pt`` (a new run, or one killed before its first checkpoint) training starts over
    in the folder, and no ``resumed`` event is logged: the learning curve reads one as the start of
    another process's wall time.
    """
    payload = dist.on_main(lambda: load_checkpoint(path) if path.is_file() else None)
    if payload is None:
        log.truncate(0)
        return TrainState()
    if payload["world_size"] != dist.world_size:
        raise ConfigError(f"{path}: saved by {payload['world_size']} process(es), resumed with "
                          f"{dist.world_size}; resume with the same torchrun --nproc_per_node/--nnodes")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    mine = payload["ranks"][dist.rank]
    restore_rng(mine["rng"], rng, device)
    state = TrainState(**{**payload["state"], "totals": mine["totals"]})
    log.truncate(state.log_bytes)
    log.write(event="resumed", epoch=state.epoch + 1, position=state.position)
    return state


def _skip_step(log: RunLog, curves: TrainingCurves, state: TrainState, what: str) -> None:
    """Log a skipped non-finite step; abort once there have been too many."""
    state.nonfinite += 1
    log.write(event="skipped_step", epoch=state.epoch + 1, step=state.steps, reason=f"non-finite {what}")
    curves.add("train", {"nonfinite_skips": state.nonfinite}, state.batches)
    if state.nonfinite > MAX_NONFINITE_STEPS:
        raise TrainingDiverged(
            f"{state.nonfinite} steps had a non-finite {what}; aborting (lower train.lr or check the data)"
        )
