"""Evaluation on simulator data: the true reward and the oracle's, searched once per split."""

from __future__ import annotations

import pytest
import torch

from goalrank.data.prepare import PrepareConfig, prepare
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.models.dnn import DNNConfig, DNNRanker
from goalrank.retrieval.mf import RetrieverConfig
from goalrank.simulate import SimConfig, simulate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim")
    simulate(SimConfig(n_users=40, n_items=30, sessions_per_user=5, list_len=3), root / "sim")
    return prepare(PrepareConfig(source="simulator", input=str(root / "sim"), kcore=2, list_len=3,
                                 n_candidates=8, history_len=5, retriever=RetrieverConfig(epochs=1)), root / "data")


def test_oracle_is_searched_once_per_split_and_bounds_every_ranker(dataset, monkeypatch) -> None:
    true_reward = TrueReward(simulator_for(dataset), dataset, beam_width=4)
    test = dataset.split("test")
    expected = sum(true_reward.best(batch, 3).sum().item() for batch in test.batches(7))
    calls = []
    original = TrueReward.best
    monkeypatch.setattr(TrueReward, "best",
                        lambda self, batch, length: calls.append(1) or original(self, batch, length))
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ranker = DNNRanker(DNNConfig(n_items=dataset.n_items, list_len=3, d_model=8, n_heads=2))
        results.append(evaluate_ranker(ranker, test, 7, CPU, true_reward, progress=False))
    assert len(calls) == -(-len(test) // 7)  # one pass over the split, for both rankers
    for result in results:
        assert result["oracle_reward"] == pytest.approx(expected / len(test))
        assert 0 < result["true_reward"] <= result["oracle_reward"] + 1e-9
    assert results[0]["true_reward"] != results[1]["true_reward"]
