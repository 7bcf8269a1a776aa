"""Model names the CLI accepts, mapped to their config class, model class and objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from goalrank.models.dlcm import DLCMConfig, DLCMRanker
from goalrank.models.dnn import DNNConfig, DNNRanker
from goalrank.models.egrerank import EGRerank, EGRerankConfig
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator
from goalrank.models.mge import MGE, MGEConfig
from goalrank.models.mir import MIRConfig, MIRRanker
from goalrank.models.nar4rec import NAR4Rec, NAR4RecConfig
from goalrank.models.pier import PIER, PIERConfig
from goalrank.models.prm import PRMConfig, PRMRanker
from goalrank.models.rankmixer import RankMixerConfig, RankMixerRanker
from goalrank.models.setrank import SetRankConfig, SetRankRanker


@dataclass(frozen=True)
class ModelSpec:
    """How to build and train one ranker.

    objective: "pointwise" — BCE of ``model.score(batch)`` (B, N) against the candidates' labels;
    "group_relative" — GoalRank's Eq. 5 loss; "model" — the model's own
    ``training_loss(batch) -> (loss, stats)`` (e.g. evaluator-guided generators).
    needs_evaluator: the model is built as ``model_cls(config, evaluator)`` with the trained
    reward model, which it uses to train and/or to choose among candidate lists when ranking.
    """

    config_cls: type
    model_cls: type
    objective: Literal["pointwise", "group_relative", "model"]
    needs_evaluator: bool = False

    @property
    def uses_reward_model(self) -> bool:
        """Training needs a trained reward-model run: GoalRank scores its groups with it, and
        ``needs_evaluator`` models are built around it."""
        return self.needs_evaluator or self.objective == "group_relative"


MODELS: dict[str, ModelSpec] = {
    "goalrank": ModelSpec(GeneratorConfig, GoalRankGenerator, "group_relative"),
    "dnn": ModelSpec(DNNConfig, DNNRanker, "pointwise"),
    "dlcm": ModelSpec(DLCMConfig, DLCMRanker, "pointwise"),
    "setrank": ModelSpec(SetRankConfig, SetRankRanker, "pointwise"),
    "prm": ModelSpec(PRMConfig, PRMRanker, "pointwise"),
    "mir": ModelSpec(MIRConfig, MIRRanker, "pointwise"),
    "rankmixer": ModelSpec(RankMixerConfig, RankMixerRanker, "pointwise"),
    "egrerank": ModelSpec(EGRerankConfig, EGRerank, "model", needs_evaluator=True),
    "pier": ModelSpec(PIERConfig, PIER, "pointwise", needs_evaluator=True),
    "nar4rec": ModelSpec(NAR4RecConfig, NAR4Rec, "model", needs_evaluator=True),
    "mge": ModelSpec(MGEConfig, MGE, "model", needs_evaluator=True),
}
