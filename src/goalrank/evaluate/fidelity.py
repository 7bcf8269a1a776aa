"""How good is the reward model? Per-item AUC, calibration, and on simulator data its agreement with the truth.

GoalRank imitates the reference policy its reward model induces (paper Eq. 4), so it can only be as
good as that model's ordering of the lists *within a group*. A per-item AUC on logged lists says
whether the model predicts feedback at all; the ceiling is the AUC of the simulator's exact click
probabilities on the same items (the labels are Bernoulli draws of them, so no model can do
better on average). The Spearman correlations with the exact list reward say whether it orders
lists the way the truth does: on uniformly random lists (wide reward gaps), and within groups
built as GoalRank builds them for a fresh generator (the lists the reference policy is made of).
"""

from __future__ import annotations

import torch

from goalrank.data.storage import Split
from goalrank.evaluate.metrics import pooled_auc
from goalrank.evaluate.protocol import TrueReward
from goalrank.groups import GroupConfig, GroupContext, build_group
from goalrank.models.base import ListEvaluator, ListGenerator
from goalrank.reward.model import RewardModel

CALIBRATION_BINS = 15  # equal-width probability bins of the expected calibration error


@torch.no_grad()
def item_predictions(model: RewardModel, split: Split, batch_size: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted feedback probabilities and observed labels of every logged item of ``split`` (flat)."""
    model.eval()
    probabilities, labels = [], []
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        probabilities.append(torch.sigmoid(model.item_logits(batch, batch.exposed[:, None])[:, 0]).flatten().cpu())
        labels.append(torch.gather(batch.labels, 1, batch.exposed).flatten().cpu())
    return torch.cat(probabilities), torch.cat(labels)


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor,
                               bins: int = CALIBRATION_BINS) -> float:
    """Σ_bins (n_b / n) |mean label − mean probability| over equal-width probability bins."""
    index = (probabilities.double() * bins).long().clamp(0, bins - 1)
    predicted = torch.bincount(index, weights=probabilities.double(), minlength=bins)
    observed = torch.bincount(index, weights=labels.double(), minlength=bins)
    return float((predicted - observed).abs().sum() / max(len(labels), 1))


def item_metrics(model: RewardModel, split: Split, batch_size: int, device: torch.device) -> dict[str, float]:
    """Per-item AUC and expected calibration error of the model on ``split``'s logged lists."""
    probabilities, labels = item_predictions(model, split, batch_size, device)
    return {"auc": pooled_auc(probabilities, labels), "ece": expected_calibration_error(probabilities, labels)}


def ceiling_auc(true_reward: TrueReward, split: Split, batch_size: int) -> float:
    """Per-item AUC of the simulator's exact click probabilities of the logged items, in their lists."""
    probabilities, labels = [], []
    for batch in split.batches(batch_size):
        users, candidates = true_reward.raw(batch)
        items = candidates.gather(1, batch.exposed)[:, None]  # (B, 1, L) raw ids of the logged list
        probabilities.append(true_reward.simulator.click_probs(users, items)[:, 0].flatten())
        labels.append(batch.labels.gather(1, batch.exposed).flatten())
    return pooled_auc(torch.cat(probabilities), torch.cat(labels))


def row_spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman correlation of each row of x and y (B, K); continuous rewards have no ties."""
    a, b = (v.argsort(dim=1).argsort(dim=1).double() for v in (x, y))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@torch.no_grad()
def spearman_random(evaluator: ListEvaluator, split: Split, true_reward: TrueReward, device: torch.device,
                    list_len: int, lists_per_request: int = 8, max_requests: int = 512, seed: int = 0) -> float:
    """Mean per-request Spearman correlation of estimated vs true reward over uniformly random lists."""
    generator = torch.Generator().manual_seed(seed)
    batch = split.batch(slice(0, max_requests)).to(device)
    size, n_candidates = batch.candidates.shape
    noise = torch.rand(size, lists_per_request, n_candidates, generator=generator)
    lists = noise.argsort(dim=2)[..., :list_len].to(device)  # (B, K, L) random lists
    return float(row_spearman(evaluator.list_reward(batch, lists).cpu(), true_reward.of_lists(batch, lists)).mean())


@torch.no_grad()
def spearman_groups(evaluator: ListEvaluator, split: Split, true_reward: TrueReward, device: torch.device,
                    generator: ListGenerator, group: GroupConfig, popularity: torch.Tensor | None, seed: int,
                    max_requests: int = 512) -> float:
    """Mean per-request Spearman correlation of estimated vs true reward within GoalRank's groups.

    The groups of ``split``'s first ``max_requests`` lists are built with ``group`` as GoalRank
    builds them; ``generator``, typically a freshly initialised one, is what the policies that
    follow the generator sample from, as at the start of GoalRank's training.
    """
    batch = split.batch(slice(0, max_requests)).to(device)
    context = GroupContext(batch=batch, generator=generator, encoding=generator.encode(batch), evaluator=evaluator,
                           list_len=generator.list_len, rng=torch.Generator().manual_seed(seed),
                           existing=batch.exposed.new_zeros(len(batch), 0, generator.list_len), popularity=popularity)
    lists = build_group(context, group)  # (B, K, L)
    return float(row_spearman(evaluator.list_reward(batch, lists).cpu(), true_reward.of_lists(batch, lists)).mean())
