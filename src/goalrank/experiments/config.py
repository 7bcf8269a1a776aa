"""What `goalrank benchmark` (and `goalrank demo`, one of its profiles) runs: datasets, studies, budgets.

A dataset is ``NAME=SOURCE:PATH`` (any source ``prepare`` reads) or ``NAME=simulator`` (the
built-in simulator, simulated from the ``simulate`` values under the output folder): the
benchmark knows no dataset by name, so Table 1 runs on anyone's log.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goalrank.config import check, from_dict, load_values, merge_values
from goalrank.data.loaders import Source
from goalrank.errors import ConfigError
from goalrank.objectives.reference import NOISE_KINDS
from goalrank.runs.registry import MODELS
from goalrank.simulate.simulator import MAX_BEAM_WIDTH, ORACLE_BEAM_WIDTH

STUDIES = ("table1", "tune", "oracle", "groupsize", "bias", "scaling")
SIMULATOR = "simulator"
BUILT_IN_DATASET = f"sim={SIMULATOR}"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the benchmark: its name in the report and folders, its source and log.

    ``path`` None (``NAME=simulator``) means the built-in simulator world of the benchmark's
    ``simulate`` values; any other source needs the log file (or `goalrank simulate` folder).
    """

    name: str
    source: str
    path: Path | None

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        name, sep, rest = str(text).partition("=")
        source, _, path = rest.partition(":")
        sources = typing.get_args(Source)
        if not (sep and name.strip() and name.replace("-", "").replace("_", "").isalnum()):
            raise ConfigError(f"--dataset {text!r}: expected NAME=SOURCE:PATH (NAME letters, digits, - or _), "
                              f"e.g. ml100k=movielens:ml-100k/ratings.csv, or NAME={SIMULATOR} for the built-in world")
        if source not in sources:
            raise ConfigError(f"--dataset {text!r}: source {source!r}: expected one of {list(sources)}")
        if not path and source != SIMULATOR:
            raise ConfigError(f"--dataset {text!r}: source {source} needs a path (NAME={source}:PATH)")
        return cls(name.strip(), source, Path(path) if path else None)


@dataclass
class BenchmarkConfig:
    """What `goalrank benchmark` runs; the field defaults are the full experiment (profile ``full``).

    datasets: ``NAME=SOURCE:PATH`` or ``NAME=simulator`` entries (``--dataset``, repeatable).
    studies: which of STUDIES to run (``--only``). ``oracle`` trains GoalRank and every
        generator–evaluator method against the simulator's exact reward instead of the reward
        model (simulator datasets only; skipped on others).
    methods: the model names (``goalrank``, ``dnn``, ..., ``mge``) whose runs every chosen study
        keeps (Table 3's grids are GoalRank's, the scaling study's GoalRank, DNN, PIER and MG-E);
        empty: all. Long studies are split over processes and sessions this way.
    tune_seeds: the seeds the tuning study (``tune``, ``experiments.plan.TUNE_SETTINGS``) runs on:
        its settings are compared on the validation split of these seeds only.
    tune_settings: the tuning study's settings to run, by name (``temperature=0.25``); empty: all.
        A study of a dozen runs of 15-60 min each is spread over processes and sessions this way;
        the report compares whatever settings are recorded.
    simulate, prepare, reward, ranker: values for SimConfig, PrepareConfig (every dataset), the
        reward run and every ranker run, nested as the `train` command's ``--set`` keys.
    mge_generators: G of Table 1's MG-E rows (paper: 3, 20, 100).
    group_sizes, reward_noises: the K and β grids of Table 3.
    bias_kinds: the kinds of β noise the bias study runs (``reference.reward_noise_kind``):
        ``fresh``, redrawn every step (labelled ``β=0.2``), and ``fixed``, one draw per user and
        list for the whole run, as a biased reward model's error is (``β=0.2 fixed``); β = 0 is
        one run for all kinds. Every grid holds distinct values: a repeated one would be the same
        run twice, counted as two seeds.
    scaling_sizes: ``DxLAYERS`` points (d_model x depth) for GoalRank, DNN and PIER (Fig. 3);
        scaling_generators: MG-E's G at the shared trunk, the paper's way of growing MG-E.
    beam_width: beam of the simulator's oracle search (true-reward ratio).
    results: the results folder (``experiments.results``) that finished runs are recorded in and
        read back from instead of trained ("": ``OUT/results``); the repository's is ``results``.
    bootstrap_samples, bootstrap_seed, alpha: the paired bootstrap test and its level.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    datasets: tuple[str, ...] = (BUILT_IN_DATASET,)
    studies: tuple[str, ...] = STUDIES
    methods: tuple[str, ...] = ()
    tune_seeds: tuple[int, ...] = (0,)
    tune_settings: tuple[str, ...] = ()
    simulate: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=dict)
    ranker: dict[str, Any] = field(default_factory=dict)
    mge_generators: tuple[int, ...] = (3, 20, 100)
    group_sizes: tuple[int, ...] = (3, 5, 8, 10, 20, 50, 80, 100)
    reward_noises: tuple[float, ...] = (0.0, 0.2, 0.5)
    bias_kinds: tuple[str, ...] = NOISE_KINDS
    scaling_sizes: tuple[str, ...] = ("128x2", "256x4", "512x6", "768x8")
    scaling_generators: tuple[int, ...] = (3, 20, 100, 500)
    beam_width: int = ORACLE_BEAM_WIDTH
    results: str = ""
    bootstrap_samples: int = 10_000
    bootstrap_seed: int = 0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds) and min(self.seeds) >= 0,
              "seeds (--seeds)", "distinct integers >= 0, at least one", self.seeds)
        specs = self.dataset_specs
        names = [spec.name for spec in specs]
        check(len(names) >= 1 and len(set(names)) == len(names), "datasets (--dataset)",
              "at least one, with distinct names", list(self.datasets))
        check(len(self.studies) >= 1 and set(self.studies) <= set(STUDIES), "studies (--only)",
              f"a comma-separated subset of {','.join(STUDIES)}", ",".join(self.studies))
        check(set(self.methods) <= set(MODELS), "methods", f"model names among {sorted(MODELS)}", self.methods)
        check(len(self.tune_seeds) >= 1 and min(self.tune_seeds) >= 0, "tune_seeds", "integers >= 0, at least one",
              self.tune_seeds)
        for name in ("simulate", "prepare", "reward", "ranker"):
            check(isinstance(getattr(self, name), dict), name, "a table of config values", getattr(self, name))
        check(min(self.mge_generators, default=0) >= 1, "mge_generators", "integers >= 1", self.mge_generators)
        check(min(self.group_sizes, default=0) >= 2, "group_sizes", "integers >= 2", self.group_sizes)
        check(min(self.reward_noises, default=-1) >= 0, "reward_noises", "values >= 0", self.reward_noises)
        check(len(self.bias_kinds) >= 1 and set(self.bias_kinds) <= set(NOISE_KINDS), "bias_kinds",
              f"a non-empty subset of {','.join(NOISE_KINDS)}", self.bias_kinds)
        for size in self.scaling_sizes:
            parse_size(size)
        check(min(self.scaling_generators, default=0) >= 1, "scaling_generators", "integers >= 1",
              self.scaling_generators)
        for name in ("tune_seeds", "mge_generators", "group_sizes", "reward_noises", "bias_kinds",
                     "scaling_sizes", "scaling_generators"):
            values = getattr(self, name)
            check(len(set(values)) == len(values), name, "distinct values", values)
        check(1 <= self.beam_width <= MAX_BEAM_WIDTH, "beam_width", f"in [1, {MAX_BEAM_WIDTH}]", self.beam_width)
        check(self.bootstrap_samples >= 1, "bootstrap_samples", ">= 1", self.bootstrap_samples)
        check(0 < self.alpha < 1, "alpha", "in (0, 1)", self.alpha)

    @property
    def dataset_specs(self) -> list[DatasetSpec]:
        return [DatasetSpec.parse(text) for text in self.datasets]


# `quick` is a smoke test (a few minutes on 2 CPU cores; its numbers mean nothing). `demo` is the
# README's first command: GoalRank and the DNN on the built-in simulator data, one seed, about
# 10-15 minutes on 2 CPU cores. `cpu` is Table 1 alone at the demo's data sizes and paper-sized
# models (d_model 128), 3 seeds, with each ranker trained for 2 epochs of at most 40 batches of
# 128: a real but under-trained comparison; one seed of one dataset took 46-54 min on one thread of
# this busy 2-core machine (PIER's 720 orders per list are a third to a half of it), so `--seeds 0`
# fits a session and 3 seeds need ~2.5 h per dataset. `full` is the real experiment: 5 seeds, full
# grids, paper-sized models (d_model 128; scaling from ~1.4M to ~144M GoalRank parameters at 1,000
# items), 10 epochs per run: 32 distinct ranker runs per dataset and seed. Not run: projected from
# per-batch times measured on one H200 (`--estimate`, README), 2.7 h per simulator seed, ~24
# GPU-hours for the simulator and ML-100K, most of it the 512x6 and 768x8 GoalRank runs; weeks on a
# 2-core CPU. `converged` is Table 1 trained to convergence under one rule for every method (issue
# #19): a validation pass every 40 batches of 128, early stopping after 3 passes without a better
# validation NDCG, at most 25 passes (1,000 steps, 8.9 epochs of the default world's training split);
# it records into the repository's results/ (run it from the repository root) and reads back what
# is recorded there, so its seeds and methods can be run a few at a time, on any machine.
# Fig. 3's sizes on one CPU thread (`converged`): GoalRank from 0.10M (32x1) to 13.8M (320x4)
# parameters at the default world's 500 items and 1,000 users. A batch of 320x4 measured 4.0x one of
# 128x2 and 256x4 3.5x (`--estimate 3`, results/estimate/): a converged 320x4 run fits one session,
# the paper's 512x6 and 768x8 do not.
CPU_SCALING_SIZES = ("32x1", "64x2", "128x2", "256x4", "320x4")
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
    "demo": {
        "seeds": (0,),
        "studies": ("table1",),
        "methods": ("goalrank", "dnn"),
        "reward": {"train": {"epochs": 3}},
        "ranker": {"train": {"epochs": 2}},
    },
    "cpu": {
        "seeds": (0, 1, 2),
        "studies": ("table1",),
        "reward": {"train": {"epochs": 3}},
        "ranker": {"train": {"epochs": 2, "max_steps_per_epoch": 40}},
    },
    "converged": {
        "seeds": (0, 1, 2),
        "studies": ("table1",),
        "reward": {"train": {"epochs": 6}},
        "ranker": {"train": {"epochs": 25, "max_steps_per_epoch": 40, "patience": 3}},
        "scaling_sizes": CPU_SCALING_SIZES,
        "results": "results",
    },
    "full": {},
}


def load_benchmark_config(profile: str, path: Path | None, overrides: Sequence[str],
                          flags: dict[str, Any]) -> BenchmarkConfig:
    """Profile preset, then a TOML file and ``--set`` overrides, then the CLI flags (``flags``, None: unset)."""
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile!r}: expected one of {sorted(PROFILES)}")
    values = merge_values(PROFILES[profile], load_values(path, list(overrides)),
                          {key: value for key, value in flags.items() if value is not None})
    return from_dict(BenchmarkConfig, values, "benchmark")


def parse_size(size: str) -> tuple[int, int]:
    """``"256x4"`` → (d_model 256, depth 4): one point of the scaling grid."""
    width, sep, depth = str(size).partition("x")
    if not (sep and width.isdigit() and depth.isdigit() and int(width) >= 1 and int(depth) >= 1):
        raise ConfigError(f"scaling_sizes={size!r}: expected DxLAYERS with integers >= 1, e.g. 256x4")
    return int(width), int(depth)
