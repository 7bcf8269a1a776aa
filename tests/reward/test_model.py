import dataclasses
import math

import pytest
import torch

from builders import N_ITEMS, make_batch
from goalrank.errors import ConfigError, DataError
from goalrank.models.blocks import PAD, UNKNOWN_USER
from goalrank.reward.model import RewardConfig, RewardModel, position_weights, resolve_position_weights

CANDIDATES, LIST_LEN, HISTORY, USERS = 8, 4, 5, 10
# make_batch's requests for this module: every request has a logged history (no new user).
REQUESTS = {"n_candidates": CANDIDATES, "list_len": LIST_LEN, "history_len": HISTORY, "new_user": False}


def make_model(seed: int = 0, **fields) -> RewardModel:
    torch.manual_seed(seed)
    fields = {"position_weights": "dcg", **fields}
    config = RewardConfig(n_items=N_ITEMS, n_users=USERS, d_model=16, n_heads=2, ffn_mult=2, list_len=LIST_LEN,
                          **fields)
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


def test_bad_lists_and_configs_are_rejected():
    model = make_model()
    with pytest.raises(DataError, match="list_len=4"):
        model.item_logits(make_batch(1, **REQUESTS), torch.zeros(1, 1, LIST_LEN + 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="model.position_weights"):
        RewardConfig(n_items=N_ITEMS, position_weights="linear")
    with pytest.raises(ConfigError, match="model.n_heads"):
        RewardConfig(n_items=N_ITEMS, d_model=10, n_heads=4)


def with_history(batch, history, labels):
    return dataclasses.replace(batch, history=history, history_labels=labels)


def test_history_attention_ignores_padding_and_reads_every_history_item():
    model = make_model(dropout=0.0)
    batch = make_batch(2, **REQUESTS)
    history, labels = batch.history.clone(), batch.history_labels.clone()
    history[:, :2], labels[:, :2] = PAD, 0  # left padding
    padded = with_history(batch, history, labels)
    before = model.item_logits(padded, LISTS[:2])
    embedding = model.items.weight.detach().clone()
    with torch.no_grad():
        model.items.weight[PAD] = torch.randn(model.config.d_model)  # what a padded slot would read, if it did
    torch.testing.assert_close(model.item_logits(padded, LISTS[:2]), before)
    with torch.no_grad():
        model.items.weight.copy_(embedding)
    for slot in range(2, HISTORY):  # every real history item, and its feedback, changes the prediction
        changed = labels.clone()
        changed[:, slot] = 1 - changed[:, slot]
        assert not torch.allclose(model.item_logits(with_history(padded, history, changed), LISTS[:2]), before)


def test_predictions_read_only_history_and_candidates_never_the_logged_feedback():
    model = make_model(dropout=0.0)
    batch = make_batch(3, **REQUESTS)
    leaked = dataclasses.replace(batch, labels=1 - batch.labels, exposed=batch.exposed.flip(1))
    torch.testing.assert_close(model.item_logits(leaked, LISTS), model.item_logits(batch, LISTS))


def test_unknown_users_get_the_cold_start_row():
    model = make_model(dropout=0.0)
    batch = make_batch(2, **REQUESTS)
    unknown = dataclasses.replace(batch, users=torch.full_like(batch.users, UNKNOWN_USER))
    before = model.item_logits(unknown, LISTS[:2])
    with torch.no_grad():
        model.user_ids.table.weight[0] += 1.0  # row 0 is the cold-start row
    assert not torch.allclose(model.item_logits(unknown, LISTS[:2]), before)
    known = model.item_logits(batch, LISTS[:2])
    with torch.no_grad():
        model.user_ids.table.weight[0] -= 5.0
    torch.testing.assert_close(model.item_logits(batch, LISTS[:2]), known)  # known users never read it
    with pytest.raises(IndexError):
        model.item_logits(dataclasses.replace(batch, users=torch.full_like(batch.users, USERS)), LISTS[:2])


def test_users_outside_the_training_split_read_the_cold_start_row():
    model = make_model(dropout=0.0)
    batch = make_batch(2, **REQUESTS)
    batch = dataclasses.replace(batch, users=torch.tensor([3, 7]))
    unknown = dataclasses.replace(batch, users=torch.full_like(batch.users, UNKNOWN_USER))
    before = model.item_logits(batch, LISTS[:2])
    model.user_ids.restrict_to(torch.tensor([3, 5]))  # user 7 never trained
    after = model.item_logits(batch, LISTS[:2])
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], model.item_logits(unknown, LISTS[:2])[1])
    assert not torch.allclose(after[1], before[1])


def test_training_mode_shows_a_share_of_users_as_new_users():
    model = make_model(dropout=0.0, cold_start_rate=0.5).train()
    seen = []
    model.user_ids.table.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    torch.manual_seed(0)
    model.item_logits(make_batch(400, **REQUESTS), LISTS[:1].expand(400, -1, -1))
    share = (seen[0] == 0).float().mean().item()  # row 0: UNKNOWN_USER + 1
    assert 0.4 < share < 0.6
    model.eval()
    model.item_logits(make_batch(400, **REQUESTS), LISTS[:1].expand(400, -1, -1))
    assert not (seen[1] == 0).any()


def test_position_weights_follow_the_target():
    assert resolve_position_weights({}, None)["position_weights"] == "dcg"
    assert resolve_position_weights({}, 0.9) == {"position_weights": "geometric", "position_discount": 0.9}
    assert resolve_position_weights({"position_weights": "uniform"}, 0.9) == {"position_weights": "uniform"}
    torch.testing.assert_close(position_weights("geometric", 3, 0.5), torch.tensor([1.0, 0.5, 0.25]))
    with pytest.raises(ConfigError, match="auto"):
        position_weights("auto", 3)
    with pytest.raises(ConfigError, match="n_users"):
        RewardModel(RewardConfig(n_items=N_ITEMS, position_weights="dcg"))


def test_many_lists_per_request_cross_each_candidate_once_with_the_same_logits():
    model = make_model()
    batch = make_batch(3, **REQUESTS)
    many = torch.stack([torch.randperm(CANDIDATES)[:LIST_LEN] for _ in range(3 * 5)]).view(3, 5, LIST_LEN)
    assert 5 * LIST_LEN > CANDIDATES  # the crossed-candidates path
    one_at_a_time = torch.cat([model.item_logits(batch, many[:, k : k + 1]) for k in range(5)], dim=1)
    torch.testing.assert_close(model.item_logits(batch, many), one_at_a_time)


@pytest.mark.parametrize("history_attention", [True, False])
def test_a_model_bound_to_a_batch_scores_every_list_as_the_model_does(history_attention):
    model = make_model(history_attention=history_attention)
    batch = make_batch(3, **REQUESTS)
    bound = model.bind(batch)
    for length, count in ((1, CANDIDATES), (2, 7), (LIST_LEN, 1), (LIST_LEN, 5)):  # both crossing paths
        lists = torch.stack([torch.randperm(CANDIDATES)[:length] for _ in range(3 * count)]).view(3, count, length)
        torch.testing.assert_close(bound.list_reward(batch, lists), model.list_reward(batch, lists))
    with pytest.raises(ValueError, match="bound to one batch"):
        bound.list_reward(make_batch(3, **REQUESTS, seed=1), LISTS)
