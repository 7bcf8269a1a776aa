"""The training loop shared by the reward model, GoalRank and every baseline.

Reads top to bottom: for each epoch, shuffled mini-batches -> loss -> AdamW step; then a
validation pass picks the checkpoint (never the test split) and drives early stopping. A
model plugs in through two callables, so one loop serves every model without subclassing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from goalrank.data.storage import RankingBatch, Split
from goalrank.errors import GoalRankError
from goalrank.train.runtime import RunLog, TrainConfig

LossFn = Callable[[RankingBatch], tuple[torch.Tensor, dict[str, float]]]
ValidateFn = Callable[[], dict[str, float]]
CHECKPOINT = "checkpoint.pt"
MAX_NONFINITE_STEPS = 10


class TrainingDiverged(GoalRankError):
    """Too many steps produced a non-finite loss or gradient."""


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through a temporary file and rename: a crash never leaves a truncated checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    validate: ValidateFn,
    select_metric: str,
    train_split: Split,
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
) -> FitResult:
    """Train ``model`` with AdamW; keep the weights of the best validation ``select_metric``.

    ``loss_fn`` maps a batch (already on ``device``) to (loss, stats to log); ``validate``
    returns validation metrics, higher ``select_metric`` is better. The best weights are saved
    to ``run_dir/checkpoint.pt`` and loaded back into ``model`` before returning.
    """
    run_dir = Path(run_dir)
    log = RunLog(run_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    best = FitResult(best_epoch=-1, best_metrics={}, epochs_run=0)
    best_value, stale, nonfinite = -math.inf, 0, 0
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    for epoch in range(config.epochs):
        model.train()
        totals: dict[str, float] = {}
        steps = 0
        batches = train_split.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + epoch)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        for batch in bar:
            if steps >= steps_per_epoch:
                break
            loss, stats = loss_fn(batch.to(device))
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                nonfinite = _skip_step(log, epoch, steps, "loss", nonfinite)
                continue
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
            if not torch.isfinite(grad_norm):
                nonfinite = _skip_step(log, epoch, steps, "gradient", nonfinite)
                continue
            optimizer.step()
            steps += 1
            for key, value in {"loss": loss.item(), **stats}.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.set_postfix(loss=f"{totals['loss'] / steps:.4f}")
        model.eval()
        with torch.no_grad():
            metrics = validate()
        train_stats = {f"train_{k}": v / max(steps, 1) for k, v in totals.items()}
        log.write(epoch=epoch + 1, steps=steps, **train_stats, **{f"valid_{k}": v for k, v in metrics.items()})
        best.epochs_run = epoch + 1
        value = metrics[select_metric]
        tqdm.write(f"epoch {epoch + 1}: train loss {train_stats.get('train_loss', float('nan')):.4f}, "
                   f"valid {select_metric} {value:.4f}")
        if value > best_value:
            best_value, stale = value, 0
            best.best_epoch, best.best_metrics = epoch + 1, metrics
            save_checkpoint(run_dir / CHECKPOINT, {"model": model.state_dict(), "epoch": epoch + 1,
                                                  "valid": metrics})
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(torch.load(run_dir / CHECKPOINT, map_location=device)["model"])
    return best


def _skip_step(log: RunLog, epoch: int, step: int, what: str, count: int) -> int:
    """Log a skipped non-finite step; abort once there have been too many."""
    count += 1
    log.write(event="skipped_step", epoch=epoch + 1, step=step, reason=f"non-finite {what}")
    if count > MAX_NONFINITE_STEPS:
        raise TrainingDiverged(
            f"{count} steps had a non-finite {what}; aborting (lower train.lr or check the data)"
        )
    return count
