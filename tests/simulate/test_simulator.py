"""The response model against hand computation, the oracles against brute-force enumeration."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goalrank.errors import ConfigError, DataError
from goalrank.simulate.simulator import SimConfig, Simulator, World


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _f64(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture
def tiny() -> Simulator:
    """1 user, 3 items in 2 categories, D=1: small enough to compute every p_k by hand."""
    return Simulator(World(
        user_embedding=_f64([[1.0]]),
        item_embedding=_f64([[0.5], [1.0], [-1.0]]),
        item_bias=_f64([0.0, 0.1, -0.2]),
        item_category=torch.tensor([0, 0, 1]),
        interaction=_f64([[-1.0, 0.5], [0.3, -1.0]]),
        affinity_scale=_f64(2.0),
        position_decay=_f64(0.1),
        reward_discount=_f64(0.5),
    ))


def _random_requests(sim: Simulator, batch: int, n_candidates: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, sim.n_users, (batch,), generator=gen)
    candidates = torch.rand(batch, sim.n_items, generator=gen).argsort(1)[:, :n_candidates]
    return users, candidates


def _brute_force_best(sim: Simulator, users: torch.Tensor, candidates: torch.Tensor, list_len: int) -> torch.Tensor:
    """(B,) best reward over every ordered list, scored through the raw-id path ``list_reward``."""
    lists = torch.tensor(list(permutations(range(candidates.shape[1]), list_len)))  # (P, L)
    items = candidates[:, lists]  # (B, P, L)
    return sim.list_reward(users, items).max(1).values


def test_click_probs_and_reward_match_hand_computation(tiny: Simulator) -> None:
    users = torch.tensor([0])
    # list (0, 1, 2): a = 1.0, 2.1, -2.2; pos = 0, -0.1, -0.2; ctx = 0, M[0,0], M[0,1] + M[0,1]
    expected = [_sigmoid(1.0), _sigmoid(2.1 - 0.1 - 1.0), _sigmoid(-2.2 - 0.2 + 1.0)]
    probs = tiny.click_probs(users, torch.tensor([[[0, 1, 2]]]))
    assert probs[0, 0].tolist() == pytest.approx(expected, abs=1e-12)
    reward = tiny.list_reward(users, torch.tensor([[[0, 1, 2]]]))
    assert reward.item() == pytest.approx(expected[0] + 0.5 * expected[1] + 0.25 * expected[2], abs=1e-12)
    # lists (2, 0) and (1, 0): ctx of the second item is M[1, 0] = 0.3, then M[0, 0] = -1
    rewards = tiny.list_reward(users, torch.tensor([[[2, 0], [1, 0]]]))
    assert rewards[0].tolist() == pytest.approx(
        [_sigmoid(-2.2) + 0.5 * _sigmoid(1.0 - 0.1 + 0.3), _sigmoid(2.1) + 0.5 * _sigmoid(1.0 - 0.1 - 1.0)],
        abs=1e-12,
    )


def test_earlier_positions_do_not_depend_on_later_items(tiny: Simulator) -> None:
    users = torch.tensor([0, 0])
    probs = tiny.click_probs(users, torch.tensor([[[0, 1, 2]], [[0, 1, 0]]]))
    assert torch.equal(probs[0, 0, :2], probs[1, 0, :2])


def test_invalid_ids_raise_data_error(tiny: Simulator) -> None:
    with pytest.raises(DataError, match="items"):
        tiny.list_reward(torch.tensor([0]), torch.tensor([[[0, 3]]]))
    with pytest.raises(DataError, match="users"):
        tiny.list_reward(torch.tensor([1]), torch.tensor([[[0, 1]]]))


def test_wide_beam_and_enumeration_equal_brute_force() -> None:
    sim = Simulator.from_config(SimConfig(n_users=200, n_items=60))
    users, candidates = _random_requests(sim, batch=100, n_candidates=7, seed=1)
    reference = _brute_force_best(sim, users, candidates, list_len=3)
    # width 7·6 holds every prefix of length 2, so the search cannot lose the best list
    positions, rewards = sim.best_lists(users, candidates, 3, beam_width=42)
    torch.testing.assert_close(rewards, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(sim.list_reward(users, candidates.gather(1, positions)[:, None])[:, 0], reference,
                               rtol=0, atol=1e-12)
    _, enumerated = sim.best_lists(users, candidates, 3, exhaustive=True)
    torch.testing.assert_close(enumerated, reference, rtol=0, atol=1e-12)
    _, greedy = sim.best_lists(users, candidates, 3, beam_width=1)
    assert bool((greedy <= reference + 1e-12).all()) and bool((greedy < reference - 1e-6).any())


@settings(max_examples=15, deadline=None)
@given(n_candidates=st.integers(2, 6), data=st.data())
def test_beam_search_returns_valid_lists_with_their_reward(n_candidates: int, data: st.DataObject) -> None:
    list_len = data.draw(st.integers(1, n_candidates))
    beam_width = data.draw(st.integers(1, 8))
    seed = data.draw(st.integers(0, 2**16))
    sim = Simulator.from_config(SimConfig(n_users=20, n_items=12, n_categories=3, seed=seed))
    users, candidates = _random_requests(sim, batch=4, n_candidates=n_candidates, seed=seed)
    positions, rewards = sim.best_lists(users, candidates, list_len, beam_width=beam_width)
    assert positions.shape == (4, list_len)
    assert all(len(set(row)) == list_len for row in positions.tolist())
    assert bool(((positions >= 0) & (positions < n_candidates)).all())
    torch.testing.assert_close(sim.list_reward(users, candidates.gather(1, positions)[:, None])[:, 0], rewards,
                               rtol=0, atol=1e-12)
    if beam_width >= math.perm(n_candidates, list_len - 1):
        torch.testing.assert_close(rewards, _brute_force_best(sim, users, candidates, list_len), rtol=0, atol=1e-12)


def test_item_wise_top_list_is_clearly_worse_than_best_on_default_config() -> None:
    config = SimConfig()
    sim = Simulator.from_config(config)
    users, candidates = _random_requests(sim, batch=200, n_candidates=50, seed=2)
    top = sim.affinity(users, candidates).topk(config.list_len, dim=1).indices  # (B, L) by a(u, i)
    item_wise = sim.list_reward(users, candidates.gather(1, top)[:, None])[:, 0]
    _, best = sim.best_lists(users, candidates, config.list_len, beam_width=64)
    assert bool((item_wise <= best + 1e-12).all())
    assert (item_wise / best).mean().item() < 0.97


def test_oracle_policy_is_boltzmann_over_all_lists() -> None:
    sim = Simulator.from_config(SimConfig(n_users=50, n_items=30))
    users, candidates = _random_requests(sim, batch=3, n_candidates=5, seed=3)
    alpha = 0.3
    lists, log_probs = sim.oracle_log_policy(users, candidates, 3, alpha)
    assert lists.shape == (3, 60, 3) and log_probs.shape == (3, 60)
    assert len({tuple(row) for row in lists[0].tolist()}) == 60
    items = candidates.gather(1, lists.flatten(1)).view(lists.shape)
    rewards = sim.list_reward(users, items)  # (B, P)
    expected = np.exp(rewards.numpy() / alpha)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(log_probs.exp().numpy(), expected, rtol=1e-10)
    _, best = sim.best_lists(users, candidates, 3, exhaustive=True)
    torch.testing.assert_close(rewards.gather(1, log_probs.argmax(1, keepdim=True))[:, 0], best)


def test_enumeration_beyond_bound_raises_config_error() -> None:
    sim = Simulator.from_config(SimConfig(n_users=10, n_items=60))
    users, candidates = _random_requests(sim, batch=2, n_candidates=50, seed=4)
    with pytest.raises(ConfigError, match="max_lists"):
        sim.oracle_log_policy(users, candidates, 6, alpha=1.0)
    with pytest.raises(ConfigError, match="alpha"):
        sim.oracle_log_policy(users, candidates, 2, alpha=0.0)


def test_world_is_a_function_of_the_seed() -> None:
    first, again = Simulator.from_config(SimConfig(seed=5)), Simulator.from_config(SimConfig(seed=5))
    other = Simulator.from_config(SimConfig(seed=6))
    assert torch.equal(first.world.item_embedding, again.world.item_embedding)
    assert not torch.equal(first.world.item_embedding, other.world.item_embedding)
    interaction = first.world.interaction
    assert bool((interaction.diagonal() < 0).all())
    assert bool((interaction > 0).any())


@pytest.mark.parametrize("field, value", [("list_len", 0), ("category_cohesion", 1.5),
                                          ("logging_temperature", 0.0), ("time_span", 10)])
def test_invalid_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        SimConfig(**{field: value})
