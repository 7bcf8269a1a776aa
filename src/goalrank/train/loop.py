"""The training loop shared by the reward model, GoalRank and every baseline.

Reads top to bottom: for each epoch, shuffled mini-batches -> loss -> AdamW step; then a
validation pass picks the checkpoint (never the test split) and drives early stopping. A
model plugs in through two callables, so one loop serves every model without subclassing.

Resumable: every ``train.checkpoint_every`` batches and at each epoch end, ``run_dir/last.pt``
records weights, optimizer, RNG states and the ``TrainState`` (epoch, data position, best
value, early-stopping counter), so ``fit(resume=True)`` continues a killed run and reaches the
same weights as an uninterrupted one. Distributed: the loop is written once against
``Distributed`` (distributed.py), whose methods are the identity in a single process.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from goalrank.data.storage import RankingBatch, Split
from goalrank.errors import ArtifactError, ConfigError, GoalRankError
from goalrank.io import read_sha256sums, sha256_file, write_sha256sums
from goalrank.train.distributed import Distributed
from goalrank.train.runtime import RunLog, TrainConfig, autocast, capture_rng, restore_rng

LossFn = Callable[[RankingBatch], tuple[torch.Tensor, dict[str, float]]]
ValidateFn = Callable[[], dict[str, float]]
CHECKPOINT = "checkpoint.pt"
LAST = "last.pt"
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
    """

    epoch: int = 0
    position: int = 0
    steps: int = 0
    totals: dict[str, float] = field(default_factory=dict)
    best_value: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    stale: int = 0
    nonfinite: int = 0
    log_bytes: int = 0


def checksum_path(path: Path) -> Path:
    """The file beside checkpoint ``path`` that records its SHA-256 (``checkpoint.pt.sha256``)."""
    return path.with_name(f"{path.name}.sha256")


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through a temporary file and rename, with the file's SHA-256 recorded beside it.

    The rename means a crash never leaves a half-written ``path``; the checksum, one
    ``sha256sum`` line (``sha256sum -c`` checks it in the run folder), catches what a rename
    cannot: a file truncated or altered afterwards (a full disk on copy, bit rot, a power loss
    before the data reached the disk). Checkpoint and record cannot be replaced in one step, so
    while the rename is in flight the record lists both the new and the previous digest: a
    process killed at any moment leaves a checkpoint that still verifies.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(payload, tmp)
        digest = sha256_file(tmp)
        _write_digests(path, [digest, *(d for d in _recorded_digests(path) if d != digest)])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _write_digests(path, [digest])


def verify_checkpoint(path: Path) -> None:
    """Raise ArtifactError naming ``path`` unless its SHA-256 is one ``save_checkpoint`` recorded."""
    record = checksum_path(path)
    if not record.is_file():
        raise ArtifactError(f"{record}: checksum file not found, so {path.name} cannot be verified "
                            "(written by an older goalrank?); retrain the run")
    digests = _recorded_digests(path)
    if not digests:
        raise ArtifactError(f"{record}: expected lines '<64 hex digits>  {path.name}'")
    actual = sha256_file(path)
    if actual not in digests:
        raise ArtifactError(f"{path}: unreadable checkpoint (SHA-256 {actual[:12]}... differs from the "
                            f"{digests[0][:12]}... recorded in {record.name}: the file is truncated or corrupted)")


def _recorded_digests(path: Path) -> list[str]:
    """The digests recorded for checkpoint ``path``: one, or two while a save was in flight."""
    return [digest for digest, _ in read_sha256sums(checksum_path(path))]


def _write_digests(path: Path, digests: list[str]) -> None:
    write_sha256sums(checksum_path(path), [(digest, path.name) for digest in digests])


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Verify a checkpoint's checksum, then load it; any failure is an ArtifactError naming the file."""
    verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: unreadable checkpoint ({exc})") from exc


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    validate: ValidateFn,
    select_metric: str,
    train_split: Split,
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    rng: torch.Generator | None = None,
    resume: bool = False,
    dist: Distributed = Distributed(),
) -> FitResult:
    """Train ``model`` with AdamW; keep the weights of the best validation ``select_metric``.

    ``loss_fn`` maps a batch (already on ``device``) to (loss, stats to log), both means over the
    batch's requests; ``validate`` returns validation metrics, higher ``select_metric`` is
    better. ``rng`` is the generator ``loss_fn`` draws from, saved with the checkpoints. The best
    weights are saved to ``run_dir/checkpoint.pt`` and loaded back into ``model`` before
    returning. ``resume`` continues from ``run_dir/last.pt`` when it exists. Under ``dist``, each
    rank trains on its shard of every global batch of ``config.batch_size`` requests and rank 0
    alone validates and writes.
    """
    run_dir = Path(run_dir)
    log = RunLog(run_dir, enabled=dist.is_main)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    state = _resume(run_dir / LAST, model, optimizer, rng, device, log, dist) if resume else TrainState()
    step_loss = dist.wrap(model, loss_fn)

    def save_last() -> None:
        per_rank = dist.gather({"rng": capture_rng(rng, device), "totals": state.totals})
        state.log_bytes = log.size()
        if dist.is_main:
            save_checkpoint(run_dir / LAST, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "state": asdict(state), "ranks": per_rank,
                                             "world_size": dist.world_size})

    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    while state.epoch < config.epochs and state.stale < config.patience:
        model.train()
        batches = train_split.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + state.epoch,
                                      start=state.position)
        bar = tqdm(batches, total=steps_per_epoch, initial=state.steps, leave=False, disable=not dist.is_main,
                   desc=f"epoch {state.epoch + 1}/{config.epochs}")
        for batch in bar:
            if state.steps >= steps_per_epoch:
                break
            state.position += 1
            shard, weight = dist.shard(batch)
            with autocast(device, config.precision):
                loss, stats = step_loss(shard.to(device))
            optimizer.zero_grad(set_to_none=True)
            if not dist.all_finite(loss):
                _skip_step(log, state, "loss")
                continue
            (loss * weight).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
            if not torch.isfinite(grad_norm):
                _skip_step(log, state, "gradient")
                continue
            optimizer.step()
            state.steps += 1
            for key, value in {"loss": loss.item(), **stats}.items():
                state.totals[key] = state.totals.get(key, 0.0) + weight * value
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if config.checkpoint_every and state.position % config.checkpoint_every == 0 \
                    and state.steps < steps_per_epoch:
                save_last()
        _end_epoch(model, validate, select_metric, state, log, run_dir, dist)
        save_last()
    best = dist.on_main(lambda: load_checkpoint(run_dir / CHECKPOINT))
    model.load_state_dict(best["model"])
    return FitResult(best_epoch=state.best_epoch, best_metrics=state.best_metrics, epochs_run=state.epoch)


def _end_epoch(model: nn.Module, validate: ValidateFn, select_metric: str, state: TrainState, log: RunLog,
               run_dir: Path, dist: Distributed) -> None:
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
    value = metrics[select_metric]
    if dist.is_main:
        tqdm.write(f"epoch {epoch}: train loss {train_stats.get('train_loss', float('nan')):.4f}, "
                   f"valid {select_metric} {value:.4f}")
    if value > state.best_value:
        state.best_value, state.stale = value, 0
        state.best_epoch, state.best_metrics = epoch, metrics
        if dist.is_main:
            save_checkpoint(run_dir / CHECKPOINT, {"model": model.state_dict(), "epoch": epoch, "valid": metrics})
    else:
        state.stale += 1
    state.epoch, state.position, state.steps, state.totals = epoch, 0, 0, {}


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rng: torch.Generator | None,
            device: torch.device, log: RunLog, dist: Distributed) -> TrainState:
    """Restore weights, optimizer, this rank's RNG streams and stat totals, and the TrainState, from ``last.pt``.

    Without ``last.pt`` (killed before the first checkpoint) training starts over in the folder.
    """
    payload = dist.on_main(lambda: load_checkpoint(path) if path.is_file() else None)
    if payload is None:
        state = TrainState()
    else:
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


def _skip_step(log: RunLog, state: TrainState, what: str) -> None:
    """Log a skipped non-finite step; abort once there have been too many."""
    state.nonfinite += 1
    log.write(event="skipped_step", epoch=state.epoch + 1, step=state.steps, reason=f"non-finite {what}")
    if state.nonfinite > MAX_NONFINITE_STEPS:
        raise TrainingDiverged(
            f"{state.nonfinite} steps had a non-finite {what}; aborting (lower train.lr or check the data)"
        )
