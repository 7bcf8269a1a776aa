"""A trained run's evaluation: `goalrank evaluate` (means on a split) and the benchmark's test pass
(means plus every list's metrics, for the paired significance test).

Both write into the run folder (``RunFolder.evaluation``, ``RunFolder.per_list``), recorded in its
``SHA256SUMS``; checkpoints were chosen on validation by the training loop, so the test split is
only evaluated here, once per run.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goalrank.config import check
from goalrank.data.storage import PreparedDataset, RankingBatch, SplitName
from goalrank.errors import ConfigError
from goalrank.evaluate.audit import RewardBeam
from goalrank.evaluate.metrics import per_list_metrics
from goalrank.evaluate.policy_kl import enumerable, policy_kl
from goalrank.evaluate.protocol import COMPLETE, TRUE_REWARD, TrueReward, evaluate_ranker, simulator_for
from goalrank.experiments.plan import REWARD_BEAM
from goalrank.groups.auxiliary import RewardBeamPolicy
from goalrank.io import atomic_file, record_checksum, sha256_file, write_recorded_json
from goalrank.models.base import ListRanker, Ranker, RankOutput
from goalrank.reward.model import RewardModel
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import ENSEMBLE, REWARD, data_fields, load_ranker, load_run, run_dataset
from goalrank.simulate.folder import SimulatorFolder
from goalrank.simulate.simulator import MAX_BEAM_WIDTH, ORACLE_BEAM_WIDTH
from goalrank.train.runtime import TrainConfig, resolve_device


@dataclass
class EvaluateConfig:
    """`goalrank evaluate`: which run, on which data and split.

    run: a ranker run, or a reward-model run (evaluated as its own beam-search list, ``ranker_of_run``).
    data: a prepared-dataset folder ("": the run's own). beam_width: of the simulator's oracle
    search (true-reward ratio; simulator data only).
    """

    run: str
    data: str = ""
    split: SplitName = "test"
    beam_width: int = ORACLE_BEAM_WIDTH

    def __post_init__(self) -> None:
        check(1 <= self.beam_width <= MAX_BEAM_WIDTH, "beam_width", f"in [1, {MAX_BEAM_WIDTH}]", self.beam_width)


def evaluate_run(evaluation: EvaluateConfig) -> tuple[str, dict[str, float]]:
    """Evaluate a run on a split; writes its ``eval-<split>.json``; returns a title and the metrics.

    On another dataset than the run's own (``data``) nothing is written (the title says so): the
    run folder's evaluation files are what the benchmark reads back for the run, on its own data.
    """
    device = resolve_device("auto")
    model, config = ranker_of_run(Path(evaluation.run), device)
    if config["model_name"] != ENSEMBLE and not RunFolder(Path(evaluation.run)).is_complete:
        print(f"warning: {evaluation.run}: training has not finished (no metrics.json); evaluating the best "
              "checkpoint so far", file=sys.stderr)
    own = not evaluation.data or Path(evaluation.data).resolve() == Path(config["data"]).resolve()
    dataset = run_dataset(config) if own else PreparedDataset(evaluation.data)
    for name, value in data_fields(dataset).items():
        for model_config in _model_sections(config):  # the model's item table and L come from its data
            if model_config.get(name) not in (None, value):
                raise ConfigError(f"--data {dataset.root}: has {name}={value}, the run's model "
                                  f"{model_config[name]}; evaluate on a dataset of the same catalogue and L")
    true_reward = true_reward_of(dataset, evaluation.beam_width)
    split = evaluation.split
    metrics = evaluate_ranker(model, dataset.split(split), _eval_batch_size(config), device, true_reward)
    name = config["model_name"] if config["model_name"] != REWARD else f"{REWARD_BEAM} of the reward model"
    if not own:  # the run folder's files are its own data's
        return f"{name} on {split} of {dataset.root} (not written)", metrics
    write_recorded_json(RunFolder(Path(evaluation.run)).evaluation(split), metrics)
    return f"{name} on {split}", metrics


def ranker_of_run(run_dir: Path, device: torch.device) -> tuple[Ranker, dict[str, Any]]:
    """The ranker a run folder evaluates as: its trained ranker, or for a reward-model run the
    reward model's own beam-search list (``RewardBeam``, the benchmark's ``reward_beam`` row), so a
    reward model can be judged by the lists it prefers, on the split its settings are chosen on."""
    model, config = load_run(run_dir, device)
    if isinstance(model, RewardModel):
        return RewardBeam(config["model"]["list_len"], model, RewardBeamPolicy()), config
    return model, config


def evaluate_test(run_dir: Path, beam_width: int) -> dict[str, float]:
    """Evaluate a trained run on the test split in one ranking pass (``record_test``)."""
    device = resolve_device("auto")
    ranker, config = load_ranker(Path(run_dir), device)
    dataset = run_dataset(config)
    true_reward = true_reward_of(dataset, beam_width)
    return record_test(RunFolder(run_dir), ranker, dataset, _eval_batch_size(config), device, true_reward)


def _model_sections(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The model sections of a run's config: an MG-E ensemble run (``goalrank ensemble``) has one per generator."""
    return [entry["model"] for entry in config["generators"]] if config["model_name"] == ENSEMBLE \
        else [config["model"]]


def _eval_batch_size(config: dict[str, Any]) -> int:
    """The run's evaluation batch size; an MG-E ensemble run trains nothing and has no train section."""
    return int(config["train"]["eval_batch_size"]) if "train" in config else TrainConfig().eval_batch_size


def record_test(run: RunFolder, ranker: ListRanker, dataset: PreparedDataset, batch_size: int, device: torch.device,
                true_reward: TrueReward | None) -> dict[str, float]:
    """Evaluate ``ranker`` on the test split and write the means (as `goalrank evaluate` does) and
    every test list's metrics (complete-label metrics and true reward on simulator data, too) into
    ``run`` for the significance test. Trained runs and the reference rankers go through here alike."""
    recorder = PerListRecorder(ranker, true_reward, enumerable(dataset.n_candidates, dataset.list_len))
    metrics = evaluate_ranker(recorder, dataset.split("test"), batch_size, device, true_reward, progress=False)
    per_list = recorder.values()
    metrics.update({name: float(np.nanmean(values)) for name, values in per_list.items() if name.startswith("kl_")})
    run.root.mkdir(parents=True, exist_ok=True)
    with atomic_file(run.per_list("test")) as tmp:
        np.savez(tmp, allow_pickle=False, **per_list)  # float arrays only: nothing to pickle
    record_checksum(run.per_list("test"))
    write_recorded_json(run.evaluation("test"), metrics)
    return metrics


KL_REQUESTS = 512  # test requests whose KL to the oracle policy is computed (``PerListRecorder._policy_kl``)


class PerListRecorder(Ranker):
    """Wraps a ranker so that one evaluation pass also keeps every list's metrics and true reward
    and, with ``policy_kl`` on a world whose lists can all be enumerated, each request's KL to the
    oracle Boltzmann policy (``evaluate.policy_kl``)."""

    def __init__(self, ranker: ListRanker, true_reward: TrueReward | None, with_kl: bool = False) -> None:
        super().__init__(ranker.list_len)
        self.ranker = ranker
        self.true_reward = true_reward
        self.with_kl = with_kl and true_reward is not None
        self.kl_keys: list[str] = []
        self.batches: list[dict[str, torch.Tensor]] = []

    def rank(self, batch: RankingBatch) -> RankOutput:
        output = self.ranker.rank(batch)
        values = per_list_metrics(output.lists, output.scores, batch.labels)  # {name: (B,)}
        if self.true_reward is not None:
            complete = per_list_metrics(output.lists, output.scores, self.true_reward.complete_labels(batch))
            values.update({f"{COMPLETE}{name}": value for name, value in complete.items()})
            values[TRUE_REWARD] = self.true_reward.of_lists(batch, output.lists[:, None])[:, 0]
            if self.with_kl:
                values.update(self._policy_kl(batch, output.lists))
        self.batches.append({name: value.detach().float().cpu() for name, value in values.items()})
        return output

    def _policy_kl(self, batch: RankingBatch, lists: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL of the first KL_REQUESTS requests of the split (NaN after them): scoring every list of
        every request costs a teacher-forced pass over N!/(N−L)! lists, minutes per run for the
        whole test split, and the mean over KL_REQUESTS requests is already a close estimate."""
        seen = sum(len(next(iter(b.values()))) for b in self.batches)
        keep = max(0, min(len(batch), KL_REQUESTS - seen))
        values = {} if keep == 0 or self.true_reward is None else \
            policy_kl(self.ranker, batch.select(slice(0, keep)), self.true_reward, lists[:keep])
        self.kl_keys = self.kl_keys or list(values)  # the first batch's: every later batch has the same
        missing = torch.full((len(batch) - keep,), torch.nan)
        return {name: torch.cat([values[name].cpu(), missing]) if name in values else
                torch.cat([torch.full((keep,), torch.nan), missing]) for name in self.kl_keys}

    def values(self) -> dict[str, np.ndarray]:
        """``{name: (n_lists,)}`` over every batch ranked so far, in split order."""
        return {name: torch.cat([b[name] for b in self.batches]).numpy() for name in self.batches[0]}


def true_reward_of(dataset: PreparedDataset, beam_width: int) -> TrueReward | None:
    """One TrueReward per dataset for a whole benchmark, so its oracle is searched once (protocol.TrueReward).

    The cache is keyed by the dataset's and its world's manifests too, so a folder prepared or
    simulated again within one process is looked at afresh (and checked by ``simulator_for``).
    """
    world = dataset.simulator_world
    world_manifest = SimulatorFolder(Path(world)).manifest if world else None
    stamp = tuple(sha256_file(path) for path in (PreparedDataset.manifest_path(dataset.root), world_manifest)
                  if path is not None and path.is_file())
    return _true_reward(str(dataset.root.resolve()), beam_width, stamp)


@functools.lru_cache(maxsize=4)
def _true_reward(data_root: str, beam_width: int, stamp: tuple[str, ...]) -> TrueReward | None:
    dataset = PreparedDataset(data_root, verify=False)  # the caller's copy was verified; ``stamp`` pins it
    simulator = simulator_for(dataset)
    return TrueReward(simulator, dataset, beam_width) if simulator is not None else None


def format_metrics(title: str, metrics: dict[str, float]) -> str:
    """A two-column markdown table of a run's metrics (counts as integers)."""
    lines = [f"| {title} | value |", "|---|---|"]
    for key, value in metrics.items():
        shown = f"{value:.0f}" if key.startswith("n_") else f"{value:.4f}"
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)
