"""`goalrank benchmark --estimate STEPS`: how long a profile would take here, before running it.

The full profile is many GPU-hours; whether it fits a machine should be known before starting
it. For each dataset, the first seed's reward model and every distinct ranker run of the plan
(runs that studies share are timed once, as the benchmark trains them once) are trained for one
epoch of at most STEPS batches and evaluated on test, in a scratch folder. The epoch's log gives
the seconds per batch and the validation pass's seconds, so a run's projection is

    setup + epochs × (batches per epoch × seconds per batch + validation seconds) + test seconds

with ``setup`` what the training call spent outside its epoch (building, loading, final
metrics). Early stopping (``train.patience``) can end runs sooner, and the machine's load moves
the figures either way; seeds cost alike, so a dataset's total is multiplied by the number of
seeds. The first run of a process also pays one-time warm-up (CUDA context, kernel selection),
which a larger STEPS amortises.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

from goalrank.config import check, merge_values
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ArtifactError
from goalrank.experiments.benchmark import (
    RankerRun,
    evaluator_of,
    prepare_dataset,
    ranker_run,
    reward_values,
    specs_for,
)
from goalrank.experiments.config import BenchmarkConfig
from goalrank.experiments.evaluation import evaluate_test
from goalrank.experiments.folder import BenchmarkFolder
from goalrank.experiments.plan import plan
from goalrank.perf import timed
from goalrank.runs.folder import RunFolder
from goalrank.train.run import build_reward_config, train_ranker, train_reward
from goalrank.train.runtime import TrainConfig, resolve_device


@dataclass
class RunCost:
    """What one capped run measured, and its projection to the profile's epochs."""

    dataset: str
    labels: list[str]
    epochs: int
    batches: int
    batch_s: float
    valid_s: float
    setup_s: float
    test_s: float = 0.0
    seeds: int = 1  # how many of the profile's seeds train this run (the tuning study's only its own)

    @property
    def projected_s(self) -> float:
        return self.setup_s + self.epochs * (self.batches * self.batch_s + self.valid_s) + self.test_s


def estimate_benchmark(out: Path, config: BenchmarkConfig, steps: int) -> str:
    """Time every distinct run of ``config`` capped at ``steps`` batches; write and return estimate.md."""
    check(steps >= 1, "--estimate", "a number of batches >= 1", steps)
    folder = BenchmarkFolder(out)
    scratch = folder.estimate
    shutil.rmtree(scratch, ignore_errors=True)
    costs: list[RunCost] = []
    for spec in config.dataset_specs:
        dataset = PreparedDataset(prepare_dataset(folder, spec, config))
        costs += _dataset_costs(scratch / spec.name, dataset, spec.name, config, steps)
    report = _report(costs, config, steps)
    folder.estimate_report.write_text(report)
    pl.DataFrame([{"dataset": c.dataset, "runs": " = ".join(c.labels), "epochs": c.epochs,
                   "batches": c.batches, "batch_s": c.batch_s, "valid_s": c.valid_s, "setup_s": c.setup_s,
                   "test_s": c.test_s, "projected_s": c.projected_s, "seeds": c.seeds}
                  for c in costs]).write_csv(folder.estimate_table)
    print(f"estimate written to {folder.estimate_report}")
    return report


def _dataset_costs(scratch: Path, dataset: PreparedDataset, name: str, config: BenchmarkConfig,
                   steps: int) -> list[RunCost]:
    """The reward model's cost, then each distinct ranker run's, for the first seed of ``config``."""
    cap = {"train": {"epochs": 1, "max_steps_per_epoch": steps}}
    seed, train_lists = config.seeds[0], len(dataset.split("train"))
    values = reward_values(config.reward, seed)
    reward_dir = scratch / "reward"
    print(f"[time] {name}: reward model", flush=True)
    costs = [_measure(reward_dir, name, ["reward model"], build_reward_config(dataset, values).train, train_lists,
                      partial(train_reward, dataset.root, reward_dir, merge_values(values, cap)))]
    costs[0].seeds = len(config.seeds)
    runs: dict[str, RankerRun] = {}
    labels: dict[str, list[str]] = {}
    tune_only: dict[str, bool] = {}
    for spec in specs_for(dataset, plan(config), name):
        run = ranker_run(spec, config, dataset, seed, evaluator_of(spec, reward_dir))
        runs.setdefault(run.name, run)
        labels.setdefault(run.name, []).append(spec.label)
        tune_only[run.name] = tune_only.get(run.name, True) and spec.study == "tune"
    for index, run in enumerate(runs.values(), 1):
        print(f"[time] {name} {index}/{len(runs)}: {' = '.join(labels[run.name])}", flush=True)
        run_dir = scratch / run.name
        cost = _measure(run_dir, name, labels[run.name], run.config.train, train_lists,
                        partial(train_ranker, run.model, dataset.root, run_dir, merge_values(run.values, cap),
                                run.reward_dir))
        cost.test_s = _seconds(partial(evaluate_test, run_dir, config.beam_width))
        cost.seeds = len(set(config.tune_seeds) & set(config.seeds)) if tune_only[run.name] else len(config.seeds)
        costs.append(cost)
    return costs


def _measure(run_dir: Path, dataset: str, labels: list[str], train: TrainConfig, train_lists: int,
             run: Callable[[], object]) -> RunCost:
    """Run a capped training call; split its time into setup, batches and validation from its log."""
    total = _seconds(run)
    log = RunFolder(run_dir).log
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    epochs = [record for record in records if "valid_s" in record]  # skipped-step events have none
    if not epochs or epochs[0]["steps"] < 1:
        raise ArtifactError(f"{log}: no epoch with a training step to time")
    epoch = epochs[0]
    batches = math.ceil(train_lists / train.batch_size)
    if train.max_steps_per_epoch:
        batches = min(batches, train.max_steps_per_epoch)
    return RunCost(dataset, labels, train.epochs, batches, (epoch["elapsed_s"] - epoch["valid_s"]) / epoch["steps"],
                   epoch["valid_s"], max(total - epoch["elapsed_s"], 0.0))


def _seconds(run: Callable[[], object]) -> float:
    """Wall seconds of ``run()``, synchronised on the device the runs train on."""
    return timed(run, resolve_device("auto"))[1]


def _report(costs: list[RunCost], config: BenchmarkConfig, steps: int) -> str:
    """Markdown: one row per timed run, then each dataset's total for one seed and for all seeds."""
    lines = [f"# Projected wall time (one epoch of at most {steps} batches per run, seed {config.seeds[0]})", "",
             "| dataset | run | epochs × batches | s / batch | valid s | setup + test s | projected s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {c.dataset} | {' = '.join(c.labels)} | {c.epochs} × {c.batches} | {c.batch_s:.4f} | "
              f"{c.valid_s:.2f} | {c.setup_s + c.test_s:.1f} | {c.projected_s:,.0f} |" for c in costs]
    lines += ["", f"| dataset | one seed | {len(config.seeds)} seeds |", "|---|---:|---:|"]
    names = list(dict.fromkeys(c.dataset for c in costs))
    one_seed = {name: sum(c.projected_s for c in costs if c.dataset == name) for name in names}
    every_seed = {name: sum(c.projected_s * c.seeds for c in costs if c.dataset == name) for name in names}
    lines += [f"| {name} | {_hours(one_seed[name])} | {_hours(every_seed[name])} |" for name in names]
    lines += ["", f"Profile total: {_hours(sum(every_seed.values()))} (every run projected to all its epochs: early "
              f"stopping can end runs sooner; load on the machine moves it either way; the tuning study runs on "
              f"seeds {', '.join(map(str, config.tune_seeds))} only).", ""]
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
