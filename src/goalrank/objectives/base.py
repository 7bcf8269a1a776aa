"""What an objective is, and the factory the model registry carries for each kind of model.

An objective maps one batch (already on the device) to (loss, stats to log), both means over the
batch's requests; the training loop is written once against it. Each registered model names the
factory of its objective (``runs.registry``), so a new model kind brings its objective with it
instead of a string that the training code has to dispatch on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.groups import GroupConfig
from goalrank.models.base import ListEvaluator, PointwiseScorer
from goalrank.objectives.reference import ReferenceConfig

Objective = Callable[[RankingBatch], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class ObjectiveInputs:
    """Everything an objective may be built from: the model, the frozen reward model (None for
    models trained without one), the group and reference settings of the run, its generator, and
    what the frozen auxiliary group policies read: the pretrained scorer of ``group.scorer_run``
    (or None) and the items' training positives (n_items + 1,). ``seed``: the run's training seed,
    the same on every rank (``rng`` is seeded per rank), for what must not differ between them."""

    model: nn.Module
    evaluator: ListEvaluator | None
    group: GroupConfig
    reference: ReferenceConfig
    rng: torch.Generator
    scorer: PointwiseScorer | None = None
    popularity: torch.Tensor | None = None
    seed: int = field(kw_only=True)


@dataclass(frozen=True)
class ObjectiveFactory:
    """How one kind of model is trained. ``needs_reward_model``: the objective scores lists with
    the trained reward model, so the run needs ``--reward``; ``uses_groups``: it builds candidate-list
    groups, so the run's ``group`` config must fit the dataset (checked before the run starts)."""

    name: str
    build: Callable[[ObjectiveInputs], Objective]
    needs_reward_model: bool = False
    uses_groups: bool = False
