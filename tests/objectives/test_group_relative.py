"""GoalRank's objective reports the spread of its group's rewards and the entropy of π_ref."""

from __future__ import annotations

import math

import pytest
import torch

from builders import PairwiseReward, PlackettLuce, make_batch
from goalrank.groups import GroupConfig
from goalrank.objectives.base import ObjectiveInputs
from goalrank.objectives.group_relative import GROUP_RELATIVE, GroupRelativeObjective
from goalrank.objectives.reference import ReferenceConfig


def _objective(generator: PlackettLuce) -> GroupRelativeObjective:
    return GroupRelativeObjective(generator, PairwiseReward(30), GroupConfig(group_size=5), ReferenceConfig(),
                                  torch.Generator().manual_seed(0))


def test_stats_are_the_groups_population_std_and_the_reference_entropy():
    generator = PlackettLuce(num_items=30, list_len=3, seed=0)
    batch = make_batch(4, n_candidates=8, list_len=3, n_items=30, seed=2, logged=False)
    _, stats = _objective(generator)(batch)
    same = _objective(generator)  # the same seed draws the same group
    group = same.build_group(batch, generator.encode(batch))
    rewards, reference = same.reference_policy(batch, group)  # (B, K) each
    deviation = rewards - rewards.mean(dim=1, keepdim=True)
    spread = deviation.pow(2).mean(dim=1).sqrt()  # σ_G of Eq. 4: the population std
    entropy = -(reference * reference.log()).sum(dim=1)
    assert stats["group_reward_std"] == pytest.approx(spread.mean().item(), rel=1e-5)
    assert stats["reference_entropy"] == pytest.approx(entropy.mean().item(), rel=1e-5)
    assert 0 < stats["reference_entropy"] < math.log(5)  # distinct rewards: below the uniform policy's log K


def test_the_training_loops_objective_remembers_reward_beams_without_changing_a_group():
    generator = PlackettLuce(num_items=30, list_len=3, seed=0)
    batches = [make_batch(4, n_candidates=8, list_len=3, n_items=30, seed=seed, logged=False) for seed in (2, 3)]
    config = GroupConfig(group_size=6, mix={"reward_beam": 1.0, "autoregressive": 1.0, "random": 1.0})
    plain = GroupRelativeObjective(generator, PairwiseReward(30), config, ReferenceConfig(),
                                   torch.Generator().manual_seed(0))
    memoised = GROUP_RELATIVE.build(ObjectiveInputs(generator, PairwiseReward(30), config, ReferenceConfig(),
                                                    torch.Generator().manual_seed(0), seed=0))
    assert isinstance(memoised, GroupRelativeObjective) and plain.memo is None
    for _ in range(2):  # two epochs over the same requests: the second reads every beam from the memo
        for batch in batches:
            encoding = generator.encode(batch)
            assert torch.equal(memoised.build_group(batch, encoding), plain.build_group(batch, encoding))
    assert memoised.memo is not None and len(memoised.memo) == 8


@pytest.mark.parametrize("kind", ["fresh", "fixed"])
def test_fixed_reward_noise_stays_with_the_list_fresh_noise_is_redrawn(kind: str) -> None:
    """The bias study's two kinds: a biased reward model misjudges a list the same way every time."""
    generator = PlackettLuce(num_items=30, list_len=3, seed=0)
    batch = make_batch(4, n_candidates=8, list_len=3, n_items=30, seed=2, logged=False)
    reference = ReferenceConfig(reward_noise=0.5, reward_noise_kind=kind)
    objective = GROUP_RELATIVE.build(ObjectiveInputs(generator, PairwiseReward(30), GroupConfig(group_size=5),
                                                     reference, torch.Generator().manual_seed(0), seed=7))
    assert isinstance(objective, GroupRelativeObjective) and objective.noise_seed == 7
    group = objective.build_group(batch, generator.encode(batch))
    clean = PairwiseReward(30).list_reward(batch, group)
    first, second = (objective.reference_policy(batch, group)[0] for _ in range(2))  # two steps, one group
    assert not torch.allclose(first, clean)
    assert torch.equal(first, second) == (kind == "fixed")
    swapped = objective.reference_policy(batch, group.flip(1))[0].flip(1)  # the same lists in other slots
    assert torch.allclose(swapped, first) == (kind == "fixed")
    if kind == "fixed":  # the run's seed keys the draw: another seed misjudges the lists differently
        reseeded = GROUP_RELATIVE.build(ObjectiveInputs(generator, PairwiseReward(30), GroupConfig(group_size=5),
                                                        reference, torch.Generator().manual_seed(0), seed=8))
        assert isinstance(reseeded, GroupRelativeObjective)
        assert not torch.allclose(reseeded.reference_policy(batch, group)[0], first)
