"""`goalrank benchmark`: the reproduction report — Table 1, the Table 3 ablations and Fig. 3 (paper §4.1).

Per dataset: simulate (built-in simulator only) → prepare → per seed, one reward model → every
ranker run the chosen studies need (``plan``) → one evaluation pass on the test split → CSVs,
markdown tables, PNG plots and ``report.md`` (``report``) under ``--out``. Every run writes its training
curves under its folder, so ``OUT/runs`` (``BenchmarkFolder.runs``) is one TensorBoard logdir for all.

- One reward model per dataset and seed is the evaluator of every G-E / MG-E baseline and the
  reward model of GoalRank: the paper requires that "all baselines share exactly the same
  evaluator" (§4.1.2).
- A run folder is named by a digest of its fully resolved config (model, training, group,
  reference, reward run). Runs that two studies share (Table 1's GoalRank is a column of the
  group-size ablation and the β = 0 row of the bias ablation) train once, and re-running the same
  command finds every finished run and only regenerates the report. An interrupted run continues
  from its last checkpoint (``last.pt``): its folder name pins its config, so resuming it is safe.
- Every finished run is recorded in a results folder (``experiments.results``: its row with cost,
  its learning curve and its per-list test metrics); a recorded run is read back instead of
  trained, so studies and seeds accumulate there across sessions and machines, and the report is
  written from those rows alone.
- Checkpoints are chosen on the validation split by the training loop; the test split is only
  evaluated, once per run.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from goalrank.config import config_differences, from_dict, merge_values, to_dict
from goalrank.data.prepare import PrepareConfig, prepare
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ArtifactError, DataError
from goalrank.evaluate.audit import AuditConfig, RewardBeam, reference_rankers, shortcut_warning
from goalrank.experiments.config import BenchmarkConfig, DatasetSpec
from goalrank.experiments.evaluation import evaluate_test, record_test, true_reward_of
from goalrank.experiments.folder import BenchmarkFolder
from goalrank.experiments.plan import REFERENCE, REWARD_BEAM, SANITY_ROWS, RunSpec, plan
from goalrank.experiments.report import write_report
from goalrank.experiments.results import (
    REWARD_STUDY,
    ResultsStore,
    dataset_identity,
    digest,
    learning_curve,
    run_cost,
)
from goalrank.groups.auxiliary import RewardBeamPolicy
from goalrank.io import read_json, read_recorded_json
from goalrank.models.base import Ranker
from goalrank.models.blocks import count_parameters
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import ORACLE, build_model, load_reward_model
from goalrank.runs.registry import MODELS
from goalrank.simulate import SimConfig, simulate
from goalrank.simulate.folder import SimulatorFolder
from goalrank.train.run import RankerRunConfig, build_ranker_config, build_reward_config, train_ranker, train_reward

# the reward table's columns as `results/reward/` names them (the exact click probabilities' AUC is a ceiling)
REWARD_COLUMNS = {"test_ceiling_auc": "ceiling_auc"}


def stage(done: Path, build: Callable[[], Any], label: str) -> None:
    """Run ``build`` unless the file ``done`` (what it writes last) exists: re-running skips finished stages."""
    if done.is_file():
        print(f"[skip] {label}: {done.parent} is complete")
        return
    print(f"[run ] {label}", flush=True)
    build()


def run_benchmark(out: Path, config: BenchmarkConfig, command: str) -> str:
    """Run (or resume) every study of ``config`` under ``out``; write and return ``report.md``.

    Every finished run is recorded in the results folder (``config.results``, default
    ``OUT/results``); a run recorded there is read back instead of trained, and the report is
    written from the recorded rows, as `goalrank report` writes it from a results folder alone.
    """
    folder = BenchmarkFolder(out)
    store = ResultsStore(Path(config.results) if config.results else folder.results)
    start = time.perf_counter()
    specs = plan(config)
    rows: list[dict[str, Any]] = []
    rewards: list[dict[str, Any]] = []  # each seed's reward model: its quality figures (evaluate.fidelity)
    for dataset_spec in config.dataset_specs:
        name = dataset_spec.name
        dataset = PreparedDataset(prepare_dataset(folder, dataset_spec, config))
        data = dataset_identity(dataset)
        dataset_specs = specs_for(dataset, specs, name)
        for seed in config.seeds:
            seed_dir = folder.seed(name, seed)
            where = f"[{name} seed {seed}]"
            reward_dir = seed_dir / reward_name(dataset, config.reward, seed)
            recorded = store.find(name, data, seed, reward_dir.name, None)
            reward = functools.cache(partial(_ensure_reward, store, reward_dir, dataset, name, data, config.reward,
                                             seed, where, recorded))
            if recorded is not None:
                print(f"[skip] {where} reward model: recorded in {store.root}")
            rewards.append(recorded or reward())
            seed_specs = [spec for spec in dataset_specs if spec.study != "tune" or seed in config.tune_seeds]
            for index, spec in enumerate(seed_specs, 1):
                label = f"[{name} seed {seed} {index}/{len(seed_specs)}] {spec.study}: {spec.label}"
                run = ranker_run(spec, config, dataset, seed, evaluator_of(spec, reward_dir))
                row = store.find(name, data, seed, run.name, config.beam_width)
                columns = spec_columns(spec)
                if row is None:
                    if run.reward_dir is not None and spec.evaluator != ORACLE:
                        reward()
                    row = _record_ranker(store, spec, run, seed_dir, dataset, name, data, config, seed, label)
                else:
                    print(f"[skip] {label}: recorded in {store.root}")
                    row = store.name_reward_run(row, run.reward_run)
                    store.share(row, columns)
                rows.append({**row, **columns})
            if "table1" in config.studies:
                rows.append(_reward_beam_row(store, seed_dir, reward_dir, reward, dataset, data, config, name, seed))
                rows += _sanity_rows(store, seed_dir, dataset, data, config, name, seed)
    report = write_report(folder, config, rows, rewards, store, command, time.perf_counter() - start)
    print(f"report written to {folder.report}; results recorded in {store.root}; training curves of every run: "
          f"tensorboard --logdir {folder.runs}")
    return report


def specs_for(dataset: PreparedDataset, specs: list[RunSpec], name: str) -> list[RunSpec]:
    """The specs that apply to ``dataset``: the exact-reward study's only on simulator data."""
    kept = [spec for spec in specs if spec.evaluator != ORACLE or dataset.simulator_world]
    if len(kept) < len(specs):
        print(f"[skip] {name}: the oracle study needs simulator data")
    return kept


def evaluator_of(spec: RunSpec, reward_dir: Path) -> Path:
    """What the run is trained against: the seed's reward-model run, or ``oracle``."""
    return Path(ORACLE) if spec.evaluator == ORACLE else reward_dir


def prepare_dataset(folder: BenchmarkFolder, spec: DatasetSpec, config: BenchmarkConfig) -> Path:
    """Prepared-dataset folder of ``spec`` (built if missing; the built-in world simulated first)."""
    data_dir = folder.dataset(spec.name)
    log = spec.path
    if log is None:
        world = folder.world(spec.name)
        sim_config = from_dict(SimConfig, config.simulate, "simulate")
        manifest = SimulatorFolder(world).manifest
        stage(manifest, lambda: simulate(sim_config, world), f"simulate {spec.name}")
        check_reused(manifest, to_dict(sim_config))
        log = world
    elif not log.exists():
        raise DataError(f"--dataset {spec.name}={spec.source}:{log}: not found; expected a log that "
                        f"`goalrank prepare --source {spec.source}` reads")
    prepare_config = from_dict(PrepareConfig, {**config.prepare, "source": spec.source, "input": str(log)}, "prepare")
    manifest = PreparedDataset.manifest_path(data_dir)
    stage(manifest, lambda: _prepare_and_warn(prepare_config, data_dir), f"prepare {spec.name}")
    # the built-in world lives inside OUT, so a moved benchmark folder reads it at another path
    check_reused(manifest, to_dict(prepare_config), ignore=("input",) if spec.path is None else ())
    return data_dir


def _prepare_and_warn(config: PrepareConfig, data_dir: Path) -> None:
    warning = shortcut_warning(prepare(config, data_dir))
    if warning:
        print(warning, file=sys.stderr)


def check_reused(manifest: Path, config: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Refuse a folder a finished stage left if it was made with another config than the one asked for.

    Skipping a stage whose folder exists is what makes re-runs resume; reusing one made with other
    settings (another logging policy, other candidates) would silently report old figures.
    """
    saved = {key: value for key, value in read_json(manifest).get("config", {}).items() if key not in ignore}
    differences = config_differences(saved, {key: value for key, value in config.items() if key not in ignore})
    if differences:
        raise ArtifactError(f"{manifest.parent}: made with another config than this run asks for ("
                            + "; ".join(differences) + "); remove it or choose another --out")


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

    @property
    def reward_run(self) -> str:
        """The results row's ``reward_run``: the evaluator's run name, ``oracle``, or "" without one."""
        return self.reward_dir.name if self.reward_dir is not None else ""


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
    return RankerRun(f"{spec.model}-{digest(identity)}", spec.model, values, run_config,
                     reward_dir if uses_reward else None)


def reward_name(dataset: PreparedDataset, reward: dict[str, Any], seed: int) -> str:
    """The folder name of the seed's reward run: a digest of its resolved config."""
    return f"reward-{digest(to_dict(build_reward_config(dataset, reward_values(reward, seed))))}"


def _ensure_reward(store: ResultsStore, run_dir: Path, dataset: PreparedDataset, name: str, data: str,
                   reward: dict[str, Any], seed: int, where: str, recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The seed's reward model (the one evaluator every G-E method and GoalRank share), trained if
    missing and recorded; returns its row of the store's reward table.

    A reward run already recorded (``recorded``: its row, found by the caller) keeps its row: it is
    trained again here only because a ranker to train needs its checkpoint, and its figures agree
    with the row to float noise, while recording it again would move the row and rewrite its wall
    time with this machine's."""
    run = RunFolder(run_dir)
    stage(run.metrics, partial(train_reward, dataset.root, run_dir, reward_values(reward, seed), resume=True),
          f"{where} train reward model")
    if recorded is not None:
        return recorded
    config = run.read_config()
    curve = learning_curve(run_dir)
    metrics = read_recorded_json(run.metrics)
    best = max(curve, key=lambda point: point.get("valid_auc", -1.0))["eval"]
    row = {"study": REWARD_STUDY, "dataset": name, "data": data, "seed": seed, "run": run_dir.name, "beam_width": None,
           **run_cost(curve, best, config["train"]["batch_size"], len(dataset.split("train"))),
           **{REWARD_COLUMNS.get(key, key): value for key, value in metrics.items()}}
    store.record(row, curve)
    return row


def _record_ranker(store: ResultsStore, spec: RunSpec, run: RankerRun, seed_dir: Path, dataset: PreparedDataset,
                   name: str, data: str, config: BenchmarkConfig, seed: int, where: str) -> dict[str, Any]:
    """Train (if missing) and evaluate on test (if missing) one ranker run, and record it.

    ``reward_run`` names what the run was trained against (the seed's reward run, ``oracle``, or
    empty for a model without an evaluator): a changed reward-model default re-makes only the
    methods run again, and the report must be able to say which rows still rest on the old one.
    """
    folder = RunFolder(seed_dir / run.name)
    stage(folder.metrics, partial(train_ranker, run.model, dataset.root, folder.root, run.values, run.reward_dir,
                                  resume=True), f"{where} train")
    stage(folder.evaluation("test"), partial(evaluate_test, folder.root, config.beam_width), f"{where} evaluate")
    curve = learning_curve(folder.root)
    best = read_recorded_json(folder.metrics)["best_epoch"]
    row = {**spec_columns(spec), "dataset": name, "data": data, "seed": seed, "run": run.name,
           "reward_run": run.reward_run,
           "beam_width": config.beam_width, "parameters": parameter_count(folder.root),
           **run_cost(curve, best, run.config.train.batch_size, len(dataset.split("train"))),
           **read_recorded_json(folder.evaluation("test"))}
    store.record(row, curve, folder.per_list("test"))
    return row


def _sanity_rows(store: ResultsStore, seed_dir: Path, dataset: PreparedDataset, data: str,
                 config: BenchmarkConfig, name: str, seed: int) -> list[dict[str, Any]]:
    """Table 1's floor and ceiling: the audit's reference rankers, evaluated like every method.

    The list oracle's run name holds its beam width, so a run with another ``beam_width`` does not
    reuse it; the panel (training-split statistics) is built only when a row is missing.
    """
    true_reward = true_reward_of(dataset, config.beam_width)
    names = [ranker for ranker in SANITY_ROWS if true_reward is not None or not ranker.endswith("_oracle")]
    panel = functools.cache(partial(reference_rankers, dataset, true_reward, seed))

    def from_panel(key: str) -> Ranker:
        return panel()[key]

    rows = []
    for ranker_name in names:
        suffix = f"-beam{config.beam_width}" if ranker_name == "list_oracle" else ""
        run = RunFolder(seed_dir / f"{REFERENCE}-{ranker_name}{suffix}")
        rows.append(_reference_row(store, run, ranker_name, partial(from_panel, ranker_name), dataset, data,
                                   config, name, seed))
    return rows


def _reward_beam_row(store: ResultsStore, seed_dir: Path, reward_dir: Path, reward: Callable[[], Any],
                     dataset: PreparedDataset, data: str, config: BenchmarkConfig, name: str,
                     seed: int) -> dict[str, Any]:
    """Table 1's ``reward_beam`` row: the seed's reward model ranking by the beam search of the
    group's ``reward_beam`` policy (with the rankers' settings of it), evaluated like every method.

    Its run name holds the search's settings and the reward run, so another reward model or search
    is another row; the reward model is trained only when the row is missing and so is its run.
    """
    beam = from_dict(RewardBeamPolicy, config.ranker.get("group", {}).get("reward_beam", {}),
                     "ranker.group.reward_beam")
    run = RunFolder(seed_dir / f"{REFERENCE}-{REWARD_BEAM}-w{beam.beam_width}t{beam.top}-{reward_dir.name}")

    def ranker() -> Ranker:
        reward()
        return RewardBeam(dataset.list_len, load_reward_model(reward_dir, "cpu"), beam)

    return _reference_row(store, run, REWARD_BEAM, ranker, dataset, data, config, name, seed, reward_dir.name)


def _reference_row(store: ResultsStore, run: RunFolder, ranker_name: str, ranker: Callable[[], Ranker],
                   dataset: PreparedDataset, data: str, config: BenchmarkConfig, name: str,
                   seed: int, reward_run: str = "") -> dict[str, Any]:
    """One reference row of Table 1 (no training): read back from the store, or ``ranker()``
    evaluated on test into ``run`` (if not already there) and recorded; ``reward_run`` as for a
    ranker (``reward_beam`` ranks by one)."""
    spec = RunSpec("table1", ranker_name, "", REFERENCE)
    where = f"[{name} seed {seed}] {ranker_name}"
    row = store.find(name, data, seed, run.root.name, config.beam_width)
    if row is not None:
        print(f"[skip] {where}: recorded in {store.root}")
        row = store.name_reward_run(row, reward_run)
    else:
        stage(run.evaluation("test"), lambda: record_test(run, ranker(), dataset, AuditConfig.batch_size,
                                                          torch.device("cpu"),
                                                          true_reward_of(dataset, config.beam_width)), where)
        row = {**spec_columns(spec), "dataset": name, "data": data, "seed": seed, "run": run.root.name,
               "reward_run": reward_run, "beam_width": config.beam_width, "parameters": 0,
               **read_recorded_json(run.evaluation("test"))}
        store.record(row, [], run.per_list("test"))
    return {**row, **spec_columns(spec)}


def parameter_count(run_dir: Path) -> int:
    """Trainable parameters of a run's ranker (the shared evaluator excluded), built on the meta device."""
    config = RunFolder(run_dir).read_config()
    name = config["model_name"]
    model_config = from_dict(MODELS[name].config_cls, config["model"], "model")
    with torch.device("meta"):
        return count_parameters(build_model(name, model_config, evaluator=None))


def spec_columns(spec: RunSpec) -> dict[str, Any]:
    """The columns a study gives a run's row: the same run is K=20 of one study and Table 1's GoalRank."""
    return {"study": spec.study, "method": spec.cli_name, "name": spec.method, "setting": spec.setting,
            "label": spec.label, "model": spec.model, "grid_value": spec.grid_value}

