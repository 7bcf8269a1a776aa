"""A multi-generator (MG-E) run folder assembled from separately trained runs (models/mge.py ``MultiGenerator``).

MG-E's generators are trained independently, each by its own ``goalrank train``; this writes one
run folder that holds them all (their configs in ``config.json``, their weights in one checkpoint),
so the service, the evaluation and the benchmark load and serve it like any other run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goalrank.config import check
from goalrank.errors import ConfigError
from goalrank.models.mge import MultiGenerator
from goalrank.runs.checkpoint import save_checkpoint
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import ENSEMBLE, load_ranker, load_reward_model, reward_record


@dataclass
class EnsembleConfig:
    """`goalrank ensemble`: generators, the G ranker runs; reward, the reward-model run that picks
    among their lists; out, the run folder to write."""

    generators: tuple[str, ...]
    reward: str
    out: str

    def __post_init__(self) -> None:
        check(len(self.generators) >= 1, "generators", "at least one ranker run", self.generators)


def write_ensemble(out: Path, generator_runs: list[Path], reward_run: Path) -> Path:
    """Write the run folder ``out`` of the MG-E over ``generator_runs``, scored by ``reward_run``'s reward model.

    The generators must have been trained on one dataset (the same manifest digest): a request's
    candidates index the same items for all of them.
    """
    if not generator_runs:
        raise ConfigError("generators: expected at least one generator run")
    members, entries = [], []
    datasets: set[tuple[Any, Any]] = set()
    for run in generator_runs:
        ranker, config = load_ranker(run, "cpu")
        members.append(ranker)
        entries.append({"run": str(Path(run).resolve()), "model_name": config["model_name"],
                        "model": config["model"]})
        datasets.add((config["data"], config.get("data_sha256")))
    if len(datasets) != 1:
        raise ConfigError(f"generators: trained on {len(datasets)} datasets {sorted(map(str, datasets))}; "
                          "expected one")
    data, data_sha256 = datasets.pop()
    ensemble = MultiGenerator(members, load_reward_model(Path(reward_run), "cpu"))
    folder = RunFolder(out)
    folder.open({"model_name": ENSEMBLE, "generators": entries, **reward_record(reward_run), "data": data,
                 "data_sha256": data_sha256})
    save_checkpoint(folder.checkpoint, {"model": ensemble.state_dict()})
    return folder.root
