"""The reward model's quality figures and the exact-reward evaluator, against hand computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from builders import make_batch
from goalrank.evaluate.fidelity import expected_calibration_error, row_spearman
from goalrank.evaluate.protocol import OracleEvaluator, TrueReward
from goalrank.simulate.simulator import Simulator, World


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_row_spearman_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 9, generator=generator), torch.randn(5, 9, generator=generator)
    y[0] = x[0] * 3 + 1
    expected = torch.tensor([spearmanr(x[i], y[i]).statistic for i in range(5)], dtype=torch.float64)
    torch.testing.assert_close(row_spearman(x, y), expected)
    assert abs(row_spearman(x, y)[0].item() - 1.0) < 1e-12


def test_expected_calibration_error_by_hand():
    # bins of width 1/2: [0.1, 0.2, 0.3] with labels [0, 0, 1] -> |0.2 - 1/3| * 3/5;
    # [0.8, 0.9] with labels [1, 1] -> |0.85 - 1| * 2/5
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9], dtype=torch.float64)
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    expected = abs(0.2 - 1 / 3) * 3 / 5 + abs(0.85 - 1.0) * 2 / 5
    assert expected_calibration_error(probabilities, labels, bins=2) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])) == 0.0


def test_oracle_evaluator_is_the_simulators_exact_reward_of_hand_checked_lists():
    """1 user, 3 items (raw ids 0, 1, 2 = item indices 1, 2, 3), D = 1: every p_k by hand."""
    world = World(
        user_embedding=torch.tensor([[1.0]], dtype=torch.float64),
        item_embedding=torch.tensor([[0.5], [1.0], [-1.0]], dtype=torch.float64),
        item_bias=torch.tensor([0.0, 0.1, -0.2], dtype=torch.float64),
        item_category=torch.tensor([0, 0, 1]),
        interaction=torch.tensor([[-1.0, 0.5], [0.3, -1.0]], dtype=torch.float64),
        affinity_scale=torch.tensor(2.0, dtype=torch.float64),
        position_decay=torch.tensor(0.1, dtype=torch.float64),
        reward_discount=torch.tensor(0.5, dtype=torch.float64),
    )
    dataset = SimpleNamespace(manifest={"seed": 0}, user_raw_ids=np.array([0]), item_raw_ids=np.array([-1, 0, 1, 2]))
    oracle = OracleEvaluator(TrueReward(Simulator(world), dataset, beam_width=1))
    batch = make_batch(1, n_candidates=3, list_len=3, n_items=3, seed=0)
    batch.users[:] = 0
    batch.candidates[:] = torch.tensor([[3, 1, 2]])  # positions 0, 1, 2 hold raw items 2, 0, 1
    # list of positions (1, 2, 0) = raw (0, 1, 2): a = 1.0, 2.1, -2.2; pos = 0, -0.1, -0.2; ctx 0, M00, 2 M01
    first = [_sigmoid(1.0), _sigmoid(2.1 - 0.1 - 1.0), _sigmoid(-2.2 - 0.2 + 1.0)]
    # positions (0, 1) = raw (2, 0): ctx of the second item is M[1, 0] = 0.3
    second = [_sigmoid(-2.2), _sigmoid(1.0 - 0.1 + 0.3)]
    rewards = oracle.list_reward(batch, torch.tensor([[[1, 2, 0]]]))
    assert rewards.dtype == torch.float32
    assert rewards.item() == pytest.approx(first[0] + 0.5 * first[1] + 0.25 * first[2], abs=1e-6)
    assert oracle.list_reward(batch, torch.tensor([[[0, 1]]])).item() == pytest.approx(
        second[0] + 0.5 * second[1], abs=1e-6)
