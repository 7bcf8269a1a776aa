"""Training runs: build a model from a dataset and config, fit it, save a self-describing run folder.

The folder's files are named by ``runs.folder.RunFolder``; ``runs.load`` rebuilds the model from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from goalrank.config import from_dict, to_dict
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ConfigError
from goalrank.evaluate.metrics import pooled_auc
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.groups import GroupConfig
from goalrank.io import exclusive_lock, write_recorded_json
from goalrank.models.blocks import ModelConfig
from goalrank.objectives.base import ObjectiveInputs
from goalrank.objectives.reference import ReferenceConfig
from goalrank.objectives.reward import RewardObjective
from goalrank.reward.model import RewardConfig, RewardModel
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import REWARD, build_model, data_fields, data_record, load_reward_model, reward_record
from goalrank.runs.registry import MODELS
from goalrank.train.distributed import Distributed, rank_seed
from goalrank.train.loop import fit
from goalrank.train.runtime import TrainConfig, seed_everything


@dataclass
class RewardRunConfig:
    """``goalrank train --model reward``: the reward model and how it is trained."""

    model: RewardConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    negatives: float = 0.5


@dataclass
class RankerRunConfig:
    """``goalrank train --model NAME`` for rankers; ``group``/``reference`` are used by GoalRank."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    select_metric: Literal["H", "NDCG", "MAP", "F1", "AUC"] = "NDCG"


def run_lock(run_dir: Path) -> contextlib.ExitStack:
    """Rank 0 holds ``RunFolder.lock`` while it trains: a second ``train`` (or ``--resume``) of the
    same folder fails at once with one clear error instead of appending every epoch twice.

    Under torchrun every rank raises that error (``Distributed.on_main``), so each ends with the
    one error line instead of the other ranks waiting for rank 0 and dying with a traceback.
    """
    held = contextlib.ExitStack()

    def take() -> None:
        run = RunFolder(run_dir)
        run.root.parent.mkdir(parents=True, exist_ok=True)
        held.enter_context(exclusive_lock(run.lock, f"{run.root}: another goalrank process is training this run"))

    Distributed.current().on_main(take)
    return held


def _data_fields(dataset: PreparedDataset, model_values: dict[str, Any]) -> dict[str, Any]:
    """``model_values`` with the fields the dataset decides (items, L); a different value set by
    hand is refused before any work, not met by an index error after an epoch."""
    fields = data_fields(dataset)
    for name, value in fields.items():
        if name in model_values and str(model_values[name]) != str(value):
            raise ConfigError(f"model.{name}={model_values[name]!r}: set by the dataset {dataset.root} "
                              f"({value}); leave it out")
    return {**model_values, **fields}


def build_reward_config(dataset: PreparedDataset, values: dict[str, Any]) -> RewardRunConfig:
    values = {**values, "model": _data_fields(dataset, values.get("model", {}))}
    return from_dict(RewardRunConfig, values)


def build_ranker_config(name: str, dataset: PreparedDataset,
                        values: dict[str, Any]) -> tuple[RankerRunConfig, ModelConfig]:
    """The run config and the model's own typed config (validated against the model's class)."""
    if name not in MODELS:
        raise ConfigError(f"--model {name!r}: expected one of {sorted(MODELS) + [REWARD]}")
    run_config = from_dict(RankerRunConfig, values)
    if MODELS[name].objective.uses_groups:
        run_config.group.check_fits(dataset.n_candidates, dataset.list_len)
    model_values = _data_fields(dataset, run_config.model)
    model_config = from_dict(MODELS[name].config_cls, model_values, "model")
    return dataclasses.replace(run_config, model=to_dict(model_config)), model_config


def train_reward(data_dir: Path, run_dir: Path, values: dict[str, Any], resume: bool = False) -> dict[str, float]:
    """Fit the list-wise reward model on training lists, choose it by validation AUC.

    ``resume`` continues a killed run in ``run_dir`` (its config must be the same). Under
    torchrun, every rank trains and rank 0 writes; all ranks return rank 0's metrics. The run
    folder is locked while training (``run_lock``).
    """
    with run_lock(run_dir):
        return _train_reward(data_dir, run_dir, values, resume)


def _train_reward(data_dir: Path, run_dir: Path, values: dict[str, Any], resume: bool) -> dict[str, float]:
    dataset = PreparedDataset(data_dir)
    config = build_reward_config(dataset, values)
    dist = Distributed.current()
    device = dist.device(config.train.device)
    seed_everything(config.train.seed)
    model = RewardModel(config.model).to(device)
    rng = seed_everything(rank_seed(config.train.seed, dist.rank))
    payload = {"model_name": REWARD, **data_record(dataset), **to_dict(config)}
    run = RunFolder(run_dir)
    valid = dataset.split("valid")
    objective = RewardObjective(model, config.negatives, rng)

    def final_metrics() -> dict[str, float]:
        metrics = {"valid_auc": reward_auc(model, valid, config.train.eval_batch_size, device),
                   "test_auc": reward_auc(model, dataset.split("test"), config.train.eval_batch_size, device)}
        simulator = simulator_for(dataset)
        if simulator is not None:
            true_reward = TrueReward(simulator, dataset, beam_width=1)
            metrics["spearman_vs_true_reward"] = reward_fidelity(model, dataset.split("test"), true_reward, device)
        write_recorded_json(run.metrics, metrics)
        return metrics

    with _opened(run, payload, resume, dist):
        fit(model, objective, lambda: {"auc": reward_auc(model, valid, config.train.eval_batch_size, device)},
            "auc", dataset.split("train"), config.train, run, device, rng, resume, dist)
        return dist.on_main(final_metrics)


def train_ranker(name: str, data_dir: Path, run_dir: Path, values: dict[str, Any],
                 reward_dir: Path | None = None, resume: bool = False) -> dict[str, float]:
    """Fit ranker ``name``; GoalRank also needs a trained reward model run (``reward_dir``).

    ``resume``, torchrun and the lock behave as in ``train_reward``.
    """
    with run_lock(run_dir):
        return _train_ranker(name, data_dir, run_dir, values, reward_dir, resume)


def _train_ranker(name: str, data_dir: Path, run_dir: Path, values: dict[str, Any], reward_dir: Path | None,
                  resume: bool) -> dict[str, float]:
    dataset = PreparedDataset(data_dir)
    config, model_config = build_ranker_config(name, dataset, values)
    spec = MODELS[name]
    dist = Distributed.current()
    device = dist.device(config.train.device)
    seed_everything(config.train.seed)
    evaluator = None
    if spec.uses_reward_model:
        if reward_dir is None:
            raise ConfigError(f"--model {name}: needs --reward RUN_DIR (a trained reward model)")
        evaluator = load_reward_model(reward_dir, device)
    model = build_model(name, model_config, evaluator).to(device)
    rng = seed_everything(rank_seed(config.train.seed, dist.rank))
    objective = spec.objective.build(ObjectiveInputs(model, evaluator, config.group, config.reference, rng))
    payload = {"model_name": name, **data_record(dataset), **reward_record(reward_dir), **to_dict(config)}
    run = RunFolder(run_dir)
    valid = dataset.split("valid")
    select = f"{config.select_metric}@{dataset.list_len}" if config.select_metric != "AUC" else "AUC"

    def validate() -> dict[str, float]:
        return evaluate_ranker(model, valid, config.train.eval_batch_size, device, progress=False)

    with _opened(run, payload, resume, dist):
        result = fit(model, objective, validate, select, dataset.split("train"), config.train, run, device,
                     rng, resume, dist)
        metrics = {"best_epoch": result.best_epoch, **{f"valid_{k}": v for k, v in result.best_metrics.items()}}
        dist.on_main(lambda: write_recorded_json(run.metrics, metrics))
    return metrics


def _opened(run: RunFolder, payload: dict[str, Any], resume: bool,
            dist: Distributed) -> contextlib.AbstractContextManager[None]:
    """Rank 0 opens the run folder (every rank sees its refusal) and holds it to
    ``RunFolder.resumable_or_removed`` while the run trains."""
    started_here = dist.on_main(lambda: run.open(payload, resume))
    return run.resumable_or_removed(started_here) if dist.is_main else contextlib.nullcontext()


@torch.no_grad()
def reward_auc(model: RewardModel, split: Any, batch_size: int, device: torch.device) -> float:
    """Per-item AUC of the reward model's predictions on the logged lists of ``split``."""
    model.eval()
    scores, labels = [], []
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        scores.append(model.item_logits(batch, batch.exposed[:, None])[:, 0].flatten().cpu())
        labels.append(torch.gather(batch.labels, 1, batch.exposed).flatten().cpu())
    return pooled_auc(torch.cat(scores), torch.cat(labels))


@torch.no_grad()
def reward_fidelity(model: RewardModel, split: Any, true_reward: TrueReward, device: torch.device,
                    lists_per_request: int = 8, max_requests: int = 512, seed: int = 0) -> float:
    """Mean per-request Spearman correlation of estimated vs true reward over random lists."""
    generator = torch.Generator().manual_seed(seed)
    batch = split.batch(slice(0, max_requests)).to(device)
    size, n_candidates = batch.candidates.shape
    noise = torch.rand(size, lists_per_request, n_candidates, generator=generator)
    lists = noise.argsort(dim=2)[..., : model.config.list_len].to(device)  # (B, K, L) random lists
    estimated = model.list_reward(batch, lists).cpu()
    true = true_reward.of_lists(batch, lists).cpu()
    return float(_row_spearman(estimated, true).mean())


def _row_spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman correlation of each row of x and y (B, K); continuous rewards have no ties."""
    a, b = (v.argsort(dim=1).argsort(dim=1).double() for v in (x, y))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
