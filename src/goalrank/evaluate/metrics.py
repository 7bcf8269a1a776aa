"""The paper's offline ranking metrics (Sec. 4.1.1): H@L, NDCG@L, MAP@L, F1@L and AUC, per list.

A ranker answers each request with ``lists`` (B, L), positions into the N candidates without
repeats, and ``scores`` (B, N) (see ``goalrank.models.base.RankOutput``); ``labels`` (B, N) are 1
where a candidate is a positive of the request. For one request let ``rel_k`` be the label of the
item at list position k (k = 1..L), ``hits = Σ_{k≤L} rel_k`` and ``P`` the number of positives
among the N candidates. Then

- ``H@L    = hits / P``: the hit ratio as the share of the request's positives that the list
  ranks in its top L, i.e. recall@L. The ranking literature's single-target hit ratio (is the
  one held-out item in the top L?) has no unique meaning when a request has several positives,
  as the paper's exposed lists of L items do; the re-ranking literature then reports this share.
- ``NDCG@L = DCG / IDCG`` with binary gains and the log2 discount: ``DCG = Σ_{k≤L} rel_k /
  log2(k + 1)``, ``IDCG = Σ_{k ≤ min(P, L)} 1 / log2(k + 1)`` (all positives ranked first).
- ``MAP@L``: the mean of ``AP@L = Σ_{k≤L} P@k · rel_k / min(P, L)`` with ``P@k = Σ_{j≤k} rel_j / k``.
  The normaliser is ``min(P, L)``, not ``hits``, so a list that misses positives is penalised.
- ``F1@L   = 2 · P@L · R@L / (P@L + R@L)`` with ``P@L = hits / L`` and ``R@L = hits / P``, which
  simplifies to ``2 · hits / (L + P)``; 0 when ``hits = 0``.
- ``AUC``: the Mann–Whitney probability that ``scores`` rank a random positive candidate above a
  random other candidate of the same request (all N candidates, not only the listed ones); ties
  count 1/2.

A request without any positive is excluded from every metric (none of them is defined there), and
one without a negative is also excluded from AUC. Reported values are means over the included
requests; ``MetricAccumulator`` also reports how many requests each mean covers.
"""

from __future__ import annotations

import torch

from goalrank.errors import DataError

AUC = "AUC"


def metric_names(list_len: int) -> tuple[str, ...]:
    """Keys of the five metrics for lists of ``list_len`` items, e.g. ``("H@6", ..., "AUC")``."""
    return (f"H@{list_len}", f"NDCG@{list_len}", f"MAP@{list_len}", f"F1@{list_len}", AUC)


def per_list_metrics(
    lists: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The five metrics of every request: ``{name: (B,) float32}``, NaN where a request is excluded.

    ``lists`` (B, L) are positions into the N candidates, ``scores`` and ``labels`` (B, N); the
    definitions are in the module docstring. Kept per list (not averaged) so callers can stream,
    slice or bootstrap them.
    """
    _check_inputs(lists, scores, labels)
    lists = lists.long()  # gather needs int64 positions
    list_len = lists.shape[1]
    positives = labels > 0  # (B, N)
    n_pos = positives.sum(dim=1).float()  # (B,)
    rel = positives.gather(1, lists).float()  # (B, L) rel_k
    hits = rel.sum(dim=1)  # (B,)
    ranks = torch.arange(1, list_len + 1, device=lists.device, dtype=torch.float32)  # (L,) k
    discount = 1.0 / torch.log2(ranks + 1.0)  # (L,)
    ideal_len = n_pos.clamp(min=1, max=list_len)  # (B,) min(P, L), 1 where excluded
    ideal_dcg = discount.cumsum(dim=0)[ideal_len.long() - 1]  # (B,)
    precision_at_k = rel.cumsum(dim=1) / ranks  # (B, L) P@k

    has_positive = n_pos > 0
    safe_n_pos = n_pos.clamp(min=1)
    h, ndcg, map_, f1, _ = metric_names(list_len)
    values = {
        h: hits / safe_n_pos,
        ndcg: (rel * discount).sum(dim=1) / ideal_dcg,
        map_: (precision_at_k * rel).sum(dim=1) / ideal_len,
        f1: 2.0 * hits / (list_len + n_pos),
    }
    excluded = torch.full_like(hits, float("nan"))
    metrics = {name: torch.where(has_positive, value, excluded) for name, value in values.items()}
    metrics[AUC] = _auc(scores, labels)
    return metrics


def per_list_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) AUC of ``scores`` (B, N) against binary ``labels`` (B, N); NaN without both classes.

    Computed from midranks (Mann–Whitney U) in O(N log N) per row rather than over all pairs, so
    it also serves pooled AUCs over millions of items. Rank sums are exact in int64; ties get
    their average rank, which counts a tied (positive, negative) pair as one half.
    """
    _check_scores_labels(scores, labels)
    return _auc(scores, labels)


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``per_list_auc`` on inputs already checked."""
    positives = labels > 0  # (B, N)
    n_pos = positives.sum(dim=1)  # (B,)
    n_neg = labels.shape[1] - n_pos  # (B,)
    scores = scores.contiguous()
    ordered = scores.sort(dim=1).values  # (B, N)
    below = torch.searchsorted(ordered, scores, right=False)  # (B, N) candidates scored lower
    not_above = torch.searchsorted(ordered, scores, right=True)  # (B, N) lower or tied (incl. self)
    twice_midrank = below + not_above + 1  # (B, N) 2 × the 1-based average rank
    twice_u = (twice_midrank * positives).sum(dim=1) - n_pos * (n_pos + 1)  # (B,) 2 × U statistic
    auc = twice_u.float() / (2 * n_pos * n_neg).clamp(min=1).float()
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def pooled_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mann–Whitney AUC over all (positive, negative) pairs of flat ``scores``/``labels``; ties count one half."""
    return float(per_list_auc(scores.reshape(1, -1), labels.reshape(1, -1))[0])


class MetricAccumulator:
    """Streams ``per_list_metrics`` over batches and averages each metric over its included lists.

    ``compute`` returns the five means (NaN if no list was included) plus ``n_lists`` (lists
    seen), ``n_lists_with_positive`` (lists averaged by H/NDCG/MAP/F1) and ``n_lists_auc``
    (lists averaged by AUC: at least one positive and one negative candidate).
    """

    def __init__(self) -> None:
        self.list_len: int | None = None
        self.n_lists = 0
        self._sums: torch.Tensor | None = None  # (M,) float64 on the CPU
        self._counts: torch.Tensor | None = None  # (M,) int64 on the CPU

    def update(self, lists: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``lists`` (B, L), ``scores`` (B, N), ``labels`` (B, N)."""
        if self.list_len is not None and lists.shape[1] != self.list_len:
            raise DataError(f"lists: length {lists.shape[1]}, expected {self.list_len} as in earlier batches")
        per_list = per_list_metrics(lists, scores, labels)
        values = torch.stack(list(per_list.values()), dim=1).cpu().double()  # (B, M)
        included = ~values.isnan()  # (B, M)
        sums, counts = values.nan_to_num(0.0).sum(dim=0), included.sum(dim=0)  # (M,)
        if self._sums is None or self._counts is None:
            self._sums, self._counts = sums, counts
        else:
            self._sums, self._counts = self._sums + sums, self._counts + counts
        self.list_len = lists.shape[1]
        self.n_lists += lists.shape[0]

    def compute(self) -> dict[str, float]:
        """Means over included lists, keyed by ``metric_names(L)``, plus the list counts."""
        if self.list_len is None or self._sums is None or self._counts is None:
            raise DataError("MetricAccumulator.compute: no batch was added (is the split empty?)")
        names = metric_names(self.list_len)
        sums = dict(zip(names, self._sums.tolist(), strict=True))
        counts = dict(zip(names, self._counts.tolist(), strict=True))
        result: dict[str, float] = {
            name: sums[name] / counts[name] if counts[name] else float("nan") for name in names
        }
        result.update(n_lists=self.n_lists, n_lists_with_positive=counts[names[0]], n_lists_auc=counts[AUC])
        return result


def _check_inputs(lists: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise DataError naming the tensor unless shapes, positions and labels are as documented."""
    _check_scores_labels(scores, labels)
    size, n_candidates = scores.shape
    if lists.dim() != 2 or lists.shape[0] != size or not 1 <= lists.shape[1] <= n_candidates:
        raise DataError(f"lists {tuple(lists.shape)}: expected (B={size}, L) with 1 <= L <= N={n_candidates}")
    if lists.dtype not in (torch.int32, torch.int64):
        raise DataError(f"lists: dtype {lists.dtype}, expected integer positions into the candidates")
    if lists.numel() and (lists.min() < 0 or lists.max() >= n_candidates):
        raise DataError(f"lists: positions must lie in [0, {n_candidates})")
    if (lists.sort(dim=1).values.diff(dim=1) == 0).any():
        raise DataError("lists: a candidate position repeats within a list")


def _check_scores_labels(scores: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise DataError unless ``scores`` and binary ``labels`` share one (B, N) shape."""
    if scores.dim() != 2 or labels.shape != scores.shape:
        raise DataError(
            f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)}: expected the same (B, N) shape"
        )
    if torch.isnan(scores).any():
        raise DataError("scores: expected no NaN (AUC ranks every candidate)")
    if not ((labels == 0) | (labels == 1)).all():
        raise DataError("labels: expected binary values 0/1")
