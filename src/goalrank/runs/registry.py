"""Model names the CLI accepts, mapped to their config class, model class and objective factory.

The one list of rankers: the CLI's choices, the benchmark's rows, the service's loader and the
contract tests are all derived from ``MODELS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from goalrank.models.base import Ranker
from goalrank.models.blocks import ModelConfig
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
from goalrank.objectives.base import ObjectiveFactory
from goalrank.objectives.group_relative import GROUP_RELATIVE
from goalrank.objectives.ranker import POINTWISE, SELF_TRAINED


@dataclass(frozen=True)
class ModelSpec:
    """How to build and train one ranker.

    objective: the factory of what it minimises: ``POINTWISE`` — BCE of ``model.score(batch)``
    (B, N) against the candidates' labels (a ``PointwiseScorer``); ``GROUP_RELATIVE`` — GoalRank's
    Eq. 5 loss (a ``ListGenerator``); ``SELF_TRAINED`` — the model's own
    ``training_loss(batch) -> (loss, stats)`` (a ``SelfTrained`` model, e.g. an evaluator-guided
    generator).
    needs_evaluator: the model is built as ``model_cls(config, evaluator)`` with the trained
    reward model, which it uses to train and/or to choose among candidate lists when ranking.
    """

    config_cls: type[ModelConfig]
    model_cls: Callable[..., Ranker]
    objective: ObjectiveFactory
    needs_evaluator: bool = False

    @property
    def uses_reward_model(self) -> bool:
        """Training needs a trained reward-model run: GoalRank scores its groups with it, and
        ``needs_evaluator`` models are built around it."""
        return self.needs_evaluator or self.objective.needs_reward_model


MODELS: dict[str, ModelSpec] = {
    "goalrank": ModelSpec(GeneratorConfig, GoalRankGenerator, GROUP_RELATIVE),
    "dnn": ModelSpec(DNNConfig, DNNRanker, POINTWISE),
    "dlcm": ModelSpec(DLCMConfig, DLCMRanker, POINTWISE),
    "setrank": ModelSpec(SetRankConfig, SetRankRanker, POINTWISE),
    "prm": ModelSpec(PRMConfig, PRMRanker, POINTWISE),
    "mir": ModelSpec(MIRConfig, MIRRanker, POINTWISE),
    "rankmixer": ModelSpec(RankMixerConfig, RankMixerRanker, POINTWISE),
    "egrerank": ModelSpec(EGRerankConfig, EGRerank, SELF_TRAINED, needs_evaluator=True),
    "pier": ModelSpec(PIERConfig, PIER, POINTWISE, needs_evaluator=True),
    "nar4rec": ModelSpec(NAR4RecConfig, NAR4Rec, SELF_TRAINED, needs_evaluator=True),
    "mge": ModelSpec(MGEConfig, MGE, SELF_TRAINED, needs_evaluator=True),
}
