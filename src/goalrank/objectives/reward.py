"""The reward model's objective (paper App. B): BCE of its per-item logits on logged lists."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from goalrank.data.storage import RankingBatch
from goalrank.reward.model import RewardModel


@dataclass
class RewardObjective:
    """BCE of the reward model's per-item logits on logged lists.

    ``negatives`` > 0 also trains on corrupted copies of each logged list in which that share of
    positions is replaced by random non-exposed candidates labelled 0. The offline metrics treat
    non-exposed candidates as negatives; without this, the reward model never sees
    such items and cannot rank them below logged positives.
    """

    model: RewardModel
    negatives: float
    rng: torch.Generator

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        lists, labels = batch.exposed[:, None], torch.gather(batch.labels, 1, batch.exposed)[:, None]
        if self.negatives > 0:
            corrupted, corrupted_labels = corrupt_lists(batch, self.negatives, self.rng)
            lists = torch.cat([lists, corrupted[:, None]], dim=1)  # (B, 2, L)
            labels = torch.cat([labels, corrupted_labels[:, None]], dim=1)
        logits = self.model.item_logits(batch, lists)  # (B, K, L)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss, {}


def corrupt_lists(
    batch: RankingBatch, share: float, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a ``share`` of each logged list's positions by non-exposed candidates (label 0).

    Position j draws the j-th of a random order of the N − L non-exposed candidates, so the
    replacements are distinct; where N − L < L the positions beyond N − L are never replaced.
    """
    size, n_candidates = batch.candidates.shape
    exposed = batch.exposed
    list_len = exposed.shape[1]
    noise = torch.rand(size, n_candidates, generator=rng).to(exposed.device)
    noise.scatter_(1, exposed, float("inf"))  # never draw an exposed item
    replacements = noise.argsort(dim=1)[:, :list_len]  # (B, L); the first N − L are non-exposed
    replace = torch.rand(exposed.shape, generator=rng).to(exposed.device) < share
    replace &= torch.arange(list_len, device=exposed.device) < n_candidates - list_len
    lists = torch.where(replace, replacements, exposed)
    labels = torch.gather(batch.labels, 1, exposed).masked_fill(replace, 0.0)
    return lists, labels
