"""Objectives of the baselines: what a pointwise scorer or a self-trained ranker minimises on one batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from goalrank.data.storage import RankingBatch
from goalrank.models.base import PointwiseScorer, SelfTrained
from goalrank.objectives.base import ObjectiveFactory


@dataclass
class PointwiseObjective:
    """BCE of each candidate's score against its label: item-wise generator-only rankers."""

    model: PointwiseScorer

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return F.binary_cross_entropy_with_logits(self.model.score(batch), batch.labels), {}


@dataclass
class SelfTrainedObjective:
    """A model that defines its own loss (``training_loss``), e.g. an evaluator-guided generator."""

    model: SelfTrained

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.training_loss(batch)


# The registry pairs each factory with models of its protocol only (runs.registry.ModelSpec), hence the casts.
POINTWISE = ObjectiveFactory("pointwise", lambda inputs: PointwiseObjective(cast(PointwiseScorer, inputs.model)))
SELF_TRAINED = ObjectiveFactory("self_trained", lambda inputs: SelfTrainedObjective(cast(SelfTrained, inputs.model)))
