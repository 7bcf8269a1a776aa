import numpy as np
import pytest
import torch

from builders import TWO_TASTE_ITEMS as N_ITEMS
from builders import TWO_TASTE_USERS as N_USERS
from builders import two_taste_log
from goalrank.errors import ConfigError, DataError
from goalrank.retrieval.mf import MatrixFactorization, RetrieverConfig, train_bpr
from goalrank.retrieval.search import hnsw_top_items, recall_at_k, retrieve


def random_model(n_users: int, n_items: int, seed: int = 0) -> MatrixFactorization:
    """An MF model with random user vectors and item biases (BPR-trained users would start at zero)."""
    generator = torch.Generator().manual_seed(seed)
    model = MatrixFactorization(n_users, n_items, 8, generator)
    with torch.no_grad():
        model.user_embedding.weight.normal_(generator=generator)
        model.item_embedding.weight.normal_(generator=generator)
        model.item_bias.weight.normal_(std=0.5, generator=generator)
    return model


def test_score_vectors_inner_products_are_the_mf_scores():
    model = random_model(5, 12)
    users, items = model.score_vectors()
    pairs = torch.cartesian_prod(torch.arange(5), torch.arange(1, 13))
    expected = model(pairs[:, 0], pairs[:, 1]).view(5, 12)
    np.testing.assert_allclose(users @ items.T, expected.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_hnsw_with_a_wide_search_finds_the_exact_top_k_best_first():
    model = random_model(50, 300)
    config = RetrieverConfig(search="hnsw", hnsw_ef_search=300, score_batch_size=16)
    found = hnsw_top_items(model, 20, config)
    exact = model.top_items(torch.arange(50), 20, batch_size=50).numpy()
    assert found.shape == (50, 20) and found.min() >= 1 and found.max() <= 300
    assert recall_at_k(found, exact) == 1.0
    users, items = model.score_vectors()
    scores = np.take_along_axis(users @ items.T, found - 1, axis=1)
    assert (np.diff(scores, axis=1) <= 1e-5).all()  # best first


def test_hnsw_retrieval_is_deterministic_and_reports_its_recall():
    model = random_model(60, 400)
    config = RetrieverConfig(search="hnsw", hnsw_ef_search=16, hnsw_neighbors=4, recall_users=30)
    first, stats = retrieve(model, 10, config, seed=0)
    again, _ = retrieve(model, 10, config, seed=0)
    np.testing.assert_array_equal(first, again)
    assert stats["search"] == "hnsw" and stats["recall_users"] == 30
    exact = model.top_items(torch.arange(60), 10, batch_size=60).numpy()
    assert 0 < stats["recall_at_k"] <= 1.0
    # the sample's recall estimates the recall over all users (a narrow search misses some items)
    assert abs(stats["recall_at_k"] - recall_at_k(first, exact)) < 0.1


def test_auto_search_is_exact_up_to_the_pair_budget():
    users, items = two_taste_log()
    model, _ = train_bpr(users, items, N_USERS, N_ITEMS, RetrieverConfig(dim=4, epochs=2), seed=0)
    exact = model.top_items(torch.arange(N_USERS), 5, batch_size=N_USERS).numpy()
    got, stats = retrieve(model, 5, RetrieverConfig(exact_max_pairs=N_USERS * N_ITEMS), seed=0)
    assert stats == {"search": "exact"}
    np.testing.assert_array_equal(got, exact)
    _, stats = retrieve(model, 5, RetrieverConfig(exact_max_pairs=N_USERS * N_ITEMS - 1), seed=0)
    assert stats["search"] == "hnsw"


def test_recall_at_k_counts_shared_items_per_row():
    found = np.array([[1, 2, 3], [4, 5, 6]])
    exact = np.array([[3, 2, 9], [7, 8, 9]])
    assert recall_at_k(found, exact) == pytest.approx(2 / 6)


def test_errors():
    model = random_model(3, 10)
    with pytest.raises(DataError, match="11 candidates requested but only 10 items"):
        retrieve(model, 11, RetrieverConfig(search="hnsw"), seed=0)
    with pytest.raises(ConfigError, match="retriever.search='ivf'"):
        RetrieverConfig(search="ivf")
    with pytest.raises(ConfigError, match="retriever.hnsw_ef_search=0"):
        RetrieverConfig(hnsw_ef_search=0)
