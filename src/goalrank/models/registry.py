"""Model names the CLI accepts, mapped to their config class, model class and objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from goalrank.models.dnn import DNNConfig, DNNRanker
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator


@dataclass(frozen=True)
class ModelSpec:
    config_cls: type
    model_cls: type
    objective: Literal["pointwise", "group_relative"]


MODELS: dict[str, ModelSpec] = {
    "goalrank": ModelSpec(GeneratorConfig, GoalRankGenerator, "group_relative"),
    "dnn": ModelSpec(DNNConfig, DNNRanker, "pointwise"),
}
