"""Group building: config validation, allocation, deduplication and the reward-spaced option."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from toys import assert_valid_lists, make_context

from goalrank.config import from_dict, load_values
from goalrank.errors import ConfigError
from goalrank.groups import (
    POLICY_NAMES,
    AutoregressivePolicy,
    DiversityPolicy,
    GroupConfig,
    GumbelPolicy,
    MarkovPolicy,
    TreePolicy,
    allocate,
    build_group,
    duplicate_mask,
    random_lists,
)


def assert_distinct(group: torch.Tensor) -> None:
    for request in group:
        assert len({tuple(row) for row in request.tolist()}) == request.shape[0]


def test_default_mix_uses_every_policy_but_those_that_need_a_scorer_run():
    config = GroupConfig()
    assert config.group_size == 20
    expected = {name: 2 for name in POLICY_NAMES if name not in ("scorer", "scorer_shuffle")}
    assert allocate(config.group_size, config.mix) == expected


def test_allocate_largest_remainder_by_hand():
    # quotas 10·(0.5, 0.3, 0.2)/1 = 5, 3, 2 exactly; 7·(…) = 3.5, 2.1, 1.4 → floors 3, 2, 1, +1 to 3.5
    mix = {"random": 0.5, "gumbel": 0.3, "markov": 0.2}
    assert allocate(10, mix) == {"gumbel": 3, "markov": 2, "random": 5}
    assert allocate(7, mix) == {"gumbel": 2, "markov": 1, "random": 4}
    assert allocate(5, {"tree": 1.0, "random": 0.0}) == {"tree": 5}


@given(
    num_lists=st.integers(1, 200),
    weights=st.lists(st.floats(0.0, 10.0), min_size=len(POLICY_NAMES), max_size=len(POLICY_NAMES)),
)
def test_allocate_sums_and_stays_within_one_of_the_quota(num_lists, weights):
    mix = dict(zip(POLICY_NAMES, weights))
    total = sum(w for w in weights if w > 0)
    assume(total > 0)
    counts = allocate(num_lists, mix)
    assert sum(counts.values()) == num_lists
    for name, count in counts.items():
        assert abs(count - num_lists * mix[name] / total) < 1


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"group_size": 1}, "group.group_size"),
        ({"mix": {"beam": 1.0}}, "group.mix"),
        ({"mix": {"random": -1.0}}, "group.mix.random"),
        ({"mix": {"random": 0.0}}, "group.mix"),
        ({"mix": {"random": "lots"}}, "group.mix.random"),
        ({"gumbel": {"temperature": 0.0}}, "group.gumbel.temperature"),
        ({"gumbel": {"temperature": "inf"}}, "group.gumbel.temperature"),
        ({"tree": {"depth": 0}}, "group.tree.depth"),
        ({"markov": {"top": 0}}, "group.markov.top"),
        ({"markov_top": 12}, "unknown key"),
        ({"spaced_pool_size": 20}, "group.spaced_pool_size"),
    ],
)
def test_rejects_bad_configs(values, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(GroupConfig, values, "group")


def test_config_from_overrides_coerces_weights():
    config = from_dict(GroupConfig, {"group_size": "8", "mix": {"random": "2", "tree": "1"}}, "group")
    assert config.group_size == 8 and config.mix == {"random": 2.0, "tree": 1.0}


def test_policy_knobs_nest_under_their_policy():
    values = load_values(overrides=["group.markov.top=7", "group.tree.branching=3", "group.diversity.temperature=0.5"])
    config = from_dict(GroupConfig, values["group"], "group")
    policies = config.policies()
    assert list(policies) == list(POLICY_NAMES)
    assert policies["markov"] == MarkovPolicy(top=7) and policies["tree"] == TreePolicy(branching=3)
    assert policies["diversity"] == DiversityPolicy(temperature=0.5) and policies["gumbel"] == GumbelPolicy()


def test_duplicate_mask_by_hand():
    group = torch.tensor([[[0, 1], [1, 0], [0, 1], [1, 0], [2, 0]]])
    assert duplicate_mask(group).tolist() == [[False, False, True, True, False]]


@pytest.mark.parametrize(("size", "n_cand", "list_len", "group_size"), [(3, 12, 4, 20), (2, 50, 6, 20), (4, 6, 2, 8)])
def test_default_mix_gives_k_distinct_valid_lists(size, n_cand, list_len, group_size):
    config = GroupConfig(group_size=group_size, markov=MarkovPolicy(chunk_size=64))
    group = build_group(make_context(size, n_cand, list_len, seed=3), config)
    assert_valid_lists(group, size, group_size, list_len, n_cand)
    assert_distinct(group)
    assert torch.equal(group, build_group(make_context(size, n_cand, list_len, seed=3), config))


def test_colliding_policies_are_deduplicated_and_refilled():
    ctx = make_context(3, 10, 3, seed=4)
    config = GroupConfig(group_size=12, mix={"autoregressive": 1.0}, autoregressive=AutoregressivePolicy(1e-4))
    proposals = ctx.generator.decode(ctx.encoding, 12, temperature=1e-4, rng=torch.Generator().manual_seed(4))
    assert bool(duplicate_mask(proposals)[:, 1:].all())  # near-greedy sampling: all the same list
    group = build_group(ctx, config)
    assert_valid_lists(group, 3, 12, 3, 10)
    assert_distinct(group)
    assert torch.equal(group[:, 0], ctx.encoding.topk(3, dim=1).indices)  # the first copy is kept


def test_existing_lists_lead_the_group():
    existing = random_lists(make_context(2, 9, 3, seed=5), 3)
    existing[:, 2] = existing[:, 0]  # a repeat inside existing is replaced, the first copy kept
    ctx = make_context(2, 9, 3, seed=6, existing=existing)
    group = build_group(ctx, GroupConfig(group_size=10, mix={"substitution": 1.0, "diversity": 1.0}))
    assert torch.equal(group[:, :2], existing[:, :2])
    assert_distinct(group)


def test_group_larger_than_the_number_of_lists_is_rejected():
    with pytest.raises(ConfigError, match="group.group_size=20"):
        build_group(make_context(1, 3, 3), GroupConfig(group_size=20))


def test_spaced_mode_keeps_uniformly_spaced_ranks_of_the_pool():
    config = GroupConfig(group_size=5, spaced_pool_size=41)
    pool_config = dataclasses.replace(config, group_size=41, spaced_pool_size=None)
    pool = build_group(make_context(2, 12, 4, seed=7), pool_config)  # the same draws as the pool
    ctx = make_context(2, 12, 4, seed=7)
    group = build_group(ctx, config)
    order = ctx.evaluator.list_reward(ctx.batch, pool).argsort(dim=1, descending=True)  # (B, 41)
    expected = pool.gather(1, order[:, [0, 10, 20, 30, 40], None].expand(-1, -1, 4))
    assert torch.equal(group, expected)
