"""`goalrank benchmark`: the reproduction report — Table 1, the Table 3 ablations and Fig. 3 (paper §4.1).

Per dataset: simulate (``sim`` only) → prepare → per seed, one reward model → every ranker run the
chosen studies need → one evaluation pass on the test split → CSVs, markdown tables, PNG plots and
``report.md`` under ``--out``.

- One reward model per dataset and seed is the evaluator of every G-E / MG-E baseline and the
  reward model of GoalRank: the paper requires that "all baselines share exactly the same
  evaluator" (§4.1.2).
- A run folder is named by a digest of its fully resolved config (model, training, group,
  reference, reward run). Runs that two studies share (Table 1's GoalRank is a column of the
  group-size ablation and the β = 0 row of the bias ablation) train once, and re-running the same
  command finds every finished run and only regenerates the report (skip-if-complete, as in
  ``goalrank demo``). A run folder a crash left without ``metrics.json`` is removed and retrained.
- Checkpoints are chosen on the validation split by the training loop; the test split is only
  evaluated, once per run.
- GoalRank vs the best baseline is tested with a paired bootstrap over test lists
  (``paired_bootstrap``); the ± std columns show the spread over training seeds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from goalrank.config import check, from_dict, load_values, to_dict
from goalrank.data.prepare import PrepareConfig, prepare
from goalrank.data.storage import MANIFEST, PreparedDataset, RankingBatch
from goalrank.errors import ConfigError, DataError
from goalrank.evaluate.metrics import metric_names, per_list_metrics
from goalrank.evaluate.plots import Curve, plot_panels
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.io import (
    atomic_file,
    read_json,
    read_recorded_json,
    record_checksum,
    verify_checksum,
    write_recorded_json,
    write_recorded_text,
)
from goalrank.models.base import Ranker, RankOutput
from goalrank.models.blocks import count_parameters
from goalrank.models.registry import MODELS
from goalrank.pipeline import stage, summary_table
from goalrank.simulate.simulator import SimConfig, simulate
from goalrank.train.run import (
    RankerRunConfig,
    build_model,
    build_ranker_config,
    build_reward_config,
    load_run,
    train_ranker,
    train_reward,
)
from goalrank.train.runtime import resolve_device

STUDIES = ("table1", "groupsize", "bias", "scaling")
DATASETS = ("sim", "ml100k")
GOALRANK = "GoalRank"
TRUE_REWARD = "true_reward"
ORACLE_RATIO = "oracle_ratio"
METRICS_FILE = "metrics.json"  # written by train_reward / train_ranker when training finished
RESULTS_FILE = "eval-test.json"  # the name `goalrank evaluate` gives test results
PER_LIST_FILE = "per-list-test.npz"
BOOTSTRAP_CHUNK = 1 << 22  # resampled list indices held in memory at once by paired_bootstrap

TABLE1_BASELINES = (
    ("DNN", "dnn"), ("DLCM", "dlcm"), ("PRS (SetRank)", "setrank"), ("PRM", "prm"), ("MIR", "mir"),
    ("RankMixer", "rankmixer"), ("EGRerank", "egrerank"), ("PIER", "pier"), ("NAR4Rec", "nar4rec"),
)
MGE = "MG-E"
SCALED_DEPTH_FIELDS = {"goalrank": ("encoder_layers", "decoder_layers"), "dnn": ("hidden_layers",),
                       "pier": ("hidden_layers",)}
METHOD_NAMES = {"goalrank": GOALRANK, "dnn": "DNN", "pier": "PIER"}

# The paper's numbers (%) for H@6, N@6, M@6, F1@6, AUC, shown as reference columns. Table 1 is on
# ML-1M (not ML-100K, not our simulator); Table 3 is on the authors' Industry data.
PAPER_LIST_LEN = 6
PAPER_TABLE1_ML1M = {
    "DNN": (56.86, 70.30, 59.28, 62.16, 86.87), "DLCM": (62.31, 73.87, 63.82, 67.96, 89.35),
    "PRS (SetRank)": (59.35, 73.10, 62.51, 64.72, 88.84), "PRM": (60.09, 72.85, 62.21, 65.51, 88.20),
    "MIR": (62.22, 74.33, 64.47, 67.97, 87.76), "RankMixer": (60.88, 72.65, 62.68, 64.18, 92.47),
    "EGRerank": (62.76, 74.75, 64.97, 68.46, 88.72), "PIER": (62.74, 75.99, 65.98, 68.74, 90.43),
    "NAR4Rec": (62.81, 75.01, 65.42, 68.31, 88.30), "MG-E G-3": (55.51, 67.39, 55.52, 55.51, 60.73),
    "MG-E G-20": (58.66, 69.86, 58.60, 64.18, 81.76), "MG-E G-100": (60.64, 70.97, 59.93, 66.29, 76.48),
    GOALRANK: (73.56, 83.43, 76.16, 80.15, 97.64),
}
PAPER_TABLE3_GROUP_SIZE = {
    3: (62.88, 81.76, 72.50, 74.00, 97.50), 5: (64.52, 83.42, 74.44, 75.94, 97.79),
    8: (69.95, 86.82, 78.86, 82.25, 98.05), 10: (69.94, 87.17, 79.34, 82.28, 98.15),
    20: (69.93, 86.93, 79.01, 82.29, 98.07), 50: (67.34, 85.33, 76.96, 79.26, 98.06),
    80: (63.29, 82.76, 73.69, 74.47, 97.75), 100: (63.50, 82.94, 73.92, 74.76, 97.77),
}
PAPER_TABLE3_REWARD_NOISE = {
    0.0: (69.93, 86.93, 79.01, 82.29, 98.07), 0.2: (65.32, 83.21, 74.33, 76.89, 97.90),
    0.5: (63.77, 82.75, 73.79, 75.05, 97.73),
}


@dataclass
class BenchmarkConfig:
    """What `goalrank benchmark` runs; the field defaults are the full experiment (profile ``full``).

    datasets: among DATASETS; ``ml100k`` needs ``ml100k`` (a ratings file) and is skipped without.
    studies: which of STUDIES to run (``--only``).
    simulate, prepare, reward, ranker: values for SimConfig, PrepareConfig (both datasets), the
        reward run and every ranker run, nested as the `train` command's ``--set`` keys.
    mge_generators: G of Table 1's MG-E rows (paper: 3, 20, 100).
    group_sizes, reward_noises: the K and β grids of Table 3.
    scaling_sizes: ``DxLAYERS`` points (d_model x depth) for GoalRank, DNN and PIER (Fig. 3);
        scaling_generators: MG-E's G at the shared trunk, the paper's way of growing MG-E.
    beam_width: beam of the simulator's oracle search (true-reward ratio).
    bootstrap_samples, bootstrap_seed, alpha: the paired bootstrap test and its level.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    datasets: tuple[str, ...] = DATASETS
    studies: tuple[str, ...] = STUDIES
    ml100k: str = ""
    simulate: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=dict)
    ranker: dict[str, Any] = field(default_factory=dict)
    mge_generators: tuple[int, ...] = (3, 20, 100)
    group_sizes: tuple[int, ...] = (3, 5, 8, 10, 20, 50, 80, 100)
    reward_noises: tuple[float, ...] = (0.0, 0.2, 0.5)
    scaling_sizes: tuple[str, ...] = ("128x2", "256x4", "512x6", "768x8")
    scaling_generators: tuple[int, ...] = (3, 20, 100, 500)
    beam_width: int = 64
    bootstrap_samples: int = 10_000
    bootstrap_seed: int = 0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds) and min(self.seeds) >= 0,
              "seeds (--seeds)", "distinct integers >= 0, at least one", self.seeds)
        check(len(self.datasets) >= 1 and set(self.datasets) <= set(DATASETS), "datasets (--datasets)",
              f"a comma-separated subset of {','.join(DATASETS)}", ",".join(self.datasets))
        check(len(self.studies) >= 1 and set(self.studies) <= set(STUDIES), "studies (--only)",
              f"a comma-separated subset of {','.join(STUDIES)}", ",".join(self.studies))
        for name in ("simulate", "prepare", "reward", "ranker"):
            check(isinstance(getattr(self, name), dict), name, "a table of config values", getattr(self, name))
        check(min(self.mge_generators, default=0) >= 1, "mge_generators", "integers >= 1", self.mge_generators)
        check(min(self.group_sizes, default=0) >= 2, "group_sizes", "integers >= 2", self.group_sizes)
        check(min(self.reward_noises, default=-1) >= 0, "reward_noises", "values >= 0", self.reward_noises)
        for size in self.scaling_sizes:
            parse_size(size)
        check(min(self.scaling_generators, default=0) >= 1, "scaling_generators", "integers >= 1",
              self.scaling_generators)
        check(self.beam_width >= 1, "beam_width", ">= 1", self.beam_width)
        check(self.bootstrap_samples >= 1, "bootstrap_samples", ">= 1", self.bootstrap_samples)
        check(0 < self.alpha < 1, "alpha", "in (0, 1)", self.alpha)


# `quick` is a smoke test (a few minutes on 2 CPU cores; its numbers mean nothing). `cpu` is Table 1
# alone at the demo's data sizes and paper-sized models (d_model 128), 3 seeds, with each ranker
# trained for 2 epochs of at most 40 batches of 128: a real but under-trained comparison; one seed of
# one dataset took 46-54 min on one thread of this busy 2-core machine (PIER's 720 orders per list
# are a third to a half of it), so `--seeds 0` fits a session and 3 seeds need ~2.5 h per dataset. `full` is the
# real experiment: 5 seeds, full grids, paper-sized models (d_model 128; scaling from ~1.4M to
# ~144M GoalRank parameters at 1,000 items), 10 epochs per run: 32 distinct ranker runs per dataset
# and seed, i.e. 320 runs and 10 reward models for both datasets. Not run: projected from per-batch
# times measured on one H200 (`--estimate`, README), 2.7 h per simulator seed, ~24 GPU-hours in all,
# most of it the 512x6 and 768x8 GoalRank runs; weeks on a 2-core CPU.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": (0, 1),
        "simulate": {"n_users": 300, "n_items": 200, "sessions_per_user": 10},
        "prepare": {"kcore": 5, "n_candidates": 20, "history_len": 20, "retriever": {"epochs": 3}},
        "reward": {"model": {"d_model": 32, "layers": 1},
                   "train": {"epochs": 1, "max_steps_per_epoch": 10, "batch_size": 64}},
        "ranker": {"model": {"d_model": 32}, "group": {"group_size": 8},
                   "train": {"epochs": 1, "max_steps_per_epoch": 5, "batch_size": 64}},
        "group_sizes": (3, 8, 20),
        "reward_noises": (0.0, 0.5),
        "scaling_sizes": ("16x1", "32x2"),
        "scaling_generators": (3, 20),
        "beam_width": 8,
        "bootstrap_samples": 1000,
    },
    "cpu": {
        "seeds": (0, 1, 2),
        "studies": ("table1",),
        "reward": {"train": {"epochs": 3}},
        "ranker": {"train": {"epochs": 2, "max_steps_per_epoch": 40}},
    },
    "full": {},
}


def load_benchmark_config(profile: str, path: Path | None, overrides: Sequence[str],
                          flags: dict[str, str | None]) -> BenchmarkConfig:
    """Profile preset, then a TOML file and ``--set`` overrides, then the CLI flags (``flags``, None: unset)."""
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile!r}: expected one of {sorted(PROFILES)}")
    values = merge_values(PROFILES[profile], load_values(path, list(overrides)),
                          {key: value for key, value in flags.items() if value is not None})
    return from_dict(BenchmarkConfig, values, "benchmark")


def merge_values(*layers: dict[str, Any]) -> dict[str, Any]:
    """Nested merge of config value mappings; later layers win, sub-tables merge key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge_values(merged[key], value)
            else:
                merged[key] = value
    return merged


def parse_size(size: str) -> tuple[int, int]:
    """``"256x4"`` → (d_model 256, depth 4): one point of the scaling grid."""
    width, sep, depth = str(size).partition("x")
    if not (sep and width.isdigit() and depth.isdigit() and int(width) >= 1 and int(depth) >= 1):
        raise ConfigError(f"scaling_sizes={size!r}: expected DxLAYERS with integers >= 1, e.g. 256x4")
    return int(width), int(depth)


@dataclass
class RunSpec:
    """One row of a study: ranker ``model`` with ``values`` laid over the shared ranker values.

    ``grid_value`` is the swept value (K, β) for the plots; None where the x axis is the size.
    """

    study: str
    method: str
    setting: str
    model: str
    values: dict[str, Any] = field(default_factory=dict)
    grid_value: float | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.setting}".strip()


def plan(config: BenchmarkConfig) -> list[RunSpec]:
    """Every run spec of the chosen studies, in report order (shared runs are deduplicated later)."""
    specs: list[RunSpec] = []
    if "table1" in config.studies:
        specs += [RunSpec("table1", label, "", name) for label, name in TABLE1_BASELINES]
        specs += [RunSpec("table1", MGE, f"G-{g}", "mge", {"model": {"n_generators": g}})
                  for g in config.mge_generators]
        specs.append(RunSpec("table1", GOALRANK, "", "goalrank"))
    if "groupsize" in config.studies:
        specs += [RunSpec("groupsize", GOALRANK, f"K={k}", "goalrank", {"group": {"group_size": k}}, k)
                  for k in config.group_sizes]
    if "bias" in config.studies:
        specs += [RunSpec("bias", GOALRANK, f"β={b}", "goalrank", {"reference": {"reward_noise": b}}, b)
                  for b in config.reward_noises]
    if "scaling" in config.studies:
        for size in config.scaling_sizes:
            width, depth = parse_size(size)
            for name, depth_fields in SCALED_DEPTH_FIELDS.items():
                model = {"d_model": width, **{key: depth for key in depth_fields}}
                specs.append(RunSpec("scaling", METHOD_NAMES[name], size, name, {"model": model}))
        specs += [RunSpec("scaling", MGE, f"G-{g}", "mge", {"model": {"n_generators": g}})
                  for g in config.scaling_generators]
    return specs


def run_benchmark(out: Path, config: BenchmarkConfig, command: str) -> str:
    """Run (or resume) every study of ``config`` under ``out``; write and return ``report.md``."""
    out = Path(out)
    start = time.perf_counter()
    specs = plan(config)
    rows: list[dict[str, Any]] = []
    list_lens: dict[str, int] = {}
    notes: list[str] = []
    for dataset_name in config.datasets:
        data_dir = prepare_dataset(out, dataset_name, config)
        if data_dir is None:
            notes.append(f"`{dataset_name}` skipped: no ratings file given (`--ml100k PATH`).")
            continue
        dataset = PreparedDataset(data_dir)
        list_lens[dataset_name] = dataset.list_len
        for seed in config.seeds:
            seed_dir = out / "runs" / dataset_name / f"seed{seed}"
            reward_dir = _ensure_reward(seed_dir, dataset, config.reward, seed, f"[{dataset_name} seed {seed}]")
            for index, spec in enumerate(specs, 1):
                where = f"[{dataset_name} seed {seed} {index}/{len(specs)}] {spec.study}: {spec.label}"
                run_dir = _ensure_ranker(seed_dir, dataset, spec, config, seed, reward_dir, where)
                rows.append(_result_row(out, spec, dataset_name, seed, run_dir))
    report = write_report(out, config, rows, list_lens, command, notes, time.perf_counter() - start)
    print(f"report written to {out / 'report.md'}")
    return report


def prepare_dataset(out: Path, name: str, config: BenchmarkConfig) -> Path | None:
    """Prepared-dataset folder of ``name`` (built if missing); None when ml100k has no input file."""
    data_dir = out / "data" / name
    if name == "sim":
        world = out / "data" / "sim-world"
        stage(world / MANIFEST, lambda: simulate(from_dict(SimConfig, config.simulate, "simulate"), world),
                "simulate")
        source, log = "simulator", world
    else:
        if not config.ml100k:
            print("[skip] ml100k: no ratings file given; pass --ml100k PATH (e.g. ml-100k/ratings.csv)")
            return None
        source, log = "movielens", Path(config.ml100k)
        if not log.is_file():
            raise DataError(f"--ml100k {log}: file not found; expected an ML-100K ratings.csv or u.data")
    values = {**config.prepare, "source": source, "input": str(log)}
    stage(data_dir / MANIFEST, lambda: prepare(from_dict(PrepareConfig, values, "prepare"), data_dir),
            f"prepare {name}")
    return data_dir


def reward_values(reward: dict[str, Any], seed: int) -> dict[str, Any]:
    """The reward run's config values for ``seed``."""
    return merge_values(reward, {"train": {"seed": seed}})


@dataclass
class RankerRun:
    """One ranker run of the plan: its folder name, config values, validated config, reward folder."""

    name: str
    model: str
    values: dict[str, Any]
    config: RankerRunConfig
    reward_dir: Path | None


def ranker_run(spec: RunSpec, config: BenchmarkConfig, dataset: PreparedDataset, seed: int,
               reward_dir: Path) -> RankerRun:
    """The run ``spec`` asks for; ``reward_dir`` is kept only when the model trains with a reward model.

    The name is the model and a digest of everything that defines the run, so studies that ask for
    the same run (Table 1's GoalRank is K=20 of the group-size study) share one folder.
    """
    values = merge_values(config.ranker, spec.values, {"train": {"seed": seed}})
    run_config, _ = build_ranker_config(spec.model, dataset, values)
    uses_reward = MODELS[spec.model].uses_reward_model
    identity = {"model_name": spec.model, "reward": reward_dir.name if uses_reward else None, **to_dict(run_config)}
    return RankerRun(f"{spec.model}-{_digest(identity)}", spec.model, values, run_config,
                     reward_dir if uses_reward else None)


def _ensure_reward(seed_dir: Path, dataset: PreparedDataset, reward: dict[str, Any], seed: int, where: str) -> Path:
    """The seed's reward model (the one evaluator every G-E method and GoalRank share), trained if missing."""
    values = reward_values(reward, seed)
    run_dir = seed_dir / f"reward-{_digest(to_dict(build_reward_config(dataset, values)))}"
    stage(run_dir / METRICS_FILE, partial(train_reward, dataset.root, run_dir, values),
            f"{where} train reward model", run_dir)
    return run_dir


def _ensure_ranker(seed_dir: Path, dataset: PreparedDataset, spec: RunSpec, config: BenchmarkConfig,
                   seed: int, reward_dir: Path, where: str) -> Path:
    """Train (if missing) and evaluate on test (if missing) one ranker run; returns its folder."""
    run = ranker_run(spec, config, dataset, seed, reward_dir)
    run_dir = seed_dir / run.name
    stage(run_dir / METRICS_FILE, partial(train_ranker, run.model, dataset.root, run_dir, run.values, run.reward_dir),
            f"{where} train", run_dir)
    stage(run_dir / RESULTS_FILE, partial(evaluate_test, run_dir, config.beam_width), f"{where} evaluate")
    return run_dir


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


class PerListRecorder(Ranker):
    """Wraps a ranker so that one evaluation pass also keeps every list's metrics and true reward."""

    def __init__(self, ranker: Ranker, true_reward: TrueReward | None) -> None:
        super().__init__(ranker.list_len)
        self.ranker = ranker
        self.true_reward = true_reward
        self.batches: list[dict[str, torch.Tensor]] = []

    def rank(self, batch: RankingBatch) -> RankOutput:
        output = self.ranker.rank(batch)
        values = per_list_metrics(output.lists, output.scores, batch.labels)  # {name: (B,)}
        if self.true_reward is not None:
            values[TRUE_REWARD] = self.true_reward.of_lists(batch, output.lists[:, None])[:, 0]
        self.batches.append({name: value.detach().float().cpu() for name, value in values.items()})
        return output

    def values(self) -> dict[str, np.ndarray]:
        """``{name: (n_lists,)}`` over every batch ranked so far, in split order."""
        return {name: torch.cat([b[name] for b in self.batches]).numpy() for name in self.batches[0]}


def evaluate_test(run_dir: Path, beam_width: int) -> dict[str, float]:
    """Evaluate a run on the test split in one ranking pass.

    Writes ``eval-test.json`` (the means, as `goalrank evaluate` does) and ``per-list-test.npz``
    (every test list's metrics, and true reward on simulator data) for the significance test.
    """
    run_dir = Path(run_dir)
    device = resolve_device("auto")
    model, config = load_run(run_dir, device)
    dataset = PreparedDataset(config["data"])
    true_reward = _true_reward(str(Path(config["data"]).resolve()), beam_width)
    recorder = PerListRecorder(model, true_reward)
    metrics = evaluate_ranker(recorder, dataset.split("test"), config["train"]["eval_batch_size"], device,
                              true_reward, progress=False)
    with atomic_file(run_dir / PER_LIST_FILE) as tmp:
        np.savez(tmp, **recorder.values())
    record_checksum(run_dir / PER_LIST_FILE)
    write_recorded_json(run_dir / RESULTS_FILE, metrics)
    return metrics


@functools.lru_cache(maxsize=4)
def _true_reward(data_root: str, beam_width: int) -> TrueReward | None:
    """One TrueReward per dataset for the whole benchmark, so its oracle is searched once (protocol.TrueReward)."""
    dataset = PreparedDataset(data_root)
    simulator = simulator_for(dataset)
    return TrueReward(simulator, dataset, beam_width) if simulator is not None else None


def parameter_count(run_dir: Path) -> int:
    """Trainable parameters of a run's ranker (the shared evaluator excluded), built on the meta device."""
    config = read_json(Path(run_dir) / "config.json")
    name = config["model_name"]
    model_config = from_dict(MODELS[name].config_cls, config["model"], "model")
    with torch.device("meta"):
        return count_parameters(build_model(name, model_config, evaluator=None))


def _result_row(out: Path, spec: RunSpec, dataset: str, seed: int, run_dir: Path) -> dict[str, Any]:
    return {"study": spec.study, "dataset": dataset, "method": spec.method, "setting": spec.setting,
            "label": spec.label, "model": spec.model, "grid_value": spec.grid_value, "seed": seed,
            "parameters": parameter_count(run_dir), "run": str(run_dir.relative_to(out)),
            **read_recorded_json(run_dir / RESULTS_FILE)}


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap result: mean per-list difference, its percentile CI, two-sided p-value."""

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_lists: int


def paired_bootstrap(treatment: np.ndarray, control: np.ndarray, samples: int, seed: int,
                     confidence: float = 0.95) -> PairedTest:
    """Two-sided paired bootstrap test of "mean per-list difference = 0" over test lists.

    ``treatment`` and ``control`` are (S, n): a per-list metric of two methods trained with the
    same S seeds and evaluated on the same n test lists. Each list's difference is averaged over
    the seeds, the n differences are resampled with replacement ``samples`` times, and the
    p-value is the share of resampled means at least as far from the observed mean as the
    observed mean is from 0 (the shift method, Efron & Tibshirani 1993 §16.4), with the +1
    correction so it is never 0. Identical inputs give p = 1. Lists where the metric is undefined
    (NaN: no positive) are dropped. The test covers list-to-list noise on this test set; the
    ± std columns of the tables show the seed-to-seed spread.
    """
    treatment, control = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if treatment.shape != control.shape or treatment.ndim != 2:
        raise DataError(f"paired_bootstrap: treatment {treatment.shape} and control {control.shape}: "
                        "expected the same (seeds, lists) shape")
    differences = (treatment - control).mean(axis=0)  # (n,)
    differences = differences[~np.isnan(differences)]
    n = differences.size
    if n == 0:
        raise DataError("paired_bootstrap: no list has the metric defined for both methods")
    observed = differences.mean()
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, BOOTSTRAP_CHUNK // n)
    for lo in range(0, samples, chunk):
        index = rng.integers(0, n, size=(min(chunk, samples - lo), n))  # (chunk, n)
        means[lo : lo + len(index)] = differences[index].mean(axis=1)
    extreme = np.count_nonzero(np.abs(means - observed) >= abs(observed))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedTest(float(observed), float(low), float(high), (extreme + 1) / (samples + 1), n)


def best_baseline(means: dict[str, float], treatment: str) -> tuple[str, float]:
    """The baseline with the highest mean, and ``treatment``'s relative improvement over it.

    Per metric, as the paper's "Improv." row of Table 1: (treatment − best) / |best|.
    """
    baselines = {label: value for label, value in means.items() if label != treatment}
    if not baselines:
        raise DataError(f"best_baseline: no method other than {treatment!r}")
    label = max(baselines, key=baselines.__getitem__)
    return label, (means[treatment] - baselines[label]) / abs(baselines[label])


def write_report(out: Path, config: BenchmarkConfig, rows: list[dict[str, Any]], list_lens: dict[str, int],
                 command: str, notes: list[str], seconds: float) -> str:
    """Write one CSV per study, the PNG plots and ``report.md`` (returned), atomically and in SHA256SUMS."""
    out.mkdir(parents=True, exist_ok=True)
    write_recorded_json(out / "benchmark-config.json", to_dict(config))
    sections = [_report_header(config, command, notes, seconds, len({r["run"] for r in rows}))]
    renderers = {"table1": _table1_section, "groupsize": _group_size_section, "bias": _bias_section,
                 "scaling": _scaling_section}
    for study in config.studies:
        study_rows = [r for r in rows if r["study"] == study]
        if not study_rows:
            continue
        write_recorded_text(out / f"{study}.csv", pl.from_dicts(study_rows, infer_schema_length=None).write_csv())
        for dataset, list_len in list_lens.items():
            dataset_rows = [r for r in study_rows if r["dataset"] == dataset]
            sections.append(renderers[study](out, config, dataset, list_len, dataset_rows))
    report = "\n\n".join(sections) + "\n"
    write_recorded_text(out / "report.md", report)
    return report


def _report_header(config: BenchmarkConfig, command: str, notes: list[str], seconds: float, n_runs: int) -> str:
    lines = [
        "# GoalRank reproduction benchmark",
        f"Produced by `{command}` ({n_runs} ranker runs; this invocation took {seconds:.0f} s; "
        "finished runs are reused on re-run).",
        f"Seeds: {', '.join(map(str, config.seeds))}. Every number is a test-split result of a checkpoint "
        "chosen on the validation split; cells are mean ± sample std over seeds (the mean alone for one seed), as fractions (the paper "
        "prints percentages). `true_reward` is the exact expected list reward under the simulator and "
        "`oracle_ratio` its ratio to a beam-search oracle's (simulator data only). One reward model per "
        "dataset and seed is the evaluator of every G-E/MG-E method and GoalRank's reward model.",
        "Significance: two-sided paired bootstrap over test lists (per-list differences averaged over "
        f"seeds, {config.bootstrap_samples} resamples), GoalRank vs the best baseline of each metric.",
        "Paper reference columns are copied from the paper (÷ 100): Table 1 is on **ML-1M** and Table 3 on "
        "the authors' **Industry** data — different datasets from ours (simulator, ML-100K), for "
        "orientation only.",
    ]
    return "\n\n".join(lines + notes)


def _by_label(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["label"], []).append(row)
    return grouped


def _metric_keys(list_len: int, rows: list[dict[str, Any]]) -> list[str]:
    """The paper's five metrics, then the simulator's true reward where the rows have it."""
    return [*metric_names(list_len), *([TRUE_REWARD] if TRUE_REWARD in rows[0] else [])]


def _summary(grouped: dict[str, list[dict[str, Any]]], list_len: int, seeds: tuple[int, ...]) -> str:
    """``summary_table`` with the columns in the paper's order (result files store keys sorted)."""
    first = next(iter(grouped.values()))
    keys = [*_metric_keys(list_len, first), *([ORACLE_RATIO] if ORACLE_RATIO in first[0] else [])]
    return summary_table({label: [{k: r[k] for k in keys} for r in runs] for label, runs in grouped.items()}, seeds)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _reference_table(title: str, reference: dict[Any, tuple[float, ...]]) -> str:
    """The paper's rows as fractions, under the paper's own metric names (its L is 6)."""
    names = metric_names(PAPER_LIST_LEN)
    lines = [f"| {title} | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    lines += [f"| {key} | " + " | ".join(f"{v / 100:.4f}" for v in reference[key]) + " |"
              for key in reference]
    return "\n".join(lines)


def _table1_section(out: Path, config: BenchmarkConfig, dataset: str, list_len: int,
                    rows: list[dict[str, Any]]) -> str:
    grouped = _by_label(rows)
    keys = _metric_keys(list_len, rows)
    means = {label: {k: _mean_std([r[k] for r in runs])[0] for k in keys} for label, runs in grouped.items()}
    lines = [f"| metric | best baseline | baseline | {GOALRANK} | improv. | Δ per list [95% CI] | p | "
             f"p < {config.alpha} |", "|---|---|---|---|---|---|---|---|"]
    for key in keys:
        baseline, improvement = best_baseline({label: m[key] for label, m in means.items()}, GOALRANK)
        test = paired_bootstrap(_per_list(out, grouped[GOALRANK], key), _per_list(out, grouped[baseline], key),
                                config.bootstrap_samples, config.bootstrap_seed)
        lines.append(f"| {key} | {baseline} | {means[baseline][key]:.4f} | {means[GOALRANK][key]:.4f} | "
                     f"{improvement:+.2%} | {test.mean_difference:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}] | "
                     f"{test.p_value:.4f} | {'yes' if test.p_value < config.alpha else 'no'} |")
    return "\n\n".join([
        f"## Table 1 — {dataset} (test split)",
        _summary(grouped, list_len, config.seeds),
        f"GoalRank vs the best baseline per metric ({dataset}; paired bootstrap over test lists):",
        "\n".join(lines),
        "Paper reference — **ML-1M**, a different dataset (Table 1 of the paper, ÷ 100):",
        _reference_table("method (paper, ML-1M)", PAPER_TABLE1_ML1M),
    ])


def _per_list(out: Path, runs: list[dict[str, Any]], key: str) -> np.ndarray:
    """(S, n) per-list values of ``key`` over the runs (one per seed) of one method."""
    return np.stack([_load_per_list(out / run["run"] / PER_LIST_FILE)[key] for run in runs])


def _load_per_list(path: Path) -> dict[str, np.ndarray]:
    """A run's per-list metrics, verified against the run's SHA256SUMS."""
    verify_checksum(path)
    with np.load(path) as arrays:
        return dict(arrays)


def _group_size_section(out: Path, config: BenchmarkConfig, dataset: str, list_len: int,
                        rows: list[dict[str, Any]]) -> str:
    grouped = _by_label(rows)
    plot = _plot_grid(out, rows, list_len, "group size K", f"groupsize-{dataset}.png",
                      f"GoalRank vs group size K — {dataset}")
    return "\n\n".join([
        f"## Group size K (Table 3) — {dataset}",
        _summary(grouped, list_len, config.seeds),
        f"![group size, {dataset}]({plot.name})",
        "Paper reference — the authors' **Industry** data (Table 3, ÷ 100):",
        _reference_table("K (paper, Industry)", PAPER_TABLE3_GROUP_SIZE),
    ])


def _bias_section(out: Path, config: BenchmarkConfig, dataset: str, list_len: int,
                  rows: list[dict[str, Any]]) -> str:
    grouped = _by_label(rows)
    return "\n\n".join([
        f"## Reward-model bias β (Table 3) — {dataset}",
        _summary(grouped, list_len, config.seeds),
        "Paper reference — the authors' **Industry** data (Table 3, ÷ 100):",
        _reference_table("β (paper, Industry)", PAPER_TABLE3_REWARD_NOISE),
    ])


def _scaling_section(out: Path, config: BenchmarkConfig, dataset: str, list_len: int,
                     rows: list[dict[str, Any]]) -> str:
    grouped = _by_label(rows)
    sized = {f"{label} ({runs[0]['parameters'] / 1e6:.3f}M params)": runs for label, runs in grouped.items()}
    plot = _plot_grid(out, rows, list_len, "parameters", f"scaling-{dataset}.png",
                      f"Scaling (Fig. 3) — {dataset}")
    return "\n\n".join([
        f"## Scaling (Fig. 3) — {dataset}",
        "GoalRank, DNN and PIER grow by width x depth; MG-E by its number of generators G on the shared "
        "trunk (its G generators are heads on one network, so G adds few parameters).",
        _summary(sized, list_len, config.seeds),
        f"![scaling, {dataset}]({plot.name})",
    ])


def _plot_grid(out: Path, rows: list[dict[str, Any]], list_len: int, x_label: str, name: str, title: str) -> Path:
    """One curve per method over its settings; x is ``grid_value`` (K, β) or else the parameter count."""
    keys = _metric_keys(list_len, rows)
    curves: dict[str, Curve] = {}
    for runs in _by_label(rows).values():
        first = runs[0]
        curve = curves.setdefault(first["method"], Curve(first["method"], [], {k: [] for k in keys},
                                                         {k: [] for k in keys}))
        curve.x.append(first["grid_value"] if first["grid_value"] is not None else first["parameters"])
        for key in keys:
            mean, std = _mean_std([r[key] for r in runs])
            curve.mean[key].append(mean)
            curve.std[key].append(std)
    path = plot_panels(list(curves.values()), keys, x_label, title, out / name)
    record_checksum(path)
    return path
