"""The Python API: the pipeline's stages as functions, for notebooks and scripts; the CLI is a layer over it.

```python
from goalrank import api

world = api.simulate("runs/lib/world", {"n_users": 300, "n_items": 200})
data = api.prepare("runs/lib/data", {"source": "simulator", "input": world})
reward = api.train("reward", data, "runs/lib/reward", {"train": {"epochs": 1}})
run = api.train("goalrank", data, "runs/lib/goalrank", {"train": {"epochs": 1}}, reward=reward)
print(api.evaluate(run, split="test"))  # {"H@6": ..., "NDCG@6": ..., "true_reward": ...}
ranker = api.load_ranker(run)
print(ranker.rank(user=3, history=[(17, 1)], candidates=list(range(50))).items)  # raw ids, best first
```

Each function takes its stage's config as the dataclass (``SimConfig``, ``PrepareConfig``,
``RewardRunConfig``/``RankerRunConfig``) or as a dict of its fields, nested dicts for nested
sections (``{"train": {"epochs": 1}}``), validated by the same code as ``--config``/``--set``; a
field left out keeps the dataclass's default. Errors are the CLI's: a ``GoalRankError`` subclass
whose message names the field or file.

The functions live in ``goalrank.api``, not on the package itself: ``goalrank.simulate``,
``goalrank.train`` and ``goalrank.evaluate`` are the pipeline's subpackages, and a function of the
same name would hide them (``import goalrank.train.loop`` would then fail).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from goalrank.config import from_dict, to_dict
from goalrank.data.prepare import PrepareConfig
from goalrank.data.prepare import prepare as prepare_dataset
from goalrank.data.storage import PreparedDataset, SplitName
from goalrank.experiments.evaluation import EvaluateConfig, evaluate_run
from goalrank.io import read_recorded_json
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import REWARD
from goalrank.simulate import SimConfig
from goalrank.simulate import simulate as simulate_world
from goalrank.simulate.simulator import ORACLE_BEAM_WIDTH
from goalrank.train.distributed import process_group
from goalrank.train.run import train_ranker, train_reward

if TYPE_CHECKING:  # the service's modules load fastapi: imported by load_ranker only
    from goalrank.serve.app import RankingService, RankResponse
    from goalrank.serve.export import Backend

T = TypeVar("T")


def simulate(out: Path | str, config: SimConfig | Mapping[str, Any] | None = None, *,
             overwrite: bool = False) -> Path:
    """Draw a ground-truth world and its exposure logs into ``out`` (`goalrank simulate`); returns ``out``.

    The folder is what ``prepare`` reads with ``source="simulator"``, and its world gives the exact
    expected reward of any list, so evaluations on it report the true reward.
    """
    return simulate_world(_config(SimConfig, config, "simulate"), out, overwrite=overwrite)


def prepare(out: Path | str, config: PrepareConfig | Mapping[str, Any], *, overwrite: bool = False) -> PreparedDataset:
    """Turn a log into list-wise samples in ``out`` (`goalrank prepare`); returns the opened dataset.

    ``config`` names at least ``source`` and ``input`` (a log file, or a ``simulate`` folder).
    ``goalrank.evaluate.audit.shortcut_warning(dataset)`` says whether a non-personalised shortcut
    separates its validation labels, which the CLI prints after preparing.
    """
    return prepare_dataset(_config(PrepareConfig, config, "prepare"), out, overwrite=overwrite)


@dataclass(frozen=True)
class Run:
    """A trained run's folder: what ``train`` returns and ``evaluate`` and ``load_ranker`` take.

    Any run folder ``goalrank train`` wrote can be opened as ``Run(path)``; the functions below
    also take the path itself.
    """

    path: Path

    @property
    def folder(self) -> RunFolder:
        """The run folder's files (config.json, checkpoint.pt, log.jsonl, tensorboard/, ...)."""
        return RunFolder(self.path)

    @property
    def config(self) -> dict[str, Any]:
        """The run's recorded config: model name and config, training config, dataset and reward run."""
        return self.folder.read_config()

    @property
    def model_name(self) -> str:
        """``reward``, ``goalrank`` or the baseline's registry name."""
        return str(self.config["model_name"])

    @property
    def metrics(self) -> dict[str, Any]:
        """Validation metrics of the kept checkpoint (``metrics.json``; a reward run's also on test)."""
        return dict(read_recorded_json(self.folder.metrics))

    @property
    def tensorboard(self) -> Path:
        """The run's training curves: ``tensorboard --logdir`` this folder."""
        return self.folder.tensorboard


def train(model: str, data: PreparedDataset | Path | str, out: Path | str, config: Any = None, *,
          reward: Run | Path | str | None = None, resume: bool = False) -> Run:
    """Train ``model`` on a prepared dataset into the run folder ``out`` (`goalrank train`).

    ``model`` is ``"reward"`` (the list-wise reward model; ``config`` a ``RewardRunConfig``),
    ``"goalrank"`` or a baseline of ``goalrank.runs.registry.MODELS`` (``config`` a
    ``RankerRunConfig``, whose ``model`` section takes the ranker's own config fields). GoalRank
    and the generator-evaluator baselines need a trained ``reward`` run. ``resume`` continues an
    interrupted run in ``out`` from its last checkpoint. Launched by ``torchrun``, every process
    calls it and training is data-parallel, rank 0 writing ``out``.
    """
    data_dir = data.root if isinstance(data, PreparedDataset) else Path(data)
    values = _values(config)
    with process_group():
        if model == REWARD:
            train_reward(data_dir, Path(out), values, resume=resume)
        else:
            train_ranker(model, data_dir, Path(out), values, _path(reward) if reward is not None else None,
                         resume=resume)
    return Run(Path(out))


def evaluate(run: Run | Path | str, split: SplitName = "test", *, data: PreparedDataset | Path | str | None = None,
             beam_width: int = ORACLE_BEAM_WIDTH) -> dict[str, float]:
    """The run's metrics on ``split`` (`goalrank evaluate`): H@L, NDCG@L, MAP@L, F1@L, AUC and counts.

    On simulator data also the complete-label metrics (``complete_*``), the true expected list
    reward and its ratio to the best list found by a beam search of ``beam_width``. Written to the
    run folder's ``eval-<split>.json`` unless ``data`` is another dataset than the run's own (of the
    same catalogue and L).
    """
    data_dir = data.root if isinstance(data, PreparedDataset) else data
    config = EvaluateConfig(run=str(_path(run)), data=str(data_dir or ""), split=split, beam_width=beam_width)
    return evaluate_run(config)[1]


class RunRanker:
    """A trained ranker for a Python caller with raw ids, under exactly the service's rules.

    It is the service of ``goalrank serve`` without HTTP: the same ``RankingService`` loads the run,
    the same ``RankRequest`` validates the input (distinct candidates, labels 0 or 1, integer ids)
    and the same ``Catalog`` translates raw ids and applies the cold-start rules (unknown candidates
    refused, unknown history items dropped, a known user without history given their latest one).
    """

    def __init__(self, service: RankingService) -> None:
        self.service = service

    @property
    def model_version(self) -> str:
        """``RUN@SHA``: the run folder's name and its checkpoint's digest, as the service reports it."""
        return self.service.model_version

    def rank(self, user: int | None, history: Sequence[tuple[int, int]] | None, candidates: Sequence[int],
             request_id: str | None = None) -> RankResponse:
        """The best list of L of ``candidates`` (raw item ids) for ``user`` with ``history``.

        ``history`` is (item, label) pairs, most recent last; None uses the known user's latest
        logged history (an unknown user's is empty). Returns the service's ``RankResponse``: ``items``
        (L raw ids, best first), their ``scores`` and ``model_version``. A request the service
        would answer with a 422 raises ``ValueError`` with the service's message.
        """
        from goalrank.serve.app import RankRequest

        events = None if history is None else [
            {"item": operator.index(item), "label": operator.index(label)} for item, label in history]
        request = RankRequest.model_validate({
            "user": None if user is None else operator.index(user), "history": events,
            "candidates": [operator.index(item) for item in candidates], "request_id": request_id})
        batch = self.service.encode(request)
        with torch.inference_mode():
            output = self.service.batcher.rank_fn(batch)
        return self.service.respond(request, batch, output)


def load_ranker(run: Run | Path | str, *, backend: Backend = "eager") -> RunRanker:
    """The ranker of a trained run, on the CPU, for ``rank(user, history, candidates)`` calls in raw ids.

    ``backend`` is the service's inference path (``goalrank bench serve`` compares them).
    """
    from goalrank.serve.app import RankingService, ServeConfig

    return RunRanker(RankingService(ServeConfig(run=str(_path(run)), backend=backend)))


def _path(run: Run | Path | str) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def _config(cls: type[T], config: T | Mapping[str, Any] | None, where: str) -> T:
    """``config`` as dataclass ``cls``: given as one, or built and validated from its fields."""
    return config if isinstance(config, cls) else from_dict(cls, _values(config), where)


def _values(config: Any) -> dict[str, Any]:
    """Plain nested config values from a dataclass, a mapping of values and dataclasses, or None."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return to_dict(config)
    return {key: _values(value) if isinstance(value, Mapping) or dataclasses.is_dataclass(value) else value
            for key, value in config.items()}
