"""Rebuild a trained model from its run folder: ``config.json`` + the checksum-verified ``checkpoint.pt``.

Below ``train``: the service, the evaluation and the benchmark load runs through here without
importing the training code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from goalrank.config import from_dict
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ArtifactError, ConfigError
from goalrank.evaluate.protocol import OracleEvaluator, exact_reward
from goalrank.io import sha256_file
from goalrank.models.base import ListEvaluator, Ranker
from goalrank.models.blocks import ModelConfig
from goalrank.models.mge import MultiGenerator
from goalrank.reward.model import RewardConfig, RewardModel
from goalrank.runs.checkpoint import load_checkpoint
from goalrank.runs.folder import RunFolder
from goalrank.runs.registry import MODELS

REWARD = "reward"  # the model name of a reward-model run
ORACLE = "oracle"  # ``--reward oracle``: the simulator's exact list reward is the evaluator
ENSEMBLE = "mge-ensemble"  # the model name of a multi-generator run (runs/ensemble.py)


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[Ranker | RewardModel, dict[str, Any]]:
    """The trained model of ``run_dir`` in eval mode on ``device``, and the run's config."""
    run = RunFolder(run_dir)
    config = run.read_config()
    name = config.get("model_name")
    model: Ranker | RewardModel
    if name == REWARD:
        if "n_users" not in config["model"]:
            raise ArtifactError(f"{run.config}: a reward model of an earlier goalrank version (before history "
                                "attention and user ids); train it again")
        model = RewardModel(from_dict(RewardConfig, config["model"], "model"))
    elif name == ENSEMBLE:
        model = build_ensemble(config, device)
    elif name in MODELS:
        evaluator = (load_evaluator(config["reward"], lambda: run_dataset(config), device, config.get("reward_sha256"))
                     if MODELS[name].needs_evaluator else None)
        model = build_model(name, from_dict(MODELS[name].config_cls, config["model"], "model"), evaluator)
    else:
        raise ArtifactError(f"{run.config}: unknown model_name {name!r}")
    if not run.checkpoint.is_file():
        raise ArtifactError(f"{run.checkpoint}: checkpoint not found (did training finish an epoch?)")
    state = load_checkpoint(run.checkpoint, device)["model"]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a weight of another shape
        raise _mismatch(run, config, _first_detail(exc)) from exc
    if missing or unexpected:
        raise _mismatch(run, config, f"weights missing from it: {_some(missing)}; weights it has that the model "
                                     f"lacks: {_some(unexpected)}")
    return model.to(device).eval(), config


def _mismatch(run: RunFolder, config: dict[str, Any], detail: str) -> ArtifactError:
    """The error of a checkpoint that does not fit the model its config.json describes.

    The usual cause is a run of an earlier goalrank whose config.json lacks a field added since:
    today's default fills it in, and where that default adds or removes a module (GoalRank's
    ``user_embedding``, on by default since 2026-12-02) the weights no longer fit. Naming those
    fields says what to set in the config, or that the run must be trained again.
    """
    name = config.get("model_name")
    config_cls = RewardConfig if name == REWARD else MODELS[name].config_cls if name in MODELS else None
    absent = ([f"model.{field.name}={field.default!r}" for field in dataclasses.fields(config_cls)
               if field.init and field.name not in config.get("model", {})]
              if config_cls is not None else [])
    hint = (f"; its config.json lacks {', '.join(absent)} (today's defaults, filled in): a run of an earlier "
            "goalrank, train it again" if absent else "")
    return ArtifactError(f"{run.checkpoint}: does not fit the model its config.json describes ({detail}){hint}")


def _some(keys: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``keys``, and how many more (``none`` when empty)."""
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _first_detail(exc: RuntimeError) -> str:
    """The first specific line of a ``load_state_dict`` error (its first line only names the class)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__


def load_ranker(run_dir: Path, device: torch.device | str = "cpu") -> tuple[Ranker, dict[str, Any]]:
    """``load_run`` for a ranker run; a reward-model run is refused (it ranks nothing)."""
    model, config = load_run(run_dir, device)
    if not isinstance(model, Ranker):
        raise ConfigError(f"--run {run_dir}: is a reward-model run; expected a ranker run")
    return model, config


def data_fields(dataset: PreparedDataset) -> dict[str, int]:
    """The model fields a dataset decides: the sizes of the item and user tables and the list length L."""
    return {"n_items": dataset.n_items, "n_users": dataset.n_users, "list_len": dataset.list_len}


def data_record(dataset: PreparedDataset) -> dict[str, str]:
    """What a run's config.json records of its dataset: the folder and its manifest's SHA-256."""
    manifest = PreparedDataset.manifest_path(dataset.root)
    return {"data": str(dataset.root.resolve()), "data_sha256": sha256_file(manifest)}


def reward_record(reward_dir: Path | None) -> dict[str, str | None]:
    """What a ranker run's config.json records of its reward-model run: the folder and its checkpoint's
    SHA-256 (``oracle`` and no digest for the exact-reward evaluator)."""
    if reward_dir is None or str(reward_dir) == ORACLE:
        return {"reward": None if reward_dir is None else ORACLE, "reward_sha256": None}
    return {"reward": str(Path(reward_dir).resolve()), "reward_sha256": sha256_file(RunFolder(reward_dir).checkpoint)}


def run_dataset(config: dict[str, Any]) -> PreparedDataset:
    """The dataset a run was trained on, refused if it changed since (prepared again in its folder)."""
    dataset = PreparedDataset(config["data"])
    recorded = config.get("data_sha256")
    if recorded is not None and sha256_file(PreparedDataset.manifest_path(dataset.root)) != recorded:
        raise ArtifactError(f"{dataset.root}: not the dataset this run was trained on (its manifest changed "
                            "since it was prepared again); train the run again on it")
    return dataset


def build_model(name: str, model_config: ModelConfig, evaluator: ListEvaluator | None) -> Ranker:
    """Instantiate ranker ``name``; evaluator-based rankers also get the (frozen) reward model."""
    spec = MODELS[name]
    return spec.model_cls(model_config, evaluator) if spec.needs_evaluator else spec.model_cls(model_config)


def load_evaluator(reward: str | Path, dataset: Callable[[], PreparedDataset], device: torch.device | str,
                   expected_sha256: str | None = None) -> ListEvaluator:
    """The frozen evaluator a run was (or is to be) trained against: ``oracle``, the simulator's
    exact reward of ``dataset()`` (simulator data only), or a reward-model run folder
    (``load_reward_model``, checked against ``expected_sha256`` when given)."""
    if str(reward) != ORACLE:
        return load_reward_model(Path(reward), device, expected_sha256)
    return OracleEvaluator(exact_reward(dataset(), f"--reward {ORACLE}"))


def load_reward_model(run_dir: Path, device: torch.device | str, expected_sha256: str | None = None) -> RewardModel:
    """The frozen reward model of a reward run (the evaluator every G-E method and GoalRank share).

    ``expected_sha256``: the checkpoint digest a ranker run recorded (``reward_record``); a reward
    run trained again in its folder since is refused, as its rankers would silently change.
    """
    model, config = load_run(run_dir, device)
    if expected_sha256 is not None and sha256_file(RunFolder(run_dir).checkpoint) != expected_sha256:
        raise ArtifactError(f"{run_dir}: not the reward model this run was trained with (its checkpoint.pt "
                            "changed since: trained again?); train the run again with it")
    if config["model_name"] != REWARD or not isinstance(model, RewardModel):
        raise ConfigError(f"--reward {run_dir}: is a {config['model_name']!r} run, expected a reward model")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def build_ensemble(config: dict[str, Any], device: torch.device | str) -> MultiGenerator:
    """The untrained structure of a multi-generator run: its members rebuilt from their recorded configs.

    Every member that needs an evaluator and the ensemble itself share the run's reward model,
    loaded once; the weights come from the ensemble's checkpoint.
    """
    evaluator = load_evaluator(config["reward"], lambda: run_dataset(config), device, config.get("reward_sha256"))
    members = []
    for index, member in enumerate(config["generators"]):
        name = member["model_name"]
        if name not in MODELS:
            raise ArtifactError(f"generators[{index}]: unknown model_name {name!r}")
        model_config = from_dict(MODELS[name].config_cls, member["model"], f"generators[{index}].model")
        members.append(build_model(name, model_config, evaluator if MODELS[name].needs_evaluator else None))
    return MultiGenerator(members, evaluator)
