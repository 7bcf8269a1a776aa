"""Shared helpers of models/base.py: the Gumbel noise of every sampler."""

from __future__ import annotations

import math

import torch

from goalrank.models.base import gumbel_noise


def test_gumbel_noise_has_the_standard_gumbel_moments_and_replays_its_seed() -> None:
    draws = gumbel_noise((200_000,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(draws).all()
    assert abs(draws.mean().item() - 0.5772) < 0.01  # the Euler–Mascheroni constant
    assert abs(draws.var().item() - math.pi ** 2 / 6) < 0.03
    again = gumbel_noise((200_000,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(draws, again)


def test_gumbel_max_samples_from_the_softmax() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0])
    picks = (logits + gumbel_noise((100_000, 3), torch.Generator().manual_seed(1), torch.device("cpu"))).argmax(1)
    frequencies = torch.bincount(picks, minlength=3).float() / 100_000
    assert torch.allclose(frequencies, logits.softmax(0), atol=0.01)
