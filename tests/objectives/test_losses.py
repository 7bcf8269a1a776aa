"""Eq. 4 reference policy, Eq. 5 and the authors' loss, the supervised term and reward noise."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import scipy.stats
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from builders import PairwiseReward, PlackettLuce, all_lists, make_batch
from goalrank.config import to_dict
from goalrank.errors import ConfigError
from goalrank.groups import GroupConfig
from goalrank.objectives.group_relative import GroupRelativeObjective, supervised_target
from goalrank.objectives.losses import (
    fixed_list_noise,
    group_relative_loss,
    perturb_rewards,
    reference_policy,
    supervised_loss,
)
from goalrank.objectives.reference import ReferenceConfig


def test_reference_policy_by_hand():
    # r = (1, 2, 3): μ = 2, population σ = sqrt(2/3), z = (−1.2247, 0, 1.2247)
    # exp(z) = (0.29384, 1, 3.40328), sum 4.69712
    expected = torch.tensor([[0.06256, 0.21290, 0.72455]])
    assert torch.allclose(reference_policy(torch.tensor([[1.0, 2.0, 3.0]])), expected, atol=1e-4)
    # τ = 2 halves z: exp(z/2) = (0.54207, 1, 1.84478), sum 3.38685
    expected_tempered = torch.tensor([[0.16005, 0.29526, 0.54469]])
    assert torch.allclose(reference_policy(torch.tensor([[1.0, 2.0, 3.0]]), 2.0), expected_tempered, atol=1e-4)


def test_equal_rewards_give_the_uniform_policy():
    assert torch.allclose(reference_policy(torch.full((2, 4), 3.5)), torch.full((2, 4), 0.25))


@given(
    rewards=st.lists(st.floats(-5, 5), min_size=2, max_size=8),
    shift=st.floats(-100, 100),
    scale=st.floats(0.1, 10),
)
def test_reference_policy_is_a_distribution_invariant_to_affine_rewards(rewards, shift, scale):
    r = torch.tensor([rewards], dtype=torch.float64)
    # eps matters only for near-constant groups: with both groups' std > 0.1 it moves z by < 3e-5
    assume(float(r.std(correction=0)) * min(scale, 1.0) > 0.1)
    policy = reference_policy(r)
    assert torch.allclose(policy.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(policy, reference_policy(r * scale + shift), atol=1e-4)


def test_group_relative_loss_by_hand():
    log_probs = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.2]]))
    reference = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    # request 0: −(0.75 ln .5 + 0.25 ln .25) = 0.86643; request 1: −(0.5 ln .1 + 0.5 ln .2) = 1.95601
    cross_entropy = group_relative_loss(log_probs, reference)
    assert cross_entropy.item() == pytest.approx((0.86643 + 1.95601) / 2, abs=1e-4)
    # request 0: −(0.5·0.75 + 0.25·0.25) = −0.4375; request 1: −(0.1·0.5 + 0.2·0.5) = −0.15
    authors = group_relative_loss(log_probs, reference, "authors")
    assert authors.item() == pytest.approx((-0.4375 - 0.15) / 2, abs=1e-6)


def test_reference_is_a_fixed_target():
    log_probs = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_()
    reference = torch.tensor([[0.75, 0.25]], requires_grad=True)
    group_relative_loss(log_probs, reference).backward()
    assert reference.grad is None
    assert torch.allclose(log_probs.grad, -reference.detach())  # ∂/∂ log π = −π_ref (B = 1)


def test_authors_loss_vanishes_for_unlikely_lists():
    log_probs = torch.full((1, 4), math.log(1e-6), requires_grad=True)  # four unlikely lists
    reference = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    group_relative_loss(log_probs, reference, "authors").backward()
    assert log_probs.grad.abs().max() < 1e-6
    log_probs.grad = None
    group_relative_loss(log_probs, reference).backward()
    assert torch.allclose(log_probs.grad, -reference)


def test_unknown_variant_is_rejected():
    with pytest.raises(ConfigError, match="reference.variant"):
        group_relative_loss(torch.zeros(1, 2), torch.full((1, 2), 0.5), "mse")


def test_supervised_loss_is_minus_mean_log_prob():
    assert supervised_loss(torch.tensor([-1.0, -2.0, -4.5])).item() == pytest.approx(2.5)


def test_perturb_rewards_adds_group_scaled_gaussian_noise():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]])
    sigma = torch.tensor([[math.sqrt(2 / 3)], [math.sqrt(32 / 9)]])  # population std per group
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    noisy = perturb_rewards(rewards, 0.3, torch.Generator().manual_seed(5))
    assert torch.allclose(noisy, rewards + 0.3 * sigma * noise)
    assert torch.equal(perturb_rewards(rewards, 0.0, torch.Generator()), rewards)


def test_perturb_rewards_noise_scale_is_beta_sigma():
    rewards = torch.tensor([[0.0, 2.0]]).expand(20000, -1)  # σ_G = 1
    noise = perturb_rewards(rewards, 0.5, torch.Generator().manual_seed(0)) - rewards
    assert noise.std().item() == pytest.approx(0.5, rel=0.03)
    with pytest.raises(ConfigError, match="reward_noise"):
        perturb_rewards(rewards, -0.1, torch.Generator())


def test_perturb_rewards_takes_the_noise_it_is_given():
    rewards = torch.tensor([[1.0, 3.0]])  # σ_G = 1
    noise = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    noisy = perturb_rewards(rewards, 0.2, torch.Generator(), noise)
    assert noisy.dtype == rewards.dtype and torch.allclose(noisy, torch.tensor([[1.1, 2.6]]))
    with pytest.raises(ValueError, match=r"noise of shape \(1, 1\) for rewards of shape \(1, 2\)"):
        perturb_rewards(rewards, 0.2, torch.Generator(), noise[:, :1])  # would broadcast one ε per request


def test_fixed_list_noise_is_one_standard_normal_draw_per_user_and_list():
    generator = torch.Generator().manual_seed(0)
    users = torch.randint(0, 1000, (400,), generator=generator)
    lists = torch.randint(0, 500, (400, 20, 6), generator=generator)
    noise = fixed_list_noise(users, lists, seed=3)
    assert noise.shape == (400, 20)
    assert torch.equal(noise, fixed_list_noise(users.clone(), lists.clone(), seed=3))  # a function of its keys
    # the same list of the same user in another request, at another group slot, draws the same ε
    moved = fixed_list_noise(users[:1], lists[:1, [7, 0]], seed=3)
    assert torch.equal(moved, noise[:1, [7, 0]])
    # another order of the same items, another user or another seed: another draw
    assert not torch.isclose(fixed_list_noise(users, lists.flip(2), seed=3), noise).any()
    assert not torch.isclose(fixed_list_noise(users + 1, lists, seed=3), noise).any()
    assert not torch.isclose(fixed_list_noise(users, lists, seed=4), noise).any()
    # one changed item in the last slot moves the draw as far as an unrelated list's: no locality
    nudged = lists.clone()
    nudged[..., -1] += 1
    moved_by = (fixed_list_noise(users, nudged, seed=3) - noise).abs().mean().item()
    assert moved_by == pytest.approx(2 / math.sqrt(math.pi), rel=0.1)  # E|X − Y| of two independent N(0, 1)
    sample = noise.flatten().numpy()
    assert scipy.stats.kstest(sample, "norm").pvalue > 0.01  # 8,000 draws: N(0, 1)


def test_gradient_descent_on_eq5_moves_the_generator_to_the_reference():
    """N=5, L=3: the group is all 60 lists, so Eq. 5 = H(π_ref) + KL(π_ref ‖ π_θ) exactly."""
    generator = PlackettLuce(num_items=5, list_len=3, seed=0)
    batch = make_batch(2, n_candidates=5, list_len=3, n_items=5, history_len=2, seed=1, logged=False)
    group = all_lists(5, 3).expand(2, -1, -1)  # (B, 60, L)
    item_value = torch.randn(6, generator=torch.Generator().manual_seed(2))[batch.candidates]  # (B, N)
    listed_value = item_value[:, None].expand(-1, 60, -1).gather(2, group)  # (B, 60, L)
    rewards = (listed_value * torch.tensor([1.0, 0.6, 0.3])).sum(2)  # position-discounted, DCG-like
    reference = reference_policy(rewards, temperature=0.5)
    entropy = -(reference * reference.log()).sum(dim=1).mean()

    def kl() -> torch.Tensor:
        log_probs = generator.log_prob(generator.encode(batch), group)
        return (reference * (reference.log() - log_probs)).sum(dim=1).mean()

    with torch.no_grad():
        assert torch.allclose(generator.log_prob(generator.encode(batch), group).exp().sum(dim=1), torch.ones(2))
        before = kl()
    optimizer = torch.optim.Adam(generator.parameters(), lr=0.05)
    for _ in range(100):
        loss = group_relative_loss(generator.log_prob(generator.encode(batch), group), reference)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = kl()
        loss = group_relative_loss(generator.log_prob(generator.encode(batch), group), reference)
    assert torch.allclose(loss, entropy + after, atol=1e-4)
    assert after < 0.1 * before  # 3.15 → 0.04: the reward is close to Plackett–Luce-representable


def test_supervised_target_moves_positives_to_the_top_and_keeps_the_rest_in_order():
    labels = torch.zeros(2, 5)
    labels[0, [3, 0]] = 1.0  # first request: positions 3 and 0 hold positives
    batch = SimpleNamespace(exposed=torch.tensor([[4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]), labels=labels)
    target, steps = supervised_target(batch, "logged")
    assert target is batch.exposed and steps.tolist() == [[1.0] * 5] * 2
    target, steps = supervised_target(batch, "positives_first")
    assert target.tolist() == [[3, 0, 4, 2, 1], [0, 1, 2, 3, 4]] and steps.tolist() == [[1.0] * 5] * 2
    target, steps = supervised_target(batch, "positives")
    assert target.tolist() == [[3, 0, 4, 2, 1], [0, 1, 2, 3, 4]]
    assert steps.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0], [0.0] * 5]  # the positives' prefix; none in row 2
    with pytest.raises(ConfigError, match="supervised_target"):
        ReferenceConfig(supervised_target="clicks")


def test_reference_config_keeps_its_recorded_form_and_refuses_fixed_noise_without_noise():
    """Recorded runs are found by the digest of their config: the default must serialise as it did
    before ``reward_noise_kind`` existed, and β = 0 with fixed noise would be a second name for β = 0."""
    assert to_dict(ReferenceConfig()) == {"temperature": 1.0, "variant": "cross_entropy", "supervised_weight": 1.0,
                                          "supervised_target": "logged", "reward_noise": 0.0}
    assert to_dict(ReferenceConfig(reward_noise=0.2, reward_noise_kind="fixed"))["reward_noise_kind"] == "fixed"
    with pytest.raises(ConfigError, match="kind='fixed': expected fresh while reference.reward_noise is 0"):
        ReferenceConfig(reward_noise_kind="fixed")


@pytest.mark.parametrize("kind", ["logged", "positives_first", "positives"])
def test_objective_loss_is_eq5_plus_the_weighted_supervised_term(kind):
    """The target shares the group's teacher-forced pass; the sum must equal separate log π_θ terms."""
    generator = PlackettLuce(num_items=30, list_len=4, seed=0)
    batch = make_batch(3, n_candidates=8, list_len=4, n_items=30, history_len=2, seed=1, logged=False)
    batch.labels[0, [2, 0]] = 1.0  # exposed = positions 0..3: request 0 has positives at 0 and 2
    batch.labels[1, 3] = 1.0
    objective = GroupRelativeObjective(generator, PairwiseReward(30), GroupConfig(group_size=5),
                                       ReferenceConfig(supervised_weight=0.7, supervised_target=kind),
                                       torch.Generator().manual_seed(0), popularity=torch.rand(31))
    encoding = generator.encode(batch)
    group = objective.build_group(batch, encoding)
    _, reference = objective.reference_policy(batch, group)
    loss, stats = objective.loss(batch, encoding, group, reference)
    prefixes = {"logged": [[0, 1, 2, 3]] * 3, "positives_first": [[0, 2, 1, 3], [3, 0, 1, 2], [0, 1, 2, 3]],
                "positives": [[0, 2], [3], []]}[kind]
    imitated = torch.stack([generator.log_prob(encoding[i : i + 1], torch.tensor([[prefix]]))[0, 0]
                            if prefix else torch.tensor(0.0) for i, prefix in enumerate(prefixes)])
    expected = group_relative_loss(generator.log_prob(encoding, group), reference) - 0.7 * imitated.mean()
    torch.testing.assert_close(loss, expected)
    assert stats["supervised"] == pytest.approx(-imitated.mean().item(), abs=1e-5)
