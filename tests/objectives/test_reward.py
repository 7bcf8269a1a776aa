"""The reward model's objective: BCE on the logged lists, plus corrupted copies whose distinct
non-exposed replacements are labelled 0."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import log_loss

from builders import N_ITEMS, make_batch
from goalrank.errors import ConfigError
from goalrank.objectives.reward import RewardObjective, corrupt_lists
from goalrank.reward.model import RewardConfig, RewardModel
from goalrank.train.run import RewardRunConfig


def test_without_negatives_the_loss_is_bce_on_the_logged_list_and_decreases_with_adam() -> None:
    torch.manual_seed(1)
    model = RewardModel(RewardConfig(n_items=N_ITEMS, n_users=10, d_model=16, n_heads=2, ffn_mult=2, list_len=4,
                                     position_weights="dcg", dropout=0.0, cold_start_rate=0.0))
    objective = RewardObjective(model, 0.0, torch.Generator().manual_seed(0))
    batch = make_batch(16, n_candidates=8, list_len=4, history_len=5, seed=2, new_user=False)
    labels = batch.labels.gather(1, batch.exposed)
    probabilities = torch.sigmoid(model.item_logits(batch, batch.exposed[:, None])[:, 0]).detach()
    expected = log_loss(labels.flatten().numpy(), probabilities.flatten().double().numpy(), labels=[0, 1])
    first = objective(batch)[0]
    assert first.item() == pytest.approx(expected, rel=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        objective(batch)[0].backward()
        optimizer.step()
    assert objective(batch)[0].item() < 0.5 * first.item()


@pytest.mark.parametrize(("n_candidates", "share"), [(20, 0.5), (20, 1.0), (8, 1.0), (7, 0.7)])
def test_corrupted_lists_replace_only_by_distinct_non_exposed_candidates(n_candidates: int, share: float) -> None:
    batch = make_batch(64, n_candidates=n_candidates, list_len=6, seed=3)
    lists, labels = corrupt_lists(batch, share, torch.Generator().manual_seed(0))
    replaced = lists != batch.exposed
    logged_labels = torch.gather(batch.labels, 1, batch.exposed)
    for row in range(64):
        assert len(set(lists[row].tolist())) == 6  # still a list: no item twice
        exposed = set(batch.exposed[row].tolist())
        assert all(item not in exposed for item in lists[row][replaced[row]].tolist())
    assert torch.equal(labels, logged_labels.masked_fill(replaced, 0.0))
    n_free = min(n_candidates - 6, 6)
    if n_free < 6:  # only the first N − L positions have a non-exposed candidate to draw
        assert not replaced[:, n_free:].any()
    if share == 1.0:
        assert replaced[:, :n_free].all()
    else:
        assert 0.7 * share < replaced[:, :n_free].float().mean() < 1.3 * share  # 64 × n_free draws


def test_share_zero_keeps_the_logged_lists() -> None:
    batch = make_batch(16, n_candidates=20, list_len=6)
    lists, labels = corrupt_lists(batch, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(lists, batch.exposed)
    assert torch.equal(labels, torch.gather(batch.labels, 1, batch.exposed))


@pytest.mark.parametrize("negatives", [-0.1, 1.5, float("nan")])
def test_reward_run_refuses_a_share_outside_zero_one(negatives: float) -> None:
    with pytest.raises(ConfigError, match="negatives"):
        RewardRunConfig(model=RewardConfig(n_items=10, n_users=5, list_len=3), negatives=negatives)
