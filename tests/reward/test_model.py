import math

import pytest
import torch
from sklearn.metrics import log_loss

from builders import N_ITEMS, make_batch
from goalrank.errors import ConfigError, DataError
from goalrank.reward.model import RewardConfig, RewardModel

CANDIDATES, LIST_LEN, HISTORY = 8, 4, 5
# make_batch's requests for this module: every request has a logged history (no new user).
REQUESTS = {"n_candidates": CANDIDATES, "list_len": LIST_LEN, "history_len": HISTORY, "new_user": False}


def make_model(seed: int = 0, **fields) -> RewardModel:
    torch.manual_seed(seed)
    config = RewardConfig(n_items=N_ITEMS, d_model=16, n_heads=2, ffn_mult=2, list_len=LIST_LEN, **fields)
    return RewardModel(config).eval()


LISTS = torch.tensor([[[0, 1, 2, 3], [7, 6, 5, 4], [3, 0, 6, 1]]]).expand(3, -1, -1)


@pytest.mark.parametrize("length", [2, LIST_LEN])
def test_item_logits_shapes_for_short_and_full_lists(length):
    model = make_model()
    logits = model.item_logits(make_batch(3, **REQUESTS), LISTS[..., :length])
    assert logits.shape == (3, 3, length) and torch.isfinite(logits).all()
    assert model.list_reward(make_batch(3, **REQUESTS), LISTS[..., :length]).shape == (3, 3)


@pytest.mark.parametrize("kind, weights", [("dcg", [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]),
                                           ("uniform", [1.0, 1.0, 1.0, 1.0])])
def test_list_reward_is_the_position_weighted_sum_of_sigmoids(kind, weights):
    model = make_model(position_weights=kind)
    batch = make_batch(3, **REQUESTS)
    probabilities = torch.sigmoid(model.item_logits(batch, LISTS))
    expected = (probabilities * torch.tensor(weights)).sum(dim=-1)
    torch.testing.assert_close(model.list_reward(batch, LISTS), expected)
    short = (torch.sigmoid(model.item_logits(batch, LISTS[..., :2])) * torch.tensor(weights[:2])).sum(dim=-1)
    torch.testing.assert_close(model.list_reward(batch, LISTS[..., :2]), short)


def test_lists_of_a_request_share_one_user_encoding():
    model = make_model()
    batch = make_batch(3, **REQUESTS)
    calls = []
    model.user_encoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    together = model.item_logits(batch, LISTS)
    assert calls == [(3, HISTORY)]  # once per request batch, not once per list
    separately = torch.cat([model.item_logits(batch, LISTS[:, k : k + 1]) for k in range(3)], dim=1)
    torch.testing.assert_close(together, separately)


def test_item_feedback_depends_on_the_rest_of_the_list_unless_causal():
    batch = make_batch(2, **REQUESTS)
    lists = torch.tensor([[[0, 1, 2, 3]], [[4, 5, 6, 7]]])
    changed = torch.tensor([[[0, 1, 5, 6]], [[4, 5, 0, 1]]])
    for causal in (False, True):
        model = make_model(causal=causal)
        before, after = model.item_logits(batch, lists), model.item_logits(batch, changed)
        assert torch.allclose(before[..., :2], after[..., :2]) == causal


def test_loss_is_bce_on_the_exposed_list_and_decreases_with_adam():
    model = make_model(seed=1, dropout=0.0).train()
    batch = make_batch(16, seed=2, **REQUESTS)
    labels = batch.labels.gather(1, batch.exposed)
    probabilities = torch.sigmoid(model.item_logits(batch, batch.exposed[:, None])[:, 0]).detach()
    expected = log_loss(labels.flatten().numpy(), probabilities.flatten().double().numpy(), labels=[0, 1])
    first = model.loss(batch)
    assert first.item() == pytest.approx(expected, rel=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert model.loss(batch).item() < 0.5 * first.item()


def test_bad_lists_and_configs_are_rejected():
    model = make_model()
    with pytest.raises(DataError, match="list_len=4"):
        model.item_logits(make_batch(1, **REQUESTS), torch.zeros(1, 1, LIST_LEN + 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="model.position_weights"):
        RewardConfig(n_items=N_ITEMS, position_weights="linear")
    with pytest.raises(ConfigError, match="model.n_heads"):
        RewardConfig(n_items=N_ITEMS, d_model=10, n_heads=4)


def test_many_lists_per_request_cross_each_candidate_once_with_the_same_logits():
    model = make_model()
    batch = make_batch(3, **REQUESTS)
    many = torch.stack([torch.randperm(CANDIDATES)[:LIST_LEN] for _ in range(3 * 5)]).view(3, 5, LIST_LEN)
    assert 5 * LIST_LEN > CANDIDATES  # the crossed-candidates path
    one_at_a_time = torch.cat([model.item_logits(batch, many[:, k : k + 1]) for k in range(5)], dim=1)
    torch.testing.assert_close(model.item_logits(batch, many), one_at_a_time)
