"""Ranking metrics against hand-worked cases, scikit-learn, torchmetrics and a brute-force MAP."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_normalized_dcg,
    retrieval_precision,
    retrieval_recall,
)
from torchmetrics.retrieval import RetrievalNormalizedDCG, RetrievalRecall

from goalrank.errors import DataError
from goalrank.evaluate.metrics import (
    AUC,
    MetricAccumulator,
    metric_names,
    per_list_auc,
    per_list_metrics,
)


def random_case(
    size: int, n_candidates: int, list_len: int, density: float, seed: int, tied: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random labels and scores; ``lists`` are the top-L of ``scores``. Row 0 has no positive and
    row 1 no negative, so both exclusion rules are always exercised.

    Scores are positive because torchmetrics' retrieval metrics treat a target with a score <= 0
    as irrelevant; ``tied`` draws scores from few values (AUC ties).
    """
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(size, n_candidates, generator=generator) < density).long()
    labels[0], labels[1] = 0, 1
    if tied:
        scores = torch.randint(1, 4, (size, n_candidates), generator=generator).float()
    else:
        scores = torch.rand(size, n_candidates, generator=generator) + 0.01
    return scores.topk(list_len, dim=1).indices, scores, labels


def brute_force_ap(rel: list[int], n_pos: int) -> float:
    """AP@L = Σ_k P@k · rel_k / min(#pos, L), straight from the definition."""
    total = sum(sum(rel[: k + 1]) / (k + 1) for k in range(len(rel)) if rel[k])
    return total / min(n_pos, len(rel))


# (B, N, L, label density, seed); L = N once, dense and sparse labels
CASES = [(8, 10, 3, 0.3, 0), (16, 50, 6, 0.1, 1), (6, 7, 7, 0.5, 2), (11, 20, 6, 0.9, 3)]


def test_hand_worked_list_metrics_and_tied_auc() -> None:
    labels = torch.tensor([[1, 0, 1, 1, 0]])
    lists = torch.tensor([[1, 0, 3]])  # rel = (0, 1, 1), hits = 2 of P = 3
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.7, 0.5]])  # a positive ties a negative at 0.5
    got = per_list_metrics(lists, scores, labels)
    inv_log3 = 1 / math.log2(3)
    expected = {
        "H@3": 2 / 3,
        "NDCG@3": (inv_log3 + 1 / 2) / (1 + inv_log3 + 1 / 2),
        "MAP@3": (1 / 2 + 2 / 3) / 3,
        "F1@3": 2 / 3,  # P@3 = R@3 = 2/3
        # positive pairs won: 0.5 vs {0.9: 0, 0.5: 1/2} twice, 0.7 vs {0.9: 0, 0.5: 1} -> 2 of 6
        AUC: 2 / 6,
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value, abs=1e-6), name


def test_hand_worked_more_positives_than_list_len() -> None:
    labels = torch.tensor([[1, 1, 0, 1, 1, 0]])  # P = 4 > L = 2
    lists = torch.tensor([[0, 2]])  # rel = (1, 0)
    scores = torch.tensor([[6.0, 1.0, 5.0, 2.0, 3.0, 4.0]])
    got = per_list_metrics(lists, scores, labels)
    assert got["H@2"].item() == pytest.approx(1 / 4)
    assert got["NDCG@2"].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert got["MAP@2"].item() == pytest.approx(1 / 2)  # normalised by min(P, L) = 2
    assert got["F1@2"].item() == pytest.approx(2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4))
    assert got[AUC].item() == pytest.approx(2 / 8)  # positives 6, 1, 2, 3 vs negatives 5, 4


@pytest.mark.parametrize(("size", "n_candidates", "list_len", "density", "seed"), CASES)
def test_per_list_metrics_match_references(
    size: int, n_candidates: int, list_len: int, density: float, seed: int
) -> None:
    lists, scores, labels = random_case(size, n_candidates, list_len, density, seed)
    got = per_list_metrics(lists, scores, labels)
    h, ndcg, map_, f1, _ = metric_names(list_len)
    for row in range(size):
        preds, target = scores[row], labels[row]
        n_pos = int(target.sum())
        if n_pos == 0:
            assert all(torch.isnan(values[row]) for values in got.values())
            continue
        recall = retrieval_recall(preds, target, top_k=list_len).item()
        precision = retrieval_precision(preds, target, top_k=list_len).item()
        assert got[h][row].item() == pytest.approx(recall, abs=1e-6)
        assert got[ndcg][row].item() == pytest.approx(
            retrieval_normalized_dcg(preds, target, top_k=list_len).item(), abs=1e-5
        )
        f1_reference = 2 * precision * recall / (precision + recall) if recall else 0.0
        assert got[f1][row].item() == pytest.approx(f1_reference, abs=1e-6)
        # torchmetrics' AP divides by the hits in the top L, ours by min(P, L): same sum otherwise.
        rel = target[lists[row]].tolist()
        assert got[map_][row].item() == pytest.approx(brute_force_ap(rel, n_pos), abs=1e-6)
        hits = sum(rel)
        theirs = retrieval_average_precision(preds, target, top_k=list_len).item()
        assert got[map_][row].item() * min(n_pos, list_len) == pytest.approx(theirs * hits, abs=1e-5)
        if n_pos == n_candidates:
            assert torch.isnan(got[AUC][row])
        else:
            assert got[AUC][row].item() == pytest.approx(roc_auc_score(target, preds), abs=1e-6)
        assert all(0.0 <= values[row].item() <= 1.0 for values in got.values() if not values[row].isnan())


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_with_ties_matches_sklearn(seed: int) -> None:
    _, scores, labels = random_case(12, 15, 3, 0.4, seed, tied=True)
    got = per_list_auc(scores, labels)
    for row in range(2, 12):
        assert got[row].item() == pytest.approx(roc_auc_score(labels[row], scores[row]), abs=1e-6)
    assert torch.isnan(got[:2]).all()


def test_pooled_auc_over_many_items_matches_sklearn() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(1, 20_000, generator=generator) < 0.3).long()
    scores = torch.randint(0, 50, (1, 20_000), generator=generator).float() + labels  # ties, signal
    assert per_list_auc(scores, labels).item() == pytest.approx(roc_auc_score(labels[0], scores[0]), abs=1e-6)


def test_accumulator_streams_means_and_counts() -> None:
    batches = [random_case(9, 20, 4, 0.3, seed) for seed in (0, 1)]
    accumulator = MetricAccumulator()
    recall, ndcg = RetrievalRecall(top_k=4, empty_target_action="skip"), RetrievalNormalizedDCG(top_k=4)
    all_values: dict[str, list[torch.Tensor]] = {}
    for index, (lists, scores, labels) in enumerate(batches):
        accumulator.update(lists, scores, labels)
        queries = torch.arange(9)[:, None].expand(-1, 20) + 9 * index
        keep = labels.sum(dim=1) > 0  # torchmetrics' NDCG scores empty queries 0; we exclude them
        recall.update(scores, labels, indexes=queries)
        ndcg.update(scores[keep], labels[keep], indexes=queries[keep])
        for name, values in per_list_metrics(lists, scores, labels).items():
            all_values.setdefault(name, []).append(values)
    result = accumulator.compute()
    assert result["H@4"] == pytest.approx(recall.compute().item(), abs=1e-6)
    assert result["NDCG@4"] == pytest.approx(ndcg.compute().item(), abs=1e-6)
    for name, chunks in all_values.items():
        values = torch.cat(chunks)
        assert result[name] == pytest.approx(values.nanmean().item(), abs=1e-6)
    labels = torch.cat([case[2] for case in batches])
    n_pos = labels.sum(dim=1)
    assert result["n_lists"] == 18
    assert result["n_lists_with_positive"] == int((n_pos > 0).sum())
    assert result["n_lists_auc"] == int(((n_pos > 0) & (n_pos < 20)).sum())
    assert result["n_lists_auc"] < result["n_lists_with_positive"] < result["n_lists"]


def test_all_negative_lists_are_excluded_and_perfect_ranking_scores_one() -> None:
    list_len = 3
    labels = torch.tensor([[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]])  # P = L in row 0
    scores = labels + torch.tensor([0.1, 0.3, 0.2, 0.2, 0.1, 0.3])  # every positive first
    accumulator = MetricAccumulator()
    accumulator.update(scores.topk(list_len).indices, scores, labels)
    result = accumulator.compute()
    assert all(result[name] == pytest.approx(1.0) for name in metric_names(list_len))
    assert (result["n_lists"], result["n_lists_with_positive"], result["n_lists_auc"]) == (2, 1, 1)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 4),
    n_candidates=st.integers(2, 12),
    list_fraction=st.floats(0.0, 1.0),
    density=st.floats(0.0, 1.0),
    tied=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_permuting_candidates_leaves_metrics_unchanged(
    size: int, n_candidates: int, list_fraction: float, density: float, tied: bool, seed: int
) -> None:
    list_len = 1 + int(list_fraction * (n_candidates - 1))
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(size, n_candidates, generator=generator) < density).long()
    scores = torch.randint(0, 3, (size, n_candidates), generator=generator).float() if tied else torch.randn(
        size, n_candidates, generator=generator
    )
    lists = torch.rand(size, n_candidates, generator=generator).argsort(dim=1)[:, :list_len]
    perm = torch.randperm(n_candidates, generator=generator)  # new position j holds old perm[j]
    inverse = perm.argsort()
    before = per_list_metrics(lists, scores, labels)
    after = per_list_metrics(inverse[lists], scores[:, perm], labels[:, perm])
    for name in before:
        torch.testing.assert_close(after[name], before[name], equal_nan=True)


@pytest.mark.parametrize(
    ("lists", "labels", "field"),
    [
        (torch.tensor([[0, 0]]), torch.tensor([[1, 0, 0]]), "lists"),  # repeat
        (torch.tensor([[0, 3]]), torch.tensor([[1, 0, 0]]), "lists"),  # out of range
        (torch.tensor([[0, 1, 2, 0]]), torch.tensor([[1, 0, 0]]), "lists"),  # L > N
        (torch.tensor([[0, 1]]), torch.tensor([[2, 0, 0]]), "labels"),  # not binary
        (torch.tensor([[0, 1]]), torch.tensor([[1, 0]]), "labels"),  # shape
    ],
)
def test_invalid_inputs_raise_data_error(lists: torch.Tensor, labels: torch.Tensor, field: str) -> None:
    with pytest.raises(DataError, match=field):
        per_list_metrics(lists, torch.zeros(1, 3), labels)


def test_accumulator_rejects_a_changed_list_len_and_an_empty_stream() -> None:
    accumulator = MetricAccumulator()
    with pytest.raises(DataError, match="no batch"):
        accumulator.compute()
    lists, scores, labels = random_case(3, 8, 2, 0.5, 0)
    accumulator.update(lists, scores, labels)
    with pytest.raises(DataError, match="length 3, expected 2"):
        accumulator.update(scores.topk(3).indices, scores, labels)
