import numpy as np
import pytest
import torch

from builders import TWO_TASTE_ITEMS as N_ITEMS
from builders import TWO_TASTE_USERS as N_USERS
from builders import two_taste_log
from goalrank.errors import ConfigError, DataError
from goalrank.retrieval.mf import RetrieverConfig, train_bpr

CONFIG = RetrieverConfig(dim=8, epochs=8, lr=0.1, reg=0.0, batch_size=64)


def test_bpr_recovers_the_two_tastes():
    users, items = two_taste_log()
    model, loss = train_bpr(users, items, N_USERS, N_ITEMS, CONFIG, seed=0)
    top = model.top_items(torch.arange(N_USERS), 10, batch_size=7)  # (U, 10)
    even = top[0::2].flatten()
    odd = top[1::2].flatten()
    assert ((even >= 1) & (even <= 15)).float().mean() > 0.9
    assert ((odd >= 16) & (odd <= 30)).float().mean() > 0.9
    assert loss < np.log(2)  # better than the untrained margin of 0


def test_top_items_in_batches_equal_one_full_topk_and_never_padding():
    users, items = two_taste_log()
    model, _ = train_bpr(users, items, N_USERS, N_ITEMS, RetrieverConfig(dim=4, epochs=1), seed=1)
    weights = model.user_embedding.weight, model.item_embedding.weight, model.item_bias.weight
    scores = weights[0] @ weights[1].T + weights[2].T  # (U, I + 1)
    scores[:, 0] = -torch.inf
    expected = scores.topk(N_ITEMS, dim=1).indices
    got = model.top_items(torch.arange(N_USERS), N_ITEMS, batch_size=3)
    assert torch.equal(got, expected) and (got > 0).all()
    with pytest.raises(DataError, match="31 candidates requested but only 30 items"):
        model.top_items(torch.arange(2), N_ITEMS + 1, batch_size=3)


def test_seeded_training_is_reproducible():
    users, items = two_taste_log()
    config = RetrieverConfig(dim=4, epochs=2)
    a, loss_a = train_bpr(users, items, N_USERS, N_ITEMS, config, seed=5)
    b, loss_b = train_bpr(users, items, N_USERS, N_ITEMS, config, seed=5)
    c, _ = train_bpr(users, items, N_USERS, N_ITEMS, config, seed=6)
    assert torch.equal(a.item_embedding.weight, b.item_embedding.weight) and loss_a == loss_b
    assert not torch.equal(a.item_embedding.weight, c.item_embedding.weight)


def test_config_validation_and_empty_training_set():
    with pytest.raises(ConfigError, match="retriever.lr=0"):
        RetrieverConfig(lr=0)
    with pytest.raises(DataError, match="no positive interactions"):
        train_bpr(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 2, 3, CONFIG, seed=0)


def test_user_without_positives_gets_the_most_popular_items():
    """Users start at zero and get no gradient without positives: they rank by item bias, which
    BPR pushes up for frequent positives (not in exact frequency order: the loss saturates)."""
    rng = np.random.default_rng(0)
    popularity = 0.5 ** np.arange(10)  # item 1 twice as popular as item 2, and so on
    items = rng.choice(np.arange(1, 11), 2000, p=popularity / popularity.sum())
    users = rng.integers(0, N_USERS - 1, 2000)  # the last user has no positives
    model, _ = train_bpr(users, items, N_USERS, 10, RetrieverConfig(dim=4, epochs=3, lr=0.05), seed=0)
    cold = model.top_items(torch.tensor([N_USERS - 1]), 3, batch_size=1)[0]
    assert sorted(cold.tolist()) == [1, 2, 3]
    assert not model.user_embedding.weight[N_USERS - 1].any()
