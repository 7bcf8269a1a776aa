"""KL to the oracle Boltzmann policy on an enumerable world (evaluate.policy_kl), against brute force."""

from __future__ import annotations

import math

import torch

from builders import all_lists as brute_force_lists
from goalrank.evaluate.policy_kl import (
    all_lists,
    best_mixture_kl,
    enumerable,
    kl_divergence,
    n_lists,
    oracle_log_policy,
    plackett_luce_log_probs,
)


def test_every_list_is_enumerated_once() -> None:
    assert torch.equal(all_lists(6, 3), brute_force_lists(6, 3))
    assert n_lists(8, 3) == 336 and enumerable(8, 3) and not enumerable(50, 6)


def test_plackett_luce_matches_the_hand_computed_probability_and_sums_to_one() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    log_probs = plackett_luce_log_probs(logits, all_lists(3, 2))  # (1, 6)
    a, b, c = logits[0].exp().tolist()
    assert math.isclose(log_probs[0, 0].exp().item(), a / (a + b + c) * b / (b + c), rel_tol=1e-6)  # list [0, 1]
    wide = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(plackett_luce_log_probs(wide, all_lists(7, 3)).logsumexp(dim=1), torch.zeros(4), atol=1e-5)


def test_oracle_policy_is_the_softmax_of_standardised_rewards() -> None:
    rewards = torch.tensor([[1.0, 2.0, 4.0]])
    z = (rewards - rewards.mean()) / rewards.std(correction=0)
    assert torch.allclose(oracle_log_policy(rewards, 0.5), torch.log_softmax(z / 0.5, dim=1), atol=1e-5)


def test_best_mixture_recovers_a_target_that_is_a_mixture_and_beats_each_component() -> None:
    rng = torch.Generator().manual_seed(1)
    lists = all_lists(6, 2)
    components = torch.stack([plackett_luce_log_probs(torch.randn(2, 6, generator=rng) * 2, lists)
                              for _ in range(3)], dim=1)  # (2, 3, M)
    target = (components[:, 0].exp() * 0.3 + components[:, 1].exp() * 0.7).log()
    assert (best_mixture_kl(target, components, iterations=500) < 1e-3).all()
    elsewhere = plackett_luce_log_probs(torch.randn(2, 6, generator=rng), lists)
    mixture = best_mixture_kl(elsewhere, components)
    singles = torch.stack([kl_divergence(elsewhere, components[:, g]) for g in range(3)], dim=1)
    assert (mixture <= singles.min(dim=1).values + 1e-5).all()
