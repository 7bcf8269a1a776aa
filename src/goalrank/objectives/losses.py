"""GoalRank's losses as small pure functions over (B, K) tensors (paper §3.2, Eq. 4–5, §4.1.3).

B is the number of requests, K the group size; ``log_probs[b, k]`` is log π_θ of the k-th list
of request b's group and ``rewards[b, k]`` its reward-model score.
"""

from __future__ import annotations

from typing import Literal

import torch

from goalrank.config import check
from goalrank.models.base import group_standardised

LossVariant = Literal["cross_entropy", "authors"]
LOSS_VARIANTS: tuple[str, ...] = ("cross_entropy", "authors")


def _group_std(rewards: torch.Tensor) -> torch.Tensor:
    """(B, 1) population standard deviation σ_G over each group (divides by K, not K − 1)."""
    return rewards.std(dim=1, correction=0, keepdim=True)


def reference_policy(rewards: torch.Tensor, temperature: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """(B, K) group-relative reference policy π_ref (paper Eq. 4).

    π_ref(l) = softmax_G((r(l) − μ_G) / (σ_G + eps) / temperature), with μ_G the group mean and
    σ_G the population std (÷K) of the rewards. Normalising within the group keeps only the
    order and relative gaps of the rewards, which is what survives the reward model's bias
    (Eq. 3). A group of equal rewards gives the uniform policy (the numerator is 0).
    """
    check(temperature > 0, "reference.temperature", "> 0", temperature)
    return torch.softmax(group_standardised(rewards, eps) / temperature, dim=1)


def group_relative_loss(
    log_probs: torch.Tensor, reference: torch.Tensor, variant: LossVariant = "cross_entropy"
) -> torch.Tensor:
    """Scalar group-relative loss, averaged over requests; ``reference`` is a fixed target.

    "cross_entropy" (paper Eq. 5, the default): −Σ_l π_ref(l) log π_θ(l), equal to
    KL(π_ref ‖ π_θ) plus the entropy of π_ref, so it is minimised by matching π_ref.
    "authors" (the authors' public code): −Σ_l π_θ(l) π_ref(l), which weights sequence
    *probabilities*, not log-probabilities. Its gradient π_ref(l) ∇π_θ(l) vanishes when every
    listed π_θ(l) is small, as it is for any generator over N!/(N−L)! lists early in training,
    which is why Eq. 5 is the default.
    """
    check(variant in LOSS_VARIANTS, "reference.variant", f"one of {list(LOSS_VARIANTS)}", variant)
    reference = reference.detach()
    if variant == "cross_entropy":
        per_request = -(reference * log_probs).sum(dim=1)  # (B,)
    else:
        per_request = -(reference * log_probs.exp()).sum(dim=1)  # (B,)
    return per_request.mean()


def supervised_loss(log_probs_of_logged: torch.Tensor) -> torch.Tensor:
    """Scalar −mean log π_θ(logged list) over the (B,) requests: the optional auxiliary term."""
    return -log_probs_of_logged.mean()


def perturb_rewards(rewards: torch.Tensor, beta: float, rng: torch.Generator) -> torch.Tensor:
    """(B, K) rewards with the reward-bias study's noise (paper §4.1.3, Table 3).

    r̃(l) = r(l) + β · σ_G · ε_l, ε_l ~ N(0, 1) i.i.d. per list, σ_G the population std of the
    group's rewards, so β is the noise level relative to the spread the reference policy sees.
    Our copy of the paper lost the exact formula; this form is our reading of it. β = 0 returns
    the rewards unchanged and draws nothing from ``rng``.
    """
    check(beta >= 0, "reference.reward_noise", ">= 0 (β of the bias study)", beta)
    if beta == 0:
        return rewards
    noise = torch.randn(rewards.shape, generator=rng, device=rng.device).to(rewards.device)  # (B, K)
    return rewards + beta * _group_std(rewards) * noise
