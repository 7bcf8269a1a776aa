"""Training runs: build a model from a dataset and config, fit it, save a self-describing run folder.

The folder's files are named by ``runs.folder.RunFolder``; ``runs.load`` rebuilds the model from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from goalrank.config import check, from_dict, merge_values, to_dict
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ConfigError
from goalrank.evaluate.audit import ItemStats
from goalrank.evaluate.fidelity import ceiling_auc, item_metrics, spearman_groups, spearman_random
from goalrank.evaluate.protocol import TRUE_REWARD, TrueReward, evaluate_ranker, exact_reward, simulator_for
from goalrank.groups import GroupConfig, PopularityPolicy
from goalrank.groups.build import SCORER_POLICIES
from goalrank.io import exclusive_lock, write_recorded_json
from goalrank.models.base import PassMemoising, PointwiseScorer
from goalrank.models.blocks import ModelConfig, UserIdEmbedding
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator
from goalrank.objectives.base import ObjectiveInputs
from goalrank.objectives.reference import ReferenceConfig
from goalrank.objectives.reward import RewardObjective
from goalrank.reward.model import RewardConfig, RewardModel, resolve_position_weights
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import (
    ORACLE,
    REWARD,
    build_model,
    data_fields,
    data_record,
    load_evaluator,
    load_ranker,
    reward_record,
)
from goalrank.runs.registry import MODELS
from goalrank.train.distributed import Distributed, rank_seed
from goalrank.train.loop import fit
from goalrank.train.runtime import TrainConfig, seed_everything


@dataclass
class RewardRunConfig:
    """``goalrank train --model reward``: the reward model and how it is trained.

    negatives: the share of each logged list's positions replaced by non-exposed candidates
    labelled 0 in an extra corrupted copy (``objectives.reward``). Default 0.5, chosen by the
    validation NDCG@6 of the reward model's own beam-search list (docs/results.md, "Where the gap
    lies"): 0.597/0.604 against 0.442/0.434 with 0 on the default world (seeds 0/1), 0.173 against
    0.138 on ML-100K. Without corrupted copies the model never sees a candidate that was not shown,
    and a ranker picks among 44 of those per request; their exposed-item AUC (0.01 higher with 0)
    cannot see that, which is why it was the wrong criterion for this choice.
    """

    model: RewardConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    negatives: float = 0.5

    def __post_init__(self) -> None:
        check(0.0 <= self.negatives <= 1.0, "negatives", "a share in [0, 1]", self.negatives)


@dataclass
class RankerRunConfig:
    """``goalrank train --model NAME`` for rankers; ``group``/``reference`` are used by GoalRank."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    select_metric: Literal["H", "NDCG", "MAP", "F1", "AUC", "true_reward"] = "NDCG"


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
    """The reward run's config; ``auto`` position weights become the dataset's (``resolve_position_weights``)."""
    simulator = simulator_for(dataset)
    discount = None if simulator is None else float(simulator.world.reward_discount)
    model = resolve_position_weights(_data_fields(dataset, values.get("model", {})), discount)
    return from_dict(RewardRunConfig, {**values, "model": model})


# Defaults that depend on the kind of log, laid under the run's own values key by key: the tuning
# study (docs/results.md, "How the defaults are chosen"; experiments.plan.TUNE_SETTINGS) picked
# other settings on ML-100K than on the simulator. Where the reward model's own lists rank the logged
# labels far below the item-wise rankers (ML-100K, Table 1), the group can teach little and a
# stronger pull towards the logged labels wins on validation: GoalRank imitating the logged positives
# at weight 10 (validation NDCG@6 0.265 against 0.176 for the logged list at weight 1), EGRerank at
# supervised weight 3 (0.273 against 0.246). On the simulator the same knobs lost, so simulator data
# keeps the dataclasses' defaults. ML-100K is the one real log tuned here: on another log, run the
# tuning study (`goalrank benchmark --only tune --dataset ...`) before trusting these.
REAL_LOG_DEFAULTS: dict[str, dict[str, Any]] = {
    "goalrank": {"reference": {"supervised_target": "positives", "supervised_weight": 10.0}},
    "egrerank": {"model": {"supervised_weight": 3.0}},
}


def data_kind_defaults(name: str, dataset: PreparedDataset) -> dict[str, Any]:
    """The values ranker ``name`` takes by default on ``dataset``: ``REAL_LOG_DEFAULTS`` on a real
    log, nothing on simulator data (a dataset prepared from a `goalrank simulate` world)."""
    return {} if dataset.simulator_world else REAL_LOG_DEFAULTS.get(name, {})


def build_ranker_config(name: str, dataset: PreparedDataset,
                        values: dict[str, Any]) -> tuple[RankerRunConfig, ModelConfig]:
    """The run config and the model's own typed config (validated against the model's class),
    ``values`` laid over the dataset's defaults (``data_kind_defaults``)."""
    if name not in MODELS:
        raise ConfigError(f"--model {name!r}: expected one of {sorted(MODELS) + [REWARD]}")
    run_config = from_dict(RankerRunConfig, merge_values(data_kind_defaults(name, dataset), values))
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
    restrict_user_ids(model.user_ids, dataset)
    rng = seed_everything(rank_seed(config.train.seed, dist.rank))
    payload = {"model_name": REWARD, **data_record(dataset), **to_dict(config)}
    run = RunFolder(run_dir)
    valid, batch_size = dataset.split("valid"), config.train.eval_batch_size
    objective = RewardObjective(model, config.negatives, rng)

    def final_metrics(best: dict[str, float]) -> dict[str, float]:
        """The best checkpoint's validation figures (as ``fit`` measured them), then the test split's."""
        test = item_metrics(model, dataset.split("test"), batch_size, device)
        metrics = {**{f"valid_{k}": v for k, v in best.items()}, **{f"test_{k}": v for k, v in test.items()}}
        metrics.update(reward_fidelity(model, dataset, batch_size, device, config.train.seed))
        write_recorded_json(run.metrics, metrics)
        return metrics

    with _opened(run, payload, resume, dist):
        result = fit(model, objective, lambda: item_metrics(model, valid, batch_size, device),
                     "auc", dataset.split("train"), config.train, run, device, rng, resume, dist)
        return dist.on_main(lambda: final_metrics(result.best_metrics))


def reward_fidelity(model: RewardModel, dataset: PreparedDataset, batch_size: int, device: torch.device,
                    seed: int) -> dict[str, float]:
    """On simulator data, the test split's ceiling AUC and the Spearman correlations of the model's
    list reward with the exact one (``evaluate.fidelity``); nothing on real logs.

    The groups are GoalRank's default groups for a freshly initialised generator (seeded by
    ``seed``): the lists the reference policy is made of when training starts.
    """
    simulator = simulator_for(dataset)
    if simulator is None:
        return {}
    true_reward, test = TrueReward(simulator, dataset, beam_width=1), dataset.split("test")
    torch.manual_seed(seed)
    generator = GoalRankGenerator(from_dict(GeneratorConfig, data_fields(dataset), "model")).to(device).eval()
    popularity = training_popularity(dataset, device)
    return {"test_ceiling_auc": ceiling_auc(true_reward, test, batch_size),
            "spearman_random": spearman_random(model, test, true_reward, device, dataset.list_len, seed=seed),
            "spearman_group": spearman_groups(model, test, true_reward, device, generator, GroupConfig(),
                                              popularity, seed)}


def auxiliary_inputs(group: GroupConfig, dataset: PreparedDataset,
                     device: torch.device) -> tuple[PointwiseScorer | None, torch.Tensor | None]:
    """The frozen scorer of ``group.scorer_run`` and the items' training popularity, each only
    when the group's mix uses it."""
    scorer = None
    if group.uses(*SCORER_POLICIES):
        model, _ = load_ranker(Path(group.scorer_run), device)
        if not hasattr(model, "score"):
            raise ConfigError(f"group.scorer_run={group.scorer_run}: is a {type(model).__name__} run; expected an "
                              "item-wise ranker (one score per candidate, e.g. --model dnn)")
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        scorer = cast(PointwiseScorer, model)
    popularity = training_popularity(dataset, device) if group.uses(PopularityPolicy.name) else None
    return scorer, popularity


def restrict_user_ids(user_ids: UserIdEmbedding | None, dataset: PreparedDataset) -> None:
    """Users absent from the training split read the cold-start row (``UserIdEmbedding.restrict_to``)."""
    if user_ids is not None:
        users = torch.from_numpy(np.unique(np.asarray(dataset.split("train").arrays["users"])))
        user_ids.restrict_to(users.to(user_ids.trained.device))


def training_popularity(dataset: PreparedDataset, device: torch.device) -> torch.Tensor:
    """(n_items + 1,) positives of each item index in the training split (the popularity policy's scores)."""
    positives = ItemStats.of(dataset.split("train"), dataset.n_items).positives
    return torch.from_numpy(positives).to(device)


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
            raise ConfigError(f"--model {name}: needs --reward RUN_DIR (a trained reward model, or {ORACLE})")
        evaluator = load_evaluator(reward_dir, lambda: dataset, device)
    # On simulator data every validation pass also measures the exact list reward and the complete-label
    # metrics (cheap next to a training step), so learning curves show what the method optimises, not only
    # the logged labels it is selected on; selecting on the true reward needs simulator data.
    if config.select_metric == TRUE_REWARD:
        true_reward: TrueReward | None = exact_reward(dataset, f"select_metric={TRUE_REWARD}")
    else:
        simulator = simulator_for(dataset)
        true_reward = None if simulator is None else TrueReward(simulator, dataset, beam_width=1)
    model = build_model(name, model_config, evaluator).to(device)
    restrict_user_ids(getattr(model, "user_ids", None), dataset)
    if isinstance(model, PassMemoising):  # every validation pass ranks the same requests
        model.memoise_passes()
    rng = seed_everything(rank_seed(config.train.seed, dist.rank))
    objective = spec.objective.build(ObjectiveInputs(model, evaluator, config.group, config.reference, rng,
                                                     *auxiliary_inputs(config.group, dataset, device),
                                                     seed=config.train.seed))
    payload = {"model_name": name, **data_record(dataset), **reward_record(reward_dir), **to_dict(config)}
    run = RunFolder(run_dir)
    valid = dataset.split("valid")
    select = config.select_metric if config.select_metric in ("AUC", TRUE_REWARD) \
        else f"{config.select_metric}@{dataset.list_len}"

    def validate() -> dict[str, float]:
        return evaluate_ranker(model, valid, config.train.eval_batch_size, device, true_reward, progress=False)

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
