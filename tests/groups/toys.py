"""Exact toy implementations of the ListGenerator and ListEvaluator protocols, for tests.

``PlackettLuce``: each item id has one learnable logit (a linear layer on one-hot item ids); a
list's probability is the Plackett–Luce product Π_t exp(s_{l_t}) / Σ_{j unused} exp(s_j), so
log_prob, greedy decoding (top-L by logit) and sampling (Gumbel-top-k) are all exact.
``PairwiseReward``: r(l) = Σ_t value[l_t] + Σ_t interaction[l_t, l_{t+1}] over item ids.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from goalrank.data.storage import RankingBatch
from goalrank.groups import GroupContext


class PlackettLuce(nn.Module):
    def __init__(self, num_items: int, list_len: int, seed: int = 0) -> None:
        super().__init__()
        self.list_len = list_len
        self.item_logit = nn.Embedding(num_items + 1, 1)
        nn.init.normal_(self.item_logit.weight, generator=torch.Generator().manual_seed(seed))

    def encode(self, batch: RankingBatch) -> torch.Tensor:
        return self.item_logit(batch.candidates).squeeze(-1)  # (B, N)

    def first_step_logits(self, encoding: torch.Tensor) -> torch.Tensor:
        return encoding

    def step_log_probs(self, encoding: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        num_lists, length = lists.shape[1:]
        logits = encoding[:, None].expand(-1, num_lists, -1)  # (B, K, N)
        used = torch.zeros(logits.shape, dtype=torch.bool)
        steps = []
        for t in range(length):
            step = logits.masked_fill(used, -torch.inf).log_softmax(dim=2)
            steps.append(step.gather(2, lists[:, :, t : t + 1]).squeeze(2))
            used = used.scatter(2, lists[:, :, t : t + 1], True)
        return torch.stack(steps, dim=2)  # (B, K, T)

    def log_prob(self, encoding: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        return self.step_log_probs(encoding, lists).sum(dim=2)

    def next_log_probs(self, encoding: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
        logits = encoding[:, None].expand(-1, prefixes.shape[1], -1)  # (B, P, N)
        used = torch.zeros(logits.shape, dtype=torch.bool).scatter(2, prefixes, True)
        return logits.masked_fill(used, -torch.inf).log_softmax(dim=2)

    def decode(self, encoding, num_lists, greedy=False, temperature=1.0, rng=None, prefix=None):
        size, n_cand = encoding.shape
        if prefix is None:
            prefix = torch.zeros(size, num_lists, 0, dtype=torch.long)
        keys = (encoding[:, None] / temperature).expand(-1, num_lists, -1)  # (B, K, N)
        if not greedy:
            u = torch.rand(keys.shape, generator=rng).clamp_min(1e-30)
            keys = keys - torch.log(-torch.log(u))
        keys = keys.masked_fill(torch.zeros(keys.shape, dtype=torch.bool).scatter(2, prefix, True), -torch.inf)
        rest = keys.topk(self.list_len - prefix.shape[2], dim=2).indices
        return torch.cat([prefix, rest], dim=2)


class PairwiseReward:
    def __init__(self, num_items: int, seed: int = 0) -> None:
        rng = torch.Generator().manual_seed(seed)
        self.value = torch.randn(num_items + 1, generator=rng)
        self.interaction = torch.randn(num_items + 1, num_items + 1, generator=rng)

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        size, num_lists, length = lists.shape
        items = batch.candidates.gather(1, lists.reshape(size, -1)).view(size, num_lists, length)
        return self.value[items].sum(2) + self.interaction[items[:, :, :-1], items[:, :, 1:]].sum(2)


def make_batch(size: int, n_cand: int, list_len: int, num_items: int, seed: int = 0) -> RankingBatch:
    """``size`` requests whose N candidates are random distinct item ids in [1, num_items]."""
    rng = torch.Generator().manual_seed(seed)
    candidates = torch.stack([torch.randperm(num_items, generator=rng)[:n_cand] + 1 for _ in range(size)])
    return RankingBatch(
        users=torch.arange(size),
        history=torch.zeros(size, 2, dtype=torch.long),
        history_labels=torch.zeros(size, 2, dtype=torch.long),
        candidates=candidates,
        labels=torch.zeros(size, n_cand),
        exposed=torch.arange(list_len).expand(size, -1).clone(),
    )


def make_context(
    size: int = 3, n_cand: int = 10, list_len: int = 4, seed: int = 0, existing: torch.Tensor | None = None,
    generator: PlackettLuce | None = None, evaluator: PairwiseReward | None = None, num_items: int = 40,
) -> GroupContext:
    batch = make_batch(size, n_cand, list_len, num_items, seed)
    generator = generator or PlackettLuce(num_items, list_len, seed)
    return GroupContext(
        batch=batch, generator=generator, encoding=generator.encode(batch).detach(),
        evaluator=evaluator or PairwiseReward(num_items, seed), list_len=list_len,
        rng=torch.Generator().manual_seed(seed),
        existing=existing if existing is not None else torch.zeros(size, 0, list_len, dtype=torch.long),
    )


def assert_valid_lists(lists: torch.Tensor, size: int, num_lists: int, list_len: int, n_cand: int) -> None:
    """(B, n, L) shape, positions in [0, N), no repeats within a list."""
    assert lists.shape == (size, num_lists, list_len)
    assert lists.dtype == torch.long
    assert bool(((lists >= 0) & (lists < n_cand)).all())
    ordered = lists.sort(dim=2).values
    assert bool((ordered[..., 1:] != ordered[..., :-1]).all())


def all_lists(n_cand: int, list_len: int) -> torch.Tensor:
    """(N!/(N−L)!, L) every ordered list of L distinct positions out of N, by brute force."""
    return torch.tensor(list(itertools.permutations(range(n_cand), list_len)))
