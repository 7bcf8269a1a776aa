"""The benchmark's report: one CSV per study, markdown tables (mean ± std over seeds, the paired
bootstrap of GoalRank against the best baseline), PNG plots, and the paper's numbers beside ours."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from goalrank.config import from_dict, to_dict
from goalrank.errors import ArtifactError
from goalrank.evaluate.metrics import metric_names
from goalrank.evaluate.plots import Curve, plot_panels
from goalrank.evaluate.protocol import COMPLETE, ORACLE_RATIO, TRUE_REWARD
from goalrank.experiments.config import STUDIES, BenchmarkConfig
from goalrank.experiments.folder import BenchmarkFolder
from goalrank.experiments.paper import (
    GOALRANK,
    PAPER_LIST_LEN,
    TABLE1_ML1M,
    TABLE3_GROUP_SIZE,
    TABLE3_REWARD_NOISE,
)
from goalrank.experiments.plan import REFERENCE, REWARD_BEAM, TUNE_METRIC, TUNE_NAMES, TUNE_SETTINGS, report_order
from goalrank.experiments.results import REWARD_STUDY, ResultsStore
from goalrank.experiments.statistics import best_baseline, mean_std, paired_bootstrap
from goalrank.io import record_checksum, write_recorded_json, write_recorded_text
from goalrank.runs.registry import MODELS

TABLE_KEYS = ("H", "NDCG", "MAP", "F1", "AUC", *(f"{COMPLETE}{name}" for name in ("H", "NDCG", "MAP", "F1", "AUC")),
              TRUE_REWARD, ORACLE_RATIO)


def summary_table(rows: dict[str, list[dict[str, Any]]], keys: list[str] | None = None) -> str:
    """Markdown table of mean ± sample std (over seeds) of every metric (or of ``keys``) for every
    model, with the number of seeds behind each row; the mean alone for one seed, — for none."""
    first = next(iter(rows.values()))[0]
    if keys is None:
        keys = sorted((k for k in first if k.split("@")[0] in TABLE_KEYS),
                      key=lambda k: TABLE_KEYS.index(k.split("@")[0]))
    header = "| model | seeds | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 2)]
    for name, results in rows.items():
        cells = []
        for key in keys:
            values = [r[key] for r in results if r[key] is not None]
            if not values:
                cells.append("—")
                continue
            mean = f"{statistics.mean(values):.4f}"
            cells.append(f"{mean} ± {statistics.stdev(values):.4f}" if len(values) > 1 else mean)  # no spread of one
        lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def list_len_of(rows: list[dict[str, Any]]) -> int:
    """L of a dataset's rows, read from their metric names (``NDCG@6``)."""
    for key in rows[0]:
        if key.startswith("NDCG@"):
            return int(key.partition("@")[2])
    raise ArtifactError(f"rows of {rows[0].get('dataset')!r} have no NDCG@L column")


def write_report(folder: BenchmarkFolder, config: BenchmarkConfig, rows: list[dict[str, Any]],
                 rewards: list[dict[str, Any]], store: ResultsStore, command: str, seconds: float) -> str:
    """Write one CSV per study (and one of the reward models, ``rewards``: one row per dataset and
    seed), the PNG plots and ``report.md`` (returned), atomically and in SHA256SUMS. The rows are
    results-folder rows (``experiments.results``); ``store`` holds their per-list metrics."""
    folder.root.mkdir(parents=True, exist_ok=True)
    write_recorded_json(folder.config, to_dict(config))
    rows = report_order(rows)
    sections = [_report_header(config, command, seconds, len({(r["dataset"], r["seed"], r["run"]) for r in rows}))]
    if rewards:
        write_recorded_text(folder.table("reward"), pl.from_dicts(rewards, infer_schema_length=None).write_csv())
        sections.append(_reward_section(rewards))
    renderers = {"table1": _table1_section, "tune": _tune_section, "oracle": _oracle_section,
                 "groupsize": _group_size_section, "bias": _bias_section, "scaling": _scaling_section}
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    for study in config.studies:
        study_rows = [r for r in rows if r["study"] == study]
        if not study_rows:
            continue
        write_recorded_text(folder.table(study), pl.from_dicts(study_rows, infer_schema_length=None).write_csv())
        for dataset in datasets:
            dataset_rows = [r for r in study_rows if r["dataset"] == dataset]
            if dataset_rows:  # the oracle study has no rows on real data
                sections.append(renderers[study](folder, config, store, dataset, list_len_of(dataset_rows),
                                                 dataset_rows))
    report = "\n\n".join(sections) + "\n"
    write_recorded_text(folder.report, report)
    return report


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study, dataset, label and seed: the one recorded last (a run made again with
    another config, or on remade data, supersedes the old row); each superseded run is named."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:  # in recording order
        key = (row["study"], row["dataset"], row["label"], row["seed"])
        if key in latest:
            print(f"warning: {row['study']}/{row['dataset']}: {row['label']} seed {row['seed']}: run "
                  f"{latest[key]['run']} (data {latest[key]['data']}) superseded by {row['run']} (data {row['data']})",
                  file=sys.stderr)
        latest[key] = row
    return list(latest.values())


def write_results_report(results: Path, out: Path, command: str, values: dict[str, Any]) -> str:
    """`goalrank report RESULTS --out DIR`: every table, plot and ``DIR/report.md`` from a results
    folder alone (no data, no checkpoints): every recorded study, dataset and seed. ``values``: the
    report's BenchmarkConfig fields (``bootstrap_samples``, ``bootstrap_seed``, ``alpha``)."""
    store = ResultsStore(results)
    if not results.is_dir():
        raise ArtifactError(f"{results}: no such results folder")
    studies = tuple(study for study in STUDIES if study in store.studies())
    if not studies:
        raise ArtifactError(f"{results}: holds no study table ({', '.join(STUDIES)}); record runs with "
                            "`goalrank benchmark --results DIR` first")
    rows = latest_rows([row for study in studies for row in store.rows(study)])
    seeds = tuple(sorted({int(row["seed"]) for row in rows}))
    config = from_dict(BenchmarkConfig, {**values, "seeds": seeds, "studies": studies, "results": str(results)},
                       "report")
    rewards = store.rows(REWARD_STUDY) if REWARD_STUDY in store.studies() else []
    return write_report(BenchmarkFolder(out), config, rows, rewards, store, command, 0.0)


def _report_header(config: BenchmarkConfig, command: str, seconds: float, n_runs: int) -> str:
    lines = [
        "# GoalRank reproduction benchmark",
        f"Produced by `{command}` ({n_runs} runs; this invocation took {seconds:.0f} s; "
        "runs recorded in the results folder are read back, not trained again).",
        f"Seeds: {', '.join(map(str, config.seeds))} (the `seeds` column says how many each row has). "
        "Every number is a test-split result of a checkpoint "
        "chosen on the validation split; cells are mean ± sample std over seeds (the mean alone for one "
        "seed), as fractions (the paper prints percentages). `true_reward` is the exact expected list reward "
        "under the simulator and `oracle_ratio` its ratio to a beam-search oracle's (simulator data only). "
        "One reward model per dataset and seed is the evaluator of every G-E/MG-E method and GoalRank's "
        "reward model.",
        "Significance: two-sided paired bootstrap over test lists (per-list differences averaged over "
        f"seeds, {config.bootstrap_samples} resamples), GoalRank vs the best baseline of each metric.",
        "Paper reference columns are copied from the paper (÷ 100): Table 1 is on **ML-1M** and Table 3 on "
        "the authors' **Industry** data — different datasets from ours, for "
        "orientation only.",
    ]
    return "\n\n".join(lines)


def _by_label(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["label"], []).append(row)
    return grouped


def _by_grid(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``_by_label`` in grid order (K, β, else size) per method, not in the order the rows were
    recorded: a study split across processes records K=10 before K=3; tables and curves need K=3 first."""
    return _by_label(sorted(rows, key=lambda row: (row["method"], _grid_x(row))))


def _grid_x(row: dict[str, Any]) -> float:
    return float(row["grid_value"] if row["grid_value"] is not None else row["parameters"])


def _metric_keys(list_len: int, rows: list[dict[str, Any]]) -> list[str]:
    """The paper's five metrics on logged labels, then, where the rows have them (simulator data),
    the same on complete labels and the true reward."""
    if TRUE_REWARD not in rows[0]:
        return list(metric_names(list_len))
    return [*metric_names(list_len), *(f"{COMPLETE}{name}" for name in metric_names(list_len)), TRUE_REWARD]


def _summary(grouped: dict[str, list[dict[str, Any]]], list_len: int) -> str:
    """``summary_table`` with the columns in the paper's order (result files store keys sorted)."""
    first = next(iter(grouped.values()))
    keys = [*_metric_keys(list_len, first), *([ORACLE_RATIO] if ORACLE_RATIO in first[0] else [])]
    return summary_table({label: [{k: r[k] for k in keys} for r in runs] for label, runs in grouped.items()})


def _reference_table(title: str, reference: Mapping[Any, tuple[float, ...]]) -> str:
    """The paper's rows as fractions, under the paper's own metric names (its L is 6)."""
    names = metric_names(PAPER_LIST_LEN)
    lines = [f"| {title} | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    lines += [f"| {key} | " + " | ".join(f"{v / 100:.4f}" for v in reference[key]) + " |"
              for key in reference]
    return "\n".join(lines)


def _table1_section(folder: BenchmarkFolder, config: BenchmarkConfig, store: ResultsStore, dataset: str,
                    list_len: int, rows: list[dict[str, Any]]) -> str:
    grouped = _by_label(rows)
    keys = _metric_keys(list_len, rows)
    means = {label: {k: mean_std([r[k] for r in runs])[0] for k in keys} for label, runs in grouped.items()
             if runs[0]["model"] != REFERENCE}
    lines = [f"| metric | best baseline | seeds | baseline | {GOALRANK} | improv. | Δ per list [95% CI] | p | "
             f"p < {config.alpha} |", "|---|---|---|---|---|---|---|---|---|"]
    for key in keys if GOALRANK in means and len(means) > 1 else ():
        baseline, _ = best_baseline({label: m[key] for label, m in means.items()}, GOALRANK)
        seeds = {r["seed"] for r in grouped[GOALRANK]} & {r["seed"] for r in grouped[baseline]}
        if not seeds:
            continue
        # the means and the improvement on the seeds both have, as the test pairs them: over all
        # seeds a method with more of them could show the other sign than the test
        common = {label: mean_std([r[key] for r in grouped[label] if r["seed"] in seeds])[0]
                  for label in (baseline, GOALRANK)}
        _, improvement = best_baseline(common, GOALRANK)
        test = paired_bootstrap(_per_list(store, grouped[GOALRANK], key, seeds),
                                _per_list(store, grouped[baseline], key, seeds),
                                config.bootstrap_samples, config.bootstrap_seed)
        lines.append(f"| {key} | {baseline} | {len(seeds)} | {common[baseline]:.4f} | {common[GOALRANK]:.4f} | "
                     f"{improvement:+.2%} | {test.mean_difference:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}] | "
                     f"{test.p_value:.4f} | {'yes' if test.p_value < config.alpha else 'no'} |")
    trained = [r for r in rows if r["model"] != REFERENCE and r.get("steps") is not None]
    stopped = sum(r["best_step"] < r["steps"] for r in trained)
    return "\n\n".join([
        f"## Table 1 — {dataset} (test split)",
        _summary(grouped, list_len),
        f"Early stopping: in {stopped} of {len(trained)} runs the chosen checkpoint came before the last "
        "validation pass (the others may have stopped at the budget, still improving); the steps and wall "
        "time of every run are in the study's CSV.",
        "Rows `random`, `popularity`, `exposure_rate` (and on simulator data `itemwise_oracle`, `list_oracle`) are "
        "reference rankers without training (`goalrank audit`), evaluated by the same code: the table's floor and "
        "ceiling, not baselines. Row `reward_beam` is the seed's reward model ranking by its own beam search (the "
        "group's `reward_beam` policy): how good the lists are that the reward model itself prefers, beside "
        "what GoalRank learned from its scores. On simulator data the columns are the "
        "logged-label metrics, the same on complete labels (`complete_`), and the true list reward.",
        f"GoalRank vs the best baseline per metric ({dataset}; best baseline by its mean over all its seeds; "
        "means, improvement and paired bootstrap over test lists on the seeds both have):",
        "\n".join(lines) if len(lines) > 2 else "(no test: GoalRank or every baseline has no run recorded yet)",
        *_evaluators_note(rows),
        "Paper reference — **ML-1M**, a different dataset (Table 1 of the paper, ÷ 100):",
        _reference_table("method (paper, ML-1M)", TABLE1_ML1M),
    ])


def _evaluators_note(rows: list[dict[str, Any]]) -> list[str]:
    """Which reward run each row was trained against (``reward_run``), per seed. A seed whose rows
    rest on more than one is not one comparison: a reward-model default changed and not every
    method has been trained again yet. Rows recorded before the column existed count as one more
    (``NOT_RECORDED``): nothing in them says that they share the others' reward model."""
    by_seed: dict[int, dict[str, list[str]]] = {}
    for row in rows:
        evaluator = row.get("reward_run") or (NOT_RECORDED if _uses_reward_model(row) else "")
        if evaluator:
            by_seed.setdefault(row["seed"], {}).setdefault(evaluator, []).append(row["label"])
    if not by_seed:
        return []

    def listed(evaluator: str, labels: list[str]) -> str:
        shown = evaluator if evaluator == NOT_RECORDED else f"`{evaluator}`"
        return f"{shown} ({', '.join(sorted(labels))})"

    seeds = [f"seed {seed}: " + "; ".join(listed(*item) for item in sorted(by_seed[seed].items()))
             for seed in sorted(by_seed)]
    mixed = [str(seed) for seed in sorted(by_seed) if len(by_seed[seed]) > 1]
    warning = (f" **Seed{'s' if len(mixed) > 1 else ''} {', '.join(mixed)} mix reward models**: compare "
               "only rows trained against the same one." if mixed else "")
    return ["Reward model each row was trained against or ranks by (`reward_run`; the reward models' "
            "figures are in the reward-model section): " + " · ".join(seeds) + "." + warning]


def _uses_reward_model(row: dict[str, Any]) -> bool:
    return row["method"] == REWARD_BEAM or (row["model"] in MODELS and MODELS[row["model"]].uses_reward_model)


def _per_list(store: ResultsStore, runs: list[dict[str, Any]], key: str, seeds: set[int]) -> np.ndarray:
    """(S, n) per-list values of ``key`` over the runs of one method with a seed in ``seeds`` (the
    seeds both sides of the paired test have), in seed order."""
    return np.stack([store.per_list(run)[key] for run in sorted(runs, key=lambda r: r["seed"]) if run["seed"] in seeds])


NOT_RECORDED = "not recorded"
REWARD_KEYS = ("run", "valid_auc", "test_auc", "ceiling_auc", "test_ece", "spearman_random", "spearman_group",
               "best_step", "steps", "wall_s")


def _reward_section(rewards: list[dict[str, Any]]) -> str:
    """Each seed's reward model: per-item AUC and calibration, and on simulator data its ceiling
    and its agreement with the exact reward (``evaluate.fidelity``)."""
    keys = [key for key in REWARD_KEYS if any(key in row for row in rewards)]  # real logs lack the simulator's
    lines = ["| dataset | seed | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    lines += [f"| {r['dataset']} | {r['seed']} | " + " | ".join(_reward_cell(k, r.get(k)) for k in keys) + " |"
              for r in sorted(rewards, key=lambda r: (str(r["dataset"]), r["seed"]))]
    return "\n\n".join([
        "## Reward model (the evaluator of GoalRank and every G-E method)",
        "Per-item AUC and expected calibration error on the logged lists; on simulator data the AUC of the "
        "simulator's exact click probabilities on the same test items (`ceiling_auc`, no model can beat it "
        "on average) and the Spearman correlation of the model's list reward with the exact one, on random lists "
        "and within GoalRank's groups for a fresh generator.",
        "\n".join(lines),
    ])


def _reward_cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "run":
        return f"`{value}`"
    return f"{value:.0f}" if key in ("best_step", "steps", "wall_s") else f"{value:.4f}"


def _oracle_section(folder: BenchmarkFolder, config: BenchmarkConfig, store: ResultsStore, dataset: str,
                    list_len: int, rows: list[dict[str, Any]]) -> str:
    return "\n\n".join([
        f"## Exact-reward diagnostic — {dataset}",
        "GoalRank and every generator–evaluator method trained and ranking with the simulator's exact list "
        "reward as the evaluator (`--reward oracle`), checkpoints chosen by validation true reward: what the "
        "generator and the objective can reach when the reward model is not the limit (Theorem 1 assumes an "
        "exact reward). Compare `true_reward` and `oracle_ratio` with Table 1's rows of the same methods.",
        _summary(_by_label(rows), list_len),
        *_kl_section(rows),
    ])


def _kl_section(rows: list[dict[str, Any]]) -> list[str]:
    """On a world whose lists can all be enumerated, each method's KL(π* ‖ its policy) (``evaluate.policy_kl``)."""
    keys = sorted({key for row in rows for key, value in row.items() if key.startswith("kl_") and value is not None})
    if not keys:
        return []
    uniform = sorted({key for row in rows for key in row if key.startswith("kl_uniform_") and row[key] is not None})
    keys = [key for key in keys if key not in uniform]
    kl_rows = {label: [{key: run.get(key) for key in keys} for run in runs] for label, runs in _by_label(rows).items()
               if any(run.get(key) is not None for run in runs for key in keys)}
    if uniform:  # the same for every method of a seed (it depends on the data alone): one run per seed
        per_seed = {row["seed"]: row for row in rows if row.get(uniform[0]) is not None}
        kl_rows["uniform policy (scale)"] = [
            {key: row.get(key.replace("oracle", "uniform")) if key.startswith("kl_oracle_") else None for key in keys}
            for row in per_seed.values()]
    return [
        "Every list of this world can be enumerated, so the oracle Boltzmann policy π* of Eq. 2 is exact: "
        "`kl_oracle_tT` is KL(π* ‖ the method's policy) at temperature T (rewards standardised over all lists, "
        "as the reference policy standardises a group); for MG-E the policy of the generator whose list was "
        "served, and `kl_mixture_tT` the best mixture of its G generators (Definition 2), fitted on π* itself. "
        "Methods without a policy density (item-wise scorers, PIER's permutation search) have none.",
        summary_table(kl_rows, keys),
    ]


def tune_choice(scores: Mapping[str, Mapping[int, float]]) -> tuple[str, str]:
    """The tuning rule (docs/results.md, steps 3–4) on one method's settings: the chosen setting and
    why, as the report prints it.

    ``scores`` maps each setting to its rule metric per tuning seed. A setting is compared with the
    default on the seeds both have (the paired mean difference): means over different seeds would let
    a setting trained on one lucky seed beat a default averaged over three. The setting with the
    largest positive margin wins, unless it has fewer seeds than the default and its margin is within
    the default's seed spread (sample std over the default's seeds): then the default is kept until the
    setting has been trained on the default's other seeds (step 4)."""
    def seeds(chosen: set[int]) -> str:
        return f"seed{'s' if len(chosen) > 1 else ''} {', '.join(map(str, sorted(chosen)))}"

    default = scores.get("default")
    if not default:
        best = max(scores, key=lambda setting: statistics.mean(scores[setting].values()))
        return best, f"{statistics.mean(scores[best].values()):.4f}; no default recorded to compare with"
    paired = {setting: shared for setting, values in scores.items()
              if setting != "default" and (shared := set(values) & set(default))}
    margins = {setting: statistics.mean(scores[setting][seed] - default[seed] for seed in shared)
               for setting, shared in paired.items()}
    kept = f"{statistics.mean(default.values()):.4f}, {seeds(set(default))}"
    if not margins:
        return "default", kept + "; no other setting shares a seed with it"
    leader = max(margins, key=margins.__getitem__)
    shared = paired[leader]
    versus = f"{leader} by {margins[leader]:+.4f} on {seeds(shared)}"
    if margins[leader] <= 0:
        return "default", kept + f"; the closest, {versus}"
    spread = statistics.stdev(default.values()) if len(default) > 1 else None
    if spread is not None and len(shared) < len(default) and margins[leader] <= spread:
        return "default", kept + (f"; step 4: {versus} leads within the default's seed spread, std {spread:.4f}, "
                                  f"and is trained on {seeds(set(default) - shared)} before it can win")
    mean = statistics.mean(scores[leader][seed] for seed in shared)
    return leader, f"{mean:.4f} against the default's {mean - margins[leader]:.4f} on {seeds(shared)}"


def _tune_section(folder: BenchmarkFolder, config: BenchmarkConfig, store: ResultsStore, dataset: str,
                  list_len: int, rows: list[dict[str, Any]]) -> str:
    """The tuning study on validation only: each setting's validation metrics at its chosen checkpoint
    (from its learning curve; mean over the tuning seeds) and, per method, the setting the rule picks
    (``tune_choice``).

    The rule compares only settings trained against the same reward run as the method's default on
    each seed both have: after a reward-model default changes, a setting not yet trained again is
    shown, not chosen."""
    # on simulator data runs since the validation passes measure it also show the true reward (not the rule)
    names = [f"valid_{name}" for name in (*metric_names(list_len), TRUE_REWARD)]
    rule = f"valid_{TUNE_METRIC}@{list_len}"
    table = ["| method | setting | seeds | reward_run | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 4)]
    scores: dict[str, dict[str, dict[int, float]]] = {}
    evaluators: dict[str, dict[str, dict[int, str]]] = {}
    for runs in _by_label(rows).values():
        points = {int(run["seed"]): point for run in runs for point in store.curve(run)
                  if point["step"] == run["best_step"]}
        if not points:
            continue
        means = {key: statistics.mean(values) if (values := [p[key] for p in points.values() if p.get(key) is not None])
                 else None for key in names}
        scores.setdefault(runs[0]["name"], {})[runs[0]["setting"]] = {
            seed: cast(float, point[rule]) for seed, point in points.items()}
        evaluated = {int(run["seed"]): run.get("reward_run") or "" for run in runs}
        evaluators.setdefault(runs[0]["name"], {})[runs[0]["setting"]] = evaluated
        shown = ", ".join(f"`{name}`" if name else NOT_RECORDED for name in sorted(set(evaluated.values())))
        table.append(f"| {runs[0]['name']} | {runs[0]['setting']} | {len(points)} | {shown} | "
                     + " | ".join("—" if means[key] is None else f"{means[key]:.4f}" for key in names) + " |")
    planned = {TUNE_NAMES[model]: len(settings) for model, settings in TUNE_SETTINGS.items()}
    choices = []
    for method, recorded in scores.items():
        default_evaluators = evaluators[method].get("default", {})
        by_setting = {setting: score for setting, score in recorded.items()
                      if all(default_evaluators.get(seed, run) == run
                             for seed, run in evaluators[method][setting].items())}
        unfinished = (f"; only {len(by_setting)} of its {planned[method]} settings recorded so far"
                      if len(by_setting) < planned.get(method, 0) else "")
        stale = sorted(set(recorded) - set(by_setting))
        excluded = (f"; not compared, trained against another reward model than the default's: {', '.join(stale)}"
                    if stale else "")
        chosen, why = tune_choice(by_setting)
        choices.append(f"- {method}: **{chosen}** ({rule} {why}{unfinished}{excluded})")
    return "\n\n".join([
        f"## Tuning study — {dataset} (validation split only)",
        "Each setting changes one knob of the defaults (`experiments.plan.TUNE_SETTINGS`) and trains under "
        f"the same budget and stopping rule as Table 1. The rule ({rule} at each run's chosen checkpoint) "
        "compares each setting with the default on the seeds both have and picks the largest gain; a gain "
        "within the default's seed spread, measured on fewer seeds than the default has, waits for those "
        "seeds. The test split plays no part; each setting's test figures are in the study's CSV for "
        "reference only.",
        "\n".join(table),
        "Chosen by the rule:\n" + "\n".join(choices) if choices else "(no learning curve recorded yet)",
    ])


def _group_size_section(folder: BenchmarkFolder, config: BenchmarkConfig, store: ResultsStore, dataset: str,
                        list_len: int, rows: list[dict[str, Any]]) -> str:
    grouped = _by_grid(rows)
    plot = _plot_grid(rows, list_len, "group size K", folder.plot("groupsize", dataset),
                      f"GoalRank vs group size K — {dataset}")
    return "\n\n".join([
        f"## Group size K (Table 3) — {dataset}",
        _summary(grouped, list_len),
        f"![group size, {dataset}]({plot.name})",
        "Paper reference — the authors' **Industry** data (Table 3, ÷ 100):",
        _reference_table("K (paper, Industry)", TABLE3_GROUP_SIZE),
    ])


def _bias_section(folder: BenchmarkFolder, config: BenchmarkConfig, store: ResultsStore, dataset: str,
                  list_len: int, rows: list[dict[str, Any]]) -> str:
    # the noise redrawn every step first (settings "β=0.2"), then each other kind ("β=0.2 fixed"), each by β
    grouped = _by_label(sorted(rows, key=lambda row: (str(row["setting"]).partition(" ")[2], _grid_x(row))))
    return "\n\n".join([
        f"## Reward-model bias β (Table 3) — {dataset}",
        "`β=B`: noise B·σ_G·ε added to every list's reward (σ_G: the spread of its group), ε drawn afresh "
        "at every step; `β=B fixed`: one ε per user and list for the whole run, as a biased reward model's "
        "error stays with the list, so the list's error in group-standardised units stays about B·ε "
        "(`reference.reward_noise_kind`).",
        _summary(grouped, list_len),
        "Paper reference — the authors' **Industry** data (Table 3, ÷ 100):",
        _reference_table("β (paper, Industry)", TABLE3_REWARD_NOISE),
    ])


def _scaling_section(folder: BenchmarkFolder, config: BenchmarkConfig, store: ResultsStore, dataset: str,
                     list_len: int, rows: list[dict[str, Any]]) -> str:
    grouped = _by_grid(rows)
    sized = {f"{label} ({runs[0]['parameters'] / 1e6:.3f}M params)": runs for label, runs in grouped.items()}
    plot = _plot_grid(rows, list_len, "parameters", folder.plot("scaling", dataset),
                      f"Scaling (Fig. 3) — {dataset}")
    return "\n\n".join([
        f"## Scaling (Fig. 3) — {dataset}",
        "GoalRank, DNN and PIER grow by width x depth; MG-E by its number of generators G on the shared "
        "trunk (its G generators are heads on one network, so G adds few parameters).",
        _summary(sized, list_len),
        f"![scaling, {dataset}]({plot.name})",
    ])


def _plot_grid(rows: list[dict[str, Any]], list_len: int, x_label: str, path: Path, title: str) -> Path:
    """One curve per method over its settings; x is ``grid_value`` (K, β) or else the parameter count."""
    keys = _metric_keys(list_len, rows)
    curves: dict[str, Curve] = {}
    for runs in _by_grid(rows).values():
        first = runs[0]
        curve = curves.setdefault(first["name"], Curve(first["name"], [], {k: [] for k in keys},
                                                         {k: [] for k in keys}))
        curve.x.append(_grid_x(first))
        for key in keys:
            mean, std = mean_std([r[key] for r in runs])
            curve.mean[key].append(mean)
            curve.std[key].append(std)
    path = plot_panels(list(curves.values()), keys, x_label, title, path)
    record_checksum(path)
    return path
