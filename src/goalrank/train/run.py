"""Training runs: build a model from a dataset and config, fit it, save a self-describing run folder.

A run folder holds ``config.json`` (everything needed to rebuild the model: model name, model
config, training config, dataset path), ``checkpoint.pt`` (best validation weights), ``last.pt``
(the latest training state, to resume from), ``log.jsonl`` (per-epoch metrics) and ``metrics.json``
(validation metrics of the kept checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from goalrank.config import from_dict, to_dict
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ArtifactError, ConfigError
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.groups import GroupConfig
from goalrank.io import read_json, write_recorded_json
from goalrank.models.registry import MODELS
from goalrank.reward.model import RewardConfig, RewardModel
from goalrank.train.distributed import Distributed, rank_seed
from goalrank.train.loop import CHECKPOINT, fit, load_checkpoint
from goalrank.train.objectives import (
    GroupRelativeObjective,
    ModelObjective,
    PointwiseObjective,
    ReferenceConfig,
    RewardObjective,
)
from goalrank.train.runtime import TrainConfig, save_run_config, seed_everything

REWARD = "reward"


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
    select_metric: str = "NDCG"


def _data_fields(dataset: PreparedDataset) -> dict[str, int]:
    return {"n_items": dataset.n_items, "list_len": dataset.list_len}


def build_reward_config(dataset: PreparedDataset, values: dict[str, Any]) -> RewardRunConfig:
    values = {**values, "model": {**_data_fields(dataset), **values.get("model", {})}}
    return from_dict(RewardRunConfig, values)


def build_ranker_config(name: str, dataset: PreparedDataset, values: dict[str, Any]) -> tuple[RankerRunConfig, Any]:
    """The run config and the model's own typed config (validated against the model's class)."""
    if name not in MODELS:
        raise ConfigError(f"--model {name!r}: expected one of {sorted(MODELS) + [REWARD]}")
    run_config = from_dict(RankerRunConfig, values)
    model_values = {**_data_fields(dataset), **run_config.model}
    model_config = from_dict(MODELS[name].config_cls, model_values, "model")
    return dataclasses.replace(run_config, model=to_dict(model_config)), model_config


def train_reward(data_dir: Path, run_dir: Path, values: dict[str, Any], resume: bool = False) -> dict[str, float]:
    """Fit the list-wise reward model on training lists, choose it by validation AUC.

    ``resume`` continues a killed run in ``run_dir`` (its config must be the same). Under
    torchrun, every rank trains and rank 0 writes; all ranks return rank 0's metrics.
    """
    dataset = PreparedDataset(data_dir)
    config = build_reward_config(dataset, values)
    dist = Distributed.current()
    device = dist.device(config.train.device)
    seed_everything(config.train.seed)
    model = RewardModel(config.model).to(device)
    rng = seed_everything(rank_seed(config.train.seed, dist.rank))
    payload = {"model_name": REWARD, "data": str(Path(data_dir).resolve()), **to_dict(config)}
    run_dir = dist.on_main(lambda: open_run_dir(run_dir, payload, resume))
    valid = dataset.split("valid")
    objective = RewardObjective(model, config.negatives, rng)
    fit(model, objective, lambda: {"auc": reward_auc(model, valid, config.train.eval_batch_size, device)},
        "auc", dataset.split("train"), config.train, run_dir, device, rng, resume, dist)

    def final_metrics() -> dict[str, float]:
        metrics = {"valid_auc": reward_auc(model, valid, config.train.eval_batch_size, device),
                   "test_auc": reward_auc(model, dataset.split("test"), config.train.eval_batch_size, device)}
        simulator = simulator_for(dataset)
        if simulator is not None:
            true_reward = TrueReward(simulator, dataset, beam_width=1)
            metrics["spearman_vs_true_reward"] = reward_fidelity(model, dataset.split("test"), true_reward, device)
        write_recorded_json(run_dir / "metrics.json", metrics)
        return metrics

    return dist.on_main(final_metrics)


def train_ranker(name: str, data_dir: Path, run_dir: Path, values: dict[str, Any],
                 reward_dir: Path | None = None, resume: bool = False) -> dict[str, float]:
    """Fit ranker ``name``; GoalRank also needs a trained reward model run (``reward_dir``).

    ``resume`` and torchrun behave as in ``train_reward``.
    """
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
    if spec.objective == "group_relative":
        objective = GroupRelativeObjective(model, evaluator, config.group, config.reference, rng)
    elif spec.objective == "model":
        objective = ModelObjective(model)
    else:
        objective = PointwiseObjective(model)
    payload = {"model_name": name, "data": str(Path(data_dir).resolve()),
               "reward": str(Path(reward_dir).resolve()) if reward_dir else None, **to_dict(config)}
    run_dir = dist.on_main(lambda: open_run_dir(run_dir, payload, resume))
    valid = dataset.split("valid")
    select = f"{config.select_metric}@{dataset.list_len}" if config.select_metric != "AUC" else "AUC"

    def validate() -> dict[str, float]:
        return evaluate_ranker(model, valid, config.train.eval_batch_size, device, progress=False)

    result = fit(model, objective, validate, select, dataset.split("train"), config.train, run_dir, device,
                 rng, resume, dist)
    metrics = {"best_epoch": result.best_epoch, **{f"valid_{k}": v for k, v in result.best_metrics.items()}}
    dist.on_main(lambda: write_recorded_json(run_dir / "metrics.json", metrics))
    return metrics


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from its run folder (config.json + checkpoint.pt, checksum verified)."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    name = config.get("model_name")
    if name == REWARD:
        model: torch.nn.Module = RewardModel(from_dict(RewardConfig, config["model"], "model"))
    elif name in MODELS:
        evaluator = load_reward_model(Path(config["reward"]), device) if MODELS[name].needs_evaluator else None
        model = build_model(name, from_dict(MODELS[name].config_cls, config["model"], "model"), evaluator)
    else:
        raise ArtifactError(f"{run_dir / 'config.json'}: unknown model_name {name!r}")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found (did training finish an epoch?)")
    state = load_checkpoint(path, device)["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: does not match the model in config.json (made by another version?): "
                            f"{str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), config


def build_model(name: str, model_config: Any, evaluator: RewardModel | None) -> torch.nn.Module:
    """Instantiate ranker ``name``; evaluator-based rankers also get the (frozen) reward model."""
    spec = MODELS[name]
    return spec.model_cls(model_config, evaluator) if spec.needs_evaluator else spec.model_cls(model_config)


def load_reward_model(run_dir: Path, device: torch.device) -> RewardModel:
    model, config = load_run(run_dir, device)
    if config["model_name"] != REWARD:
        raise ConfigError(f"--reward {run_dir}: is a {config['model_name']!r} run, expected a reward model")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


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


def pooled_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mann–Whitney AUC over all (positive, negative) pairs; ties count one half."""
    from goalrank.evaluate.metrics import per_list_auc

    return float(per_list_auc(scores[None], labels[None])[0])


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


def open_run_dir(run_dir: Path, config: dict[str, Any], resume: bool = False) -> Path:
    """Create ``run_dir`` and write its config.json; refuse a non-empty folder unless resuming.

    With ``resume``, an existing run folder is reopened only if its config.json equals
    ``config``: a resumed run must train exactly what the interrupted one did.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if resume and saved.is_file():
        differences = _differences(read_json(saved), json.loads(json.dumps(config)))
        if differences:
            raise ConfigError(f"{saved}: --resume needs the run's own config, but " + "; ".join(differences))
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        hint = "it has no config.json to resume from" if resume else "choose another --out or pass --resume"
        raise ArtifactError(f"{run_dir}: run folder exists and is not empty; {hint}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(run_dir, config)
    return run_dir


def _differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """``key: saved X, now Y`` for every (dotted) key whose value differs."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [line for key in sorted(set(saved) | set(now))
                for line in _differences(saved.get(key), now.get(key), f"{where}.{key}" if where else key)]
    return [] if saved == now else [f"{where or 'config'}: saved {saved!r}, now {now!r}"]
