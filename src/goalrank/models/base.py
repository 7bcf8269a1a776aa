"""The one ranking interface every model implements, so evaluation, benchmarks and the service
treat GoalRank and all baselines alike.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from goalrank.data.storage import RankingBatch


@dataclass
class RankOutput:
    """A ranker's answer for a batch of requests.

    lists:  (B, L) positions into ``batch.candidates``, no repeats within a row: the ordered list.
    scores: (B, N) one score per candidate, higher is better, consistent with ``lists`` (the
            listed items outscore every other candidate, in list order). Used for AUC.
    """

    lists: torch.Tensor
    scores: torch.Tensor


class Ranker(nn.Module):
    """Base class of every ranker (a ``ListRanker``): subclasses implement ``rank``; ``list_len`` is L."""

    def __init__(self, list_len: int) -> None:
        super().__init__()
        self.list_len = list_len

    def rank(self, batch: RankingBatch) -> RankOutput:
        raise NotImplementedError


def scores_from_lists(lists: torch.Tensor, base_scores: torch.Tensor) -> torch.Tensor:
    """Scores consistent with ``lists``: listed items get ranks above every other candidate.

    Non-listed candidates keep the order of ``base_scores`` (e.g. a first-step logit), squashed
    below the listed ones, so AUC reflects both the list and the model's view of the rest.
    """
    length = lists.shape[1]
    squashed = torch.sigmoid(base_scores.float())  # (B, N) in (0, 1)
    rank_scores = torch.arange(length, 0, -1, device=lists.device, dtype=squashed.dtype) + 1.0
    return squashed.scatter(1, lists, rank_scores.expand(lists.shape[0], -1))


class ItemwiseRanker(Ranker):
    """An item-wise ranker (the generator-only baselines): subclasses implement ``score``, (B, N)
    one logit per candidate; the list is the L highest-scoring candidates, in score order."""

    def score(self, batch: RankingBatch) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        scores = self.score(batch)
        return RankOutput(lists=scores.topk(self.list_len, dim=1).indices, scores=scores)


def gumbel_noise(shape: tuple[int, ...] | torch.Size, rng: torch.Generator | None,
                 device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise: argmax(logits + noise) samples from softmax(logits).

    Drawn on ``rng``'s device, then moved to ``device``, so a CPU generator gives the same draws
    to a model on any device. Shared by GoalRank's sampler and the group policies (``groups.context``).
    """
    uniform = torch.rand(shape, generator=rng, device=rng.device if rng is not None else device).to(device)
    return -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))


class ListRanker(Protocol):
    """What the evaluation protocol, the benchmark and the service need of any ranker."""

    list_len: int

    def rank(self, batch: RankingBatch) -> RankOutput:
        """The ordered list (B, L) and a score of every candidate (B, N) for each request."""
        ...


@runtime_checkable
class PointwiseScorer(Protocol):
    """An item-wise ranker trained by the pointwise objective: BCE of ``score`` against the labels."""

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) one logit per candidate: the chance that it is a positive."""
        ...


@runtime_checkable
class SelfTrained(Protocol):
    """A ranker that defines its own training loss (e.g. an evaluator-guided generator)."""

    def training_loss(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, stats to log) of one batch, both means over its requests."""
        ...


@runtime_checkable
class ListGenerator(Protocol):
    """An autoregressive list generator π_θ(l | u, C) (paper Eq. 6); GoalRank's generator.

    ``encode`` runs once per request batch; everything else reuses its output, so many lists of
    one request are scored or decoded over a single encoding.
    """

    list_len: int

    def encode(self, batch: RankingBatch) -> Any:
        """Encode user context and the N candidates once: an opaque per-request encoding."""

    def first_step_logits(self, encoding: Any) -> torch.Tensor:
        """(B, N) logits of the first position: an item-wise score of every candidate."""

    def step_log_probs(self, encoding: Any, lists: torch.Tensor) -> torch.Tensor:
        """(B, K, T) log masked-softmax_t(l_t), each step of lists (B, K, T) of positions, T ≤ L."""

    def log_prob(self, encoding: Any, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) exact log π_θ(l) = Σ_t log masked-softmax_t for lists (B, K, T) of positions, T ≤ L."""

    def next_log_probs(self, encoding: Any, prefixes: torch.Tensor) -> torch.Tensor:
        """(B, P, N) log π_θ(next item | prefix) for prefixes (B, P, t), t < L; chosen items get -inf-like."""

    def decode(
        self,
        encoding: Any,
        num_lists: int,
        greedy: bool = False,
        temperature: float = 1.0,
        rng: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, K, L) lists: K per request, sampled (or greedy), continuing ``prefix`` (B, K, t0) if given."""


@runtime_checkable
class PassMemoising(Protocol):
    """A ranker that can remember work across evaluation passes over the same requests.

    Training validates on one split every few batches, and only the trained weights change between
    passes; a ranker whose answer is partly a function of frozen parts (PIER: the frozen
    evaluator's best order of a top-L set) can keep that part. Opt-in, switched on by the training
    loop's validation alone: a loaded or served model computes every answer (a benchmark's
    repeated requests would otherwise time a memo).
    """

    def memoise_passes(self) -> None:
        """Remember, from now on, what later passes over the same requests can reuse."""


class RequestMemo:
    """What a frozen part computed for a request, least recently used dropped past ``capacity``.

    Two users: PIER's validation passes (the evaluator's best order of a request's top-L set) and
    GoalRank's reward-model beam (the same lists for a request in every epoch). A key digests every
    tensor of the request's row (user, history, its feedback, candidates, and for safety the labels
    an evaluator must not read anyway), a row of ``extra`` (PIER: the sorted top-L positions) and a
    ``tag`` naming what is remembered with its settings: the same request gets the same answer from
    a frozen evaluator.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @staticmethod
    def keys(batch: RankingBatch, extra: torch.Tensor | None = None, tag: bytes = b"") -> list[bytes]:
        """One key per request of ``batch``, with its row of ``extra`` (B, …) if given."""
        arrays = [getattr(batch, field.name).cpu().numpy() for field in fields(batch)]
        if extra is not None:
            arrays.append(extra.cpu().numpy())
        return [hashlib.blake2b(tag + b"".join(array[row].tobytes() for array in arrays), digest_size=16).digest()
                for row in range(len(batch))]

    def get(self, key: bytes) -> torch.Tensor | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: bytes, value: torch.Tensor) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.capacity:
            self._values.popitem(last=False)

    def __len__(self) -> int:
        return len(self._values)


class ListEvaluator(Protocol):
    """A list-wise reward model r(u, l) (paper App. B): the evaluator shared by every method."""

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) estimated reward of lists (B, K, T) of candidate positions, any T ≤ L."""


@runtime_checkable
class BindableEvaluator(Protocol):
    """An evaluator that can be bound to one batch, sharing its per-request work across calls."""

    def bind(self, batch: RankingBatch) -> ListEvaluator:
        """This evaluator for ``batch`` alone (``reward.model.BoundRewardModel``)."""


def distinct_lists(lists: torch.Tensor, n_candidates: int) -> torch.Tensor:
    """(B, U) indices into ``lists`` (B, K, L) of each request's distinct lists, in proposal order.

    Requests with fewer than U = the batch's largest count are padded with index 0 (their first
    list again, after its own slot, so an arg-max with ties to the earliest is unchanged). A list is
    coded as one integer in base N, so the check is a sort of (B, K) codes; where N^L does not fit
    in int64 every index is kept. MG-E's heads, trained on one trunk, mostly agree, so most of
    their G proposals repeat a few lists, each of which is now scored once.
    """
    size, num_lists, length = lists.shape
    if n_candidates**length >= 2**62:
        return torch.arange(num_lists, device=lists.device).expand(size, -1)
    powers = n_candidates ** torch.arange(length, device=lists.device, dtype=torch.int64)
    codes = (lists.long() * powers).sum(dim=2)  # (B, K)
    ordered, order = codes.sort(dim=1, stable=True)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # the earliest of equal codes (stable sort)
    kept = torch.where(first, order, num_lists).sort(dim=1).values[:, : int(first.sum(dim=1).max())]
    return torch.where(kept == num_lists, 0, kept)


def bound_evaluator(evaluator: ListEvaluator, batch: RankingBatch) -> ListEvaluator:
    """``evaluator`` bound to ``batch`` where it can be (the reward model), else itself (the oracle)."""
    return evaluator.bind(batch) if isinstance(evaluator, BindableEvaluator) else evaluator


def attach_evaluator(ranker: nn.Module, evaluator: ListEvaluator) -> None:
    """Give a generator–evaluator ranker its frozen evaluator without making it a submodule.

    Every G-E baseline shares the one trained reward model (paper §4.1.2), so it is set as a
    plain attribute: it stays out of the ranker's ``state_dict`` (checkpoints hold only the
    ranker's own weights and are rebuilt with the reward run they were trained against), out of
    ``parameters()`` (never optimised), and out of ``train()``/``eval()``/``to()`` (its dropout
    stays off while the ranker trains; the loader already put it on the run's device).
    """
    object.__setattr__(ranker, "evaluator", evaluator)


def group_standardised(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, K) (r − μ_G) / (σ_G + eps) over each request's K lists, σ_G the population std (÷K).

    Zero mean and unit spread per request, 0 where all K rewards are equal. Only the order and the
    relative gaps of a group's rewards are kept: GoalRank's reference policy (Eq. 4) is the softmax
    of these, and EGRerank uses them as its REINFORCE advantages.
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (group_std(rewards) + eps)


def group_std(rewards: torch.Tensor) -> torch.Tensor:
    """(B, 1) σ_G of Eq. 4: the population standard deviation (÷K) of each request's K rewards."""
    return rewards.std(dim=1, correction=0, keepdim=True)


@torch.no_grad()
def select_best_list(
    evaluator: ListEvaluator,
    batch: RankingBatch,
    lists: torch.Tensor,
    base_scores: torch.Tensor,
    max_lists_per_call: int | None = None,
) -> RankOutput:
    """The evaluator's arg-max among each request's proposals: the G-E selection step (paper §2).

    ``lists`` (B, K, L) are the generators' proposals; the evaluator scores them in calls of at
    most ``max_lists_per_call`` lists (B·k ≤ it, at least one proposal per request per call) so
    that K = L! permutations fit in memory, and in cache (models/pier.py). The evaluator is bound
    to ``batch`` first, so the calls share one encoding of each request's user. Each distinct
    list is scored once (``distinct_lists``: MG-E's heads propose few distinct lists). Ties go to
    the earliest proposal. Scores rank the rest of the candidates by ``base_scores`` (B, N).
    """
    evaluator = bound_evaluator(evaluator, batch)
    distinct = distinct_lists(lists, batch.candidates.shape[1])  # (B, U)
    if distinct.shape[1] < lists.shape[1]:  # PIER's L! orders never repeat: no copy for them
        lists = lists.gather(1, distinct[..., None].expand(-1, -1, lists.shape[2]))
    size, num_lists, length = lists.shape
    chunk = num_lists if max_lists_per_call is None else max(1, max_lists_per_call // size)
    rewards = torch.cat(
        [evaluator.list_reward(batch, lists[:, lo : lo + chunk]) for lo in range(0, num_lists, chunk)], dim=1
    )  # (B, U)
    best = rewards.argmax(dim=1)  # (B,)
    chosen = lists.gather(1, best[:, None, None].expand(-1, 1, length))[:, 0]  # (B, L)
    return RankOutput(lists=chosen, scores=scores_from_lists(chosen, base_scores))
