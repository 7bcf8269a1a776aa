"""`goalrank demo`: the main job end to end on the built-in default data.

simulate → prepare → train the reward model → train GoalRank and the pointwise DNN baseline
(one run per seed) → evaluate on the test split → a markdown table of mean ± std over seeds.
Each stage writes its own folder under ``--out`` and is skipped when that folder is already
complete, and an interrupted training run continues from its last checkpoint (``last.pt``), so a
crashed or interrupted demo resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goalrank.data.prepare import PrepareConfig, prepare
from goalrank.data.storage import MANIFEST
from goalrank.evaluate.report import evaluate_run
from goalrank.io import read_recorded_json, write_recorded_json, write_recorded_text
from goalrank.simulate.simulator import SimConfig, simulate
from goalrank.train.run import train_ranker, train_reward

TABLE_KEYS = ("H", "NDCG", "MAP", "F1", "AUC", "true_reward", "oracle_ratio")


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo; one seed takes roughly 10-15 minutes on 2 CPU cores.

    prepare: fields of PrepareConfig. Without ``source`` the demo simulates its own logs;
    with e.g. ``prepare.source=movielens prepare.input=PATH`` it runs on that log instead.
    """

    seeds: tuple[int, ...] = (0,)
    models: tuple[str, ...] = ("goalrank", "dnn")
    simulate: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=lambda: {"train": {"epochs": 3}})
    ranker: dict[str, Any] = field(default_factory=lambda: {"train": {"epochs": 2}})


def stage(marker: Path, build: Callable[[], Any], label: str, partial_dir: Path | None = None) -> None:
    """Run ``build`` unless ``marker`` exists; first remove ``partial_dir`` if a crash left it half-written.

    Shared by the demo and ``goalrank benchmark``: re-running either skips finished stages.
    """
    if marker.is_file():
        print(f"[skip] {label}: {marker.parent} is complete")
        return
    if partial_dir is not None and partial_dir.exists():
        print(f"[redo] {label}: {partial_dir} is incomplete, removing it")
        shutil.rmtree(partial_dir)
    print(f"[run ] {label}", flush=True)
    build()


def run_demo(out: Path, config: DemoConfig) -> str:
    """Run the whole pipeline under ``out``; returns (and writes to out/results.md) the table."""
    from goalrank.config import from_dict

    out = Path(out)
    sim_dir, data_dir = out / "simulator", out / "data"
    prep_values = dict(config.prepare)
    if "source" not in prep_values:
        stage(sim_dir / MANIFEST, lambda: simulate(from_dict(SimConfig, config.simulate), sim_dir), "simulate")
        prep_values.update(source="simulator", input=str(sim_dir))
    stage(data_dir / MANIFEST, lambda: prepare(from_dict(PrepareConfig, prep_values), data_dir), "prepare")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in config.models}
    for seed in config.seeds:
        seed_train = {"seed": seed}
        reward_dir = out / f"reward-seed{seed}"
        reward_values = _with_train(config.reward, seed_train)
        stage(reward_dir / "metrics.json", lambda: train_reward(data_dir, reward_dir, reward_values, resume=True),
               f"train reward model (seed {seed})")
        for name in config.models:
            run_dir = out / f"{name}-seed{seed}"
            values = _with_train(config.ranker, seed_train)
            stage(run_dir / "metrics.json",
                   lambda: train_ranker(name, data_dir, run_dir, values, reward_dir, resume=True),
                   f"train {name} (seed {seed})")
            if not (run_dir / "eval-test.json").is_file():
                print(evaluate_run(run_dir, data_dir, "test", beam_width=64))
            rows[name].append(read_recorded_json(run_dir / "eval-test.json"))
    table = summary_table(rows, config.seeds)
    write_recorded_text(out / "results.md", table + "\n")
    write_recorded_json(out / "results.json", rows)
    return table


def _with_train(values: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    return {**values, "train": {**values.get("train", {}), **train}}


def summary_table(rows: dict[str, list[dict[str, float]]], seeds: tuple[int, ...]) -> str:
    """Markdown table of mean ± sample std (over seeds) of every metric for every model; the mean alone for one seed."""
    first = next(iter(rows.values()))[0]
    keys = sorted((k for k in first if k.split("@")[0] in TABLE_KEYS), key=lambda k: TABLE_KEYS.index(k.split("@")[0]))
    header = f"| model (seeds {', '.join(map(str, seeds))}) | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name, results in rows.items():
        cells = []
        for key in keys:
            values = [r[key] for r in results]
            mean = f"{statistics.mean(values):.4f}"
            cells.append(f"{mean} ± {statistics.stdev(values):.4f}" if len(values) > 1 else mean)  # no spread of one
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
