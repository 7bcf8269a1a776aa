"""The production logging policy against reference computations, and the popularity policy's regression."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from goalrank.errors import ConfigError
from goalrank.io import sha256_file
from goalrank.simulate import SimConfig, Simulator, simulate
from goalrank.simulate.folder import SimulatorFolder
from goalrank.simulate.logs import production_scores

INTERACTIONS = SimulatorFolder(Path()).interactions.name
SMALL = dict(n_users=30, n_items=40, n_categories=4, sessions_per_user=5, list_len=4, time_span=1000)
GREEDY = dict(production_correlation=1.0, production_temperature=1e-12, production_exploration=0.0)

# interactions.parquet of the popularity policy as written before the production policy existed
# (file sha256, then sha256 of the user, item, timestamp, label columns' bytes; pyarrow 26.0.1)
POPULARITY_REFERENCE = {
    "small": (dict(SMALL), "7b72b7bf832e207069d8281492b06a406e6923ca138f5765d6e31dd63785a990",
              "18a60652b9d46e3af950d56debfdaaeca2f91ce69a035d66e96a8a55e02b0c21"),
    "pooled": (dict(SMALL, n_items=400, logging_pool=12),
               "daa604886cc258339b60957e12269a528369825d78b8f72cebc248d58b15461f",
               "26a0438deca8c1711a936c798e6bcbea22f663187cabfca2e180e7cb477d593b"),
    "knobs": (dict(SMALL, logging_temperature=1.5, logging_popularity=0.5, seed=3),
              "cc588c78b248e506d1f3940a8ca0fedb4895c3316b3d4ee51fa231504f667dc9",
              "9c51ebb3addcba506bff81bbd312d84dcdf928cd82847e7504b1715dca21523b"),
}


def _lists(folder: Path, config: SimConfig) -> np.ndarray:
    """(U, S, L) logged item ids."""
    items = pq.read_table(folder / INTERACTIONS)["item"].to_numpy().copy()
    return items.reshape(config.n_users, config.sessions_per_user, config.list_len)


def _all_items(config: SimConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(config.n_users), torch.arange(config.n_items).expand(config.n_users, -1)


def _greedy_reference(scores: np.ndarray, n_sessions: int, length: int, dedup: int) -> np.ndarray:
    """(U, S, L) per session the top-L items by score among those not shown in the previous ``dedup`` sessions."""
    n_users, n_items = scores.shape
    lists = np.empty((n_users, n_sessions, length), dtype=np.int64)
    for user in range(n_users):
        last_shown = np.full(n_items, -10**9)
        for session in range(n_sessions):
            available = session - last_shown > dedup
            if available.sum() < length:
                available[:] = True
            order = np.argsort(-np.where(available, scores[user], -np.inf), kind="stable")[:length]
            lists[user, session] = order
            last_shown[order] = session
    return lists


@pytest.mark.parametrize("dedup", [0, 1, 100])
def test_greedy_limit_is_the_item_wise_top_list_by_affinity_among_unshown_items(tmp_path: Path, dedup: int) -> None:
    """ρ = 1, T → 0, ε = 0: each session is the top-L by a(u, i) = affinity_scale · e_u·v_i + b_i."""
    config = SimConfig(**dict(SMALL, n_users=20, sessions_per_user=12), **GREEDY, production_dedup_sessions=dedup)
    folder = simulate(config, tmp_path / "sim")
    affinity = Simulator.load(folder).affinity(*_all_items(config)).numpy()
    expected = _greedy_reference(affinity, config.sessions_per_user, config.list_len, dedup)
    np.testing.assert_array_equal(_lists(folder, config), expected)
    if dedup == 100:  # 12 sessions x 4 items > 40 items: the catalogue ran out once and restarted
        assert len(np.unique(expected[0, :10])) == 40


def test_lists_are_distinct_and_never_re_shown_when_de_duplicating(tmp_path: Path) -> None:
    config = SimConfig(**dict(SMALL, n_items=60, sessions_per_user=10), production_dedup_sessions=9)
    lists = _lists(simulate(config, tmp_path / "sim"), config)
    assert all(len(set(row)) == config.list_len for row in lists.reshape(-1, config.list_len).tolist())
    per_user = lists.reshape(config.n_users, -1)
    assert all(len(set(row)) == per_user.shape[1] for row in per_user.tolist())


def test_window_keeps_only_the_previous_k_sessions_out(tmp_path: Path) -> None:
    config = SimConfig(**dict(SMALL, sessions_per_user=8), production_dedup_sessions=2)
    lists = _lists(simulate(config, tmp_path / "sim"), config)
    for user in lists:
        for session in range(1, config.sessions_per_user):
            recent = set(user[max(0, session - 2):session].ravel())
            assert not recent & set(user[session])
    default = SimConfig(**SMALL)
    again = _lists(simulate(default, tmp_path / "default"), default).reshape(default.n_users, -1)
    assert max(len(row) - len(set(row)) for row in again.tolist()) > 0  # K = 0 re-shows


def test_exploration_share_matches_epsilon(tmp_path: Path) -> None:
    """With ρ = 1 and T → 0 an exploited slot is the best available item, an explored one a uniform
    one: the share of slots off the greedy choice is ε (1 - 1/n) for n available items."""
    epsilon = 0.2
    config = SimConfig(n_users=200, n_items=200, sessions_per_user=10, list_len=5, time_span=1000,
                       **dict(GREEDY, production_exploration=epsilon), production_dedup_sessions=100)
    folder = simulate(config, tmp_path / "sim")
    affinity = Simulator.load(folder).affinity(*_all_items(config)).numpy()
    lists = _lists(folder, config).reshape(config.n_users, -1)
    off_greedy, expected, variance = 0, 0.0, 0.0
    for user, shown in enumerate(lists):
        available = np.ones(config.n_items, dtype=bool)
        for item in shown:
            greedy = np.argmax(np.where(available, affinity[user], -np.inf))
            chance = epsilon * (1 - 1 / available.sum())
            off_greedy += int(item != greedy)
            expected, variance = expected + chance, variance + chance * (1 - chance)
            available[item] = False
    assert abs(off_greedy - expected) < 4 * math.sqrt(variance)


def test_first_item_is_the_exploration_mixture_of_the_plackett_luce_law(tmp_path: Path) -> None:
    """P(first item = i) = (1 - ε) softmax(s / T)_i + ε / I, with s the ranker's own scores."""
    config = SimConfig(n_users=1, n_items=5, n_categories=2, sessions_per_user=20000, list_len=2,
                       time_span=40000, production_correlation=0.5, production_temperature=0.7,
                       production_exploration=0.1)
    folder = simulate(config, tmp_path / "sim")
    scores = production_scores(Simulator.load(folder), config, *_all_items(config))[0]
    expected = (0.9 * torch.softmax(scores / 0.7, 0) + 0.1 / config.n_items).numpy()
    observed = np.bincount(_lists(folder, config)[0, :, 0], minlength=config.n_items) / config.sessions_per_user
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(0.25 / config.sessions_per_user))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, 1.0])
def test_correlation_knob_sets_the_scores_correlation_with_the_truth(rho: float) -> None:
    """corr(ê·v, e·v) = ρ and corr(s, a) = (ρ A² + Var b) / (A² + Var b) over users and items."""
    config = SimConfig(n_users=2000, n_items=300, production_correlation=rho)
    sim = Simulator.from_config(config)
    users, items = _all_items(config)
    scores, affinity = production_scores(sim, config, users, items), sim.affinity(users, items)
    bias = sim.world.item_bias.expand(config.n_users, -1)
    dot_corr = np.corrcoef((scores - bias).flatten(), (affinity - bias).flatten())[0, 1]
    assert dot_corr == pytest.approx(rho, abs=0.03)
    scale2, var_b = config.affinity_scale ** 2, sim.world.item_bias.var().item()
    corr = np.corrcoef(scores.flatten(), affinity.flatten())[0, 1]
    assert corr == pytest.approx((rho * scale2 + var_b) / (scale2 + var_b), abs=0.03)
    if rho == 1.0:
        torch.testing.assert_close(scores, affinity, rtol=0, atol=1e-12)


@pytest.mark.parametrize("policy", ["production", "popularity"])
@pytest.mark.parametrize("pool", [0, 12])
def test_logs_do_not_depend_on_chunking(tmp_path: Path, policy: str, pool: int) -> None:
    values = dict(SMALL, n_items=400 if pool else SMALL["n_items"], logging_pool=pool, logging_policy=policy)
    chunked = simulate(SimConfig(**values, chunk_users=7), tmp_path / "chunked")
    whole = simulate(SimConfig(**values, chunk_users=1000), tmp_path / "whole")
    assert pq.read_table(whole / INTERACTIONS).equals(pq.read_table(chunked / INTERACTIONS))


@pytest.mark.parametrize("name", sorted(POPULARITY_REFERENCE))
def test_popularity_policy_reproduces_the_earlier_logs_byte_for_byte(tmp_path: Path, name: str) -> None:
    values, file_digest, content_digest = POPULARITY_REFERENCE[name]
    folder = simulate(SimConfig(**values, logging_policy="popularity", chunk_users=7), tmp_path / name)
    table = pq.read_table(folder / INTERACTIONS)
    content = b"".join(np.ascontiguousarray(table[c].to_numpy()).tobytes() for c in table.column_names)
    assert hashlib.sha256(content).hexdigest() == content_digest  # same rows: the policy is unchanged
    assert sha256_file(folder / INTERACTIONS) == file_digest  # same bytes (fails alone on a new parquet writer)


def test_logged_lists_beat_random_ones_and_lose_to_the_item_wise_top_list(tmp_path: Path) -> None:
    """On a small world, over 30 candidates per session (the logged 6 and 24 uniform others):
    random lists < logged lists < top-6 by true affinity, in true expected reward."""
    config = SimConfig(n_users=300, n_items=150, sessions_per_user=10, time_span=1000)
    folder = simulate(config, tmp_path / "sim")
    sim = Simulator.load(folder)
    length, n_sessions = config.list_len, config.n_users * config.sessions_per_user
    logged = torch.from_numpy(_lists(folder, config).reshape(n_sessions, length))
    users = torch.arange(config.n_users).repeat_interleave(config.sessions_per_user)
    gen = torch.Generator().manual_seed(0)
    in_list = torch.zeros(n_sessions, config.n_items, dtype=torch.bool).scatter(1, logged, True)
    keys = torch.rand(n_sessions, config.n_items, generator=gen).masked_fill(in_list, 2.0)
    candidates = torch.cat([logged, keys.argsort(1)[:, :24]], 1)  # (S, 30)
    random = candidates.gather(1, torch.rand(candidates.shape, generator=gen).argsort(1)[:, :length])
    top = candidates.gather(1, sim.affinity(users, candidates).topk(length, 1).indices)
    rewards = sim.list_reward(users, torch.stack([random, logged, top], 1)).mean(0)  # (3,)
    assert rewards[0] < rewards[1] < rewards[2]
    assert (rewards[1] - rewards[0]).item() > 0.5 and (rewards[2] - rewards[1]).item() > 0.3


@pytest.mark.parametrize("field, value", [
    ("logging_policy", "greedy"), ("production_correlation", 1.5), ("production_correlation", -0.1),
    ("production_correlation", math.nan), ("production_temperature", 0.0),
    ("production_temperature", math.inf), ("production_exploration", 1.01), ("production_exploration", math.nan),
    ("production_dedup_sessions", -1),
])
def test_invalid_production_knobs_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SimConfig(**{field: value})
