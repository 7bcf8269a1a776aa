"""GoalRank's losses as small pure functions over (B, K) tensors (paper §3.2, Eq. 4–5, §4.1.3).

B is the number of requests, K the group size; ``log_probs[b, k]`` is log π_θ of the k-th list
of request b's group and ``rewards[b, k]`` its reward-model score.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from goalrank.config import check
from goalrank.hashing import splitmix64
from goalrank.models.base import group_standardised, group_std

LossVariant = Literal["cross_entropy", "authors"]
LOSS_VARIANTS: tuple[str, ...] = ("cross_entropy", "authors")


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


def supervised_loss(log_probs_of_target: torch.Tensor) -> torch.Tensor:
    """Scalar −mean log π_θ(target list) over the (B,) requests: the optional auxiliary term; the
    target is ``reference.supervised_target``'s (the logged list, or its positives first)."""
    return -log_probs_of_target.mean()


def perturb_rewards(rewards: torch.Tensor, beta: float, rng: torch.Generator,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) rewards with the reward-bias study's noise (paper §4.1.3, Table 3).

    r̃(l) = r(l) + β · σ_G · ε_l, ε_l ~ N(0, 1) per list, σ_G the population std of the group's
    rewards, so β is the noise level relative to the spread the reference policy sees. Our copy of
    the paper lost the exact formula; this form is our reading of it. ``noise``: the (B, K) ε, e.g.
    ``fixed_list_noise``'s; None draws it afresh from ``rng``. β = 0 returns the rewards unchanged
    and draws nothing.
    """
    check(beta >= 0, "reference.reward_noise", ">= 0 (β of the bias study)", beta)
    if beta == 0:
        return rewards
    if noise is None:
        noise = torch.randn(rewards.shape, generator=rng, device=rng.device)
    elif noise.shape != rewards.shape:  # a (B, 1) ε would broadcast into one draw per request
        raise ValueError(f"noise of shape {tuple(noise.shape)} for rewards of shape {tuple(rewards.shape)}")
    return rewards + beta * group_std(rewards) * noise.to(rewards)


def fixed_list_noise(users: torch.Tensor, lists: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, K) ε ~ N(0, 1), a fixed function of ``seed``, the user (B,) and the list's item ids in
    order (B, K, L): the same list shown to the same user gets the same ε at every step.

    This is the reward-bias study's ``fixed`` noise. Noise redrawn at every step averages out over
    the epochs in which a request's group is rebuilt; a biased reward model's error does not, it
    belongs to the list. Hashing (splitmix64 over the user and the items, then Box–Muller) gives
    each of the combinatorially many lists its own draw without storing any. ``perturb_rewards``
    scales ε by σ_G, so the error that stays with the list is β·ε in group-standardised units.
    The hash runs in numpy: on a GPU the (B, K, L) ids make one round trip to the host per step.
    """
    keys = lists.numpy(force=True).astype(np.uint64)  # (B, K, L)
    start = splitmix64(splitmix64(users.numpy(force=True).astype(np.uint64) + np.uint64(1)) ^ np.uint64(seed))
    state = np.repeat(start[:, None], keys.shape[1], axis=1)  # (B, K)
    for position in range(keys.shape[2]):
        state = splitmix64(state ^ (keys[..., position] + np.uint64(1)))
    uniform = [((splitmix64(state ^ np.uint64(salt)) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
               for salt in (1, 2)]  # the top 53 bits: a double in (0, 1)
    normal = np.sqrt(-2.0 * np.log(uniform[0])) * np.cos(2.0 * np.pi * uniform[1])
    return torch.from_numpy(normal).to(lists.device)
