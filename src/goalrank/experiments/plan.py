"""The runs each study asks for (paper §4.1): Table 1's methods, Table 3's grids, Fig. 3's sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from goalrank.config import check, merge_values
from goalrank.evaluate.protocol import TRUE_REWARD
from goalrank.experiments.config import STUDIES, BenchmarkConfig, parse_size
from goalrank.experiments.paper import GOALRANK
from goalrank.objectives.reference import FRESH
from goalrank.runs.load import ORACLE

REFERENCE = "reference"  # the model of Table 1's sanity rows: they bound the table, they are no baseline
SANITY_ROWS = ("random", "popularity", "exposure_rate", "itemwise_oracle", "list_oracle")  # oracles: simulator only
# The seed's reward model ranking by its own beam search (the group's reward_beam policy): how good
# the lists are that the reward model itself prefers, beside what GoalRank learned from its scores
# (a narrow search, so a bound of the reward model's preferences, not of GoalRank).
REWARD_BEAM = "reward_beam"

TABLE1_BASELINES = (
    ("DNN", "dnn"), ("DLCM", "dlcm"), ("PRS (SetRank)", "setrank"), ("PRM", "prm"), ("MIR", "mir"),
    ("RankMixer", "rankmixer"), ("EGRerank", "egrerank"), ("PIER", "pier"), ("NAR4Rec", "nar4rec"),
)
MGE = "MG-E"
ORACLE_METHODS = ((GOALRANK, "goalrank"), ("EGRerank", "egrerank"), ("PIER", "pier"), ("NAR4Rec", "nar4rec"))
# The exact-reward study: checkpoints chosen by the quantity the exact evaluator measures, and no
# supervised pull towards the logged lists for the two methods that have one. That term keeps a
# generator where a *learned* reward model was fitted; with the exact reward there is no such
# region to stay in (measured on the default world: GoalRank with it fell to 0.53 of the oracle,
# below random lists). GoalRank also gets the sharper reference temperature that the reference
# policy's validation true reward favoured (docs/results.md); the user-id embedding it got here
# first is now every GoalRank's default.
# The exact reward costs next to nothing to evaluate, so its beam searches wider than the default.
EXACT: dict[str, Any] = {"select_metric": TRUE_REWARD, "group": {"reward_beam": {"beam_width": 4, "top": 12}}}
EXACT_MODEL: dict[str, dict[str, Any]] = {
    "goalrank": {"reference": {"supervised_weight": 0.0, "temperature": 0.25}},
    "egrerank": {"model": {"supervised_weight": 0.0}},
}
# The tuning study: the defaults chosen by one written procedure (docs/results.md, "How the
# defaults are chosen"). Each setting changes one knob of the current defaults (one factor at a
# time), every setting trains under the profile's budget and stopping rule, and the setting with the
# best validation value of the checkpoint-selection metric at its chosen checkpoint wins; the test
# split plays no part. GoalRank's knobs: the supervised term (none, or the logged positives at the
# weight that won the old testbed's sweep), the reference temperature, the group size, the group
# mix (App. C's seven policies alone, without the frozen auxiliary ones), the reward-ranked evenly
# spaced subset (§3.3's option: K lists kept from a pool of 2K) and the user-id embedding (on by
# default since the study's first round picked it, so the knob turns it off);
# EGRerank's: the weight of its supervised term.
TUNE_METRIC = "NDCG"  # the tuning rule's validation metric at L, as the checkpoints are chosen by (train.select_metric)
APP_C_POLICIES = ("autoregressive", "tree", "gumbel", "markov", "random", "substitution", "diversity")
TUNE_SETTINGS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "goalrank": (
        ("default", {}),
        ("supervised_weight=0", {"reference": {"supervised_weight": 0.0}}),
        ("positives weight=10", {"reference": {"supervised_target": "positives", "supervised_weight": 10.0}}),
        ("temperature=0.25", {"reference": {"temperature": 0.25}}),
        ("K=10", {"group": {"group_size": 10}}),
        ("App. C mix", {"group": {"mix": dict.fromkeys(APP_C_POLICIES, 1.0)}}),
        ("spaced pool=40", {"group": {"spaced_pool_size": 40}}),
        ("no user-id embedding", {"model": {"user_embedding": False}}),
    ),
    "egrerank": (
        ("default", {}),
        ("supervised_weight=0", {"model": {"supervised_weight": 0.0}}),
        ("supervised_weight=0.3", {"model": {"supervised_weight": 0.3}}),
        ("supervised_weight=3", {"model": {"supervised_weight": 3.0}}),
    ),
}
TUNE_NAMES = {"goalrank": GOALRANK, "egrerank": "EGRerank"}
SCALED_DEPTH_FIELDS = {"goalrank": ("encoder_layers", "decoder_layers"), "dnn": ("hidden_layers",),
                       "pier": ("hidden_layers",)}
METHOD_NAMES = {"goalrank": GOALRANK, "dnn": "DNN", "pier": "PIER"}


@dataclass
class RunSpec:
    """One row of a study: ranker ``model`` with ``values`` laid over the shared ranker values.

    ``grid_value`` is the swept value (K, β) for the plots; None where the x axis is the size.
    ``evaluator``: "" for the seed's trained reward model, ``oracle`` for the simulator's exact
    list reward (the exact-reward study; simulator data only).
    """

    study: str
    method: str
    setting: str
    model: str
    values: dict[str, Any] = field(default_factory=dict)
    grid_value: float | None = None
    evaluator: str = ""

    @property
    def cli_name(self) -> str:
        """The method as the CLI spells it: the model name, MG-E as ``mge-G``, a reference ranker's own name."""
        if self.model == "mge":
            return f"mge-{self.values['model']['n_generators']}"
        return self.method if self.model == REFERENCE else self.model

    @property
    def label(self) -> str:
        return f"{self.method} {self.setting}".strip()


def report_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` in the order a report lists them: by study, then as the default plan lists the
    labels (Table 1's sanity rows last), other settings by their grid value, then by seed; rows
    read back from a results folder come in the order they were recorded, over sessions."""
    labels = [spec.label for spec in plan(BenchmarkConfig())] + [REWARD_BEAM, *SANITY_ROWS]
    rank = {label: index for index, label in enumerate(dict.fromkeys(labels))}

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        known = rank.get(row["label"], len(rank))
        grid = row.get("grid_value")
        return (STUDIES.index(row["study"]), known, grid if grid is not None else 0.0, str(row["label"]), row["seed"])

    return sorted(rows, key=key)


def plan(config: BenchmarkConfig) -> list[RunSpec]:
    """Every run spec of the chosen studies, in report order (shared runs are deduplicated later)."""
    known = {setting for settings in TUNE_SETTINGS.values() for setting, _ in settings}
    check(set(config.tune_settings) <= known, "tune_settings", f"setting names among {sorted(known)}",
          config.tune_settings)
    specs: list[RunSpec] = []
    if "table1" in config.studies:
        specs += [RunSpec("table1", label, "", name) for label, name in TABLE1_BASELINES]
        specs += [RunSpec("table1", MGE, f"G-{g}", "mge", {"model": {"n_generators": g}})
                  for g in config.mge_generators]
        specs.append(RunSpec("table1", GOALRANK, "", "goalrank"))
    if "tune" in config.studies:
        specs += [RunSpec("tune", TUNE_NAMES[name], setting, name, values)
                  for name, settings in TUNE_SETTINGS.items()
                  for setting, values in settings if not config.tune_settings or setting in config.tune_settings]
    if "oracle" in config.studies:
        specs += [RunSpec("oracle", label, "exact reward", name, merge_values(EXACT, EXACT_MODEL.get(name, {})),
                          evaluator=ORACLE) for label, name in ORACLE_METHODS]
        specs += [RunSpec("oracle", MGE, f"G-{g} exact reward", "mge",
                          merge_values(EXACT, {"model": {"n_generators": g}}), evaluator=ORACLE)
                  for g in config.mge_generators]
    if "groupsize" in config.studies:
        specs += [RunSpec("groupsize", GOALRANK, f"K={k}", "goalrank", {"group": {"group_size": k}}, k)
                  for k in config.group_sizes]
    if "bias" in config.studies:
        for b in config.reward_noises:
            kinds = config.bias_kinds if b > 0 else (FRESH,)  # β = 0 adds no noise: one run, Table 1's
            specs += [RunSpec("bias", GOALRANK, f"β={b}" if kind == FRESH else f"β={b} {kind}", "goalrank",
                              {"reference": {"reward_noise": b, "reward_noise_kind": kind}}, b) for kind in kinds]
    if "scaling" in config.studies:
        for size in config.scaling_sizes:
            width, depth = parse_size(size)
            for name, depth_fields in SCALED_DEPTH_FIELDS.items():
                model = {"d_model": width, **{key: depth for key in depth_fields}}
                specs.append(RunSpec("scaling", METHOD_NAMES[name], size, name, {"model": model}))
        specs += [RunSpec("scaling", MGE, f"G-{g}", "mge", {"model": {"n_generators": g}})
                  for g in config.scaling_generators]
    return [spec for spec in specs if not config.methods or spec.model in config.methods]
