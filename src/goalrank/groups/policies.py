"""The seven auxiliary policies of App. C that propose candidate lists for a group (paper §3.3).

Sampling many lists from one generator gives groups whose rewards barely differ, so the order
of their rewards is dominated by the reward model's bias (paper Eq. 3). These policies widen the
reward gaps: some follow the generator (autoregressive, tree, Gumbel), one follows the reward
model (Markov), and the rest perturb or avoid what is already in the group. The frozen policies
that follow neither the generator nor the group are in ``groups.auxiliary``.

Every ``propose`` returns (B, n, L) positions into ``batch.candidates`` with no repeats within a
list, runs without gradients, and is vectorised over the batch: Python loops run only over list
positions (L) or, for diversity, over the lists it builds one after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from goalrank.config import check
from goalrank.errors import ConfigError
from goalrank.groups.context import GroupContext, check_temperature, gumbel, randint, random_lists, uniform


def _complete(ctx: GroupContext, prefixes: torch.Tensor, greedy: bool, temperature: float) -> torch.Tensor:
    """(B, P, L) lists continuing ``prefixes`` (B, P, t) with the generator; as-is when t = L."""
    if prefixes.shape[2] == ctx.list_len:
        return prefixes
    return ctx.generator.decode(
        ctx.encoding, prefixes.shape[1], greedy=greedy, temperature=temperature, rng=ctx.rng, prefix=prefixes
    )


@dataclass
class AutoregressivePolicy:
    """Autoregressive sampling from the current generator at ``temperature`` (App. C, first item)."""

    temperature: float = 1.0
    name: ClassVar[str] = "autoregressive"

    def __post_init__(self) -> None:
        check_temperature("autoregressive", self.temperature)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        return ctx.generator.decode(ctx.encoding, num_lists, temperature=self.temperature, rng=ctx.rng)


@dataclass
class TreePolicy:
    """Parallel tree-structured generation (App. C, second item).

    The first ``depth`` steps branch over the generator's ``branching`` most likely next items,
    giving branching**depth prefixes (leaves); each leaf is then completed greedily. If more lists
    are asked for than there are leaves, the most likely leaves are kept; if fewer leaves exist,
    the extra lists reuse the leaves (most likely first) with completions sampled at
    ``temperature``, so every list still starts with a leaf of the tree.
    """

    branching: int = 2
    depth: int = 2
    temperature: float = 1.0
    name: ClassVar[str] = "tree"

    def __post_init__(self) -> None:
        check(self.branching >= 1, "group.tree.branching", ">= 1", self.branching)
        check(self.depth >= 1, "group.tree.depth", ">= 1", self.depth)
        check_temperature("tree", self.temperature)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        leaves = torch.zeros(ctx.size, 1, 0, dtype=torch.long, device=ctx.device)  # (B, 1, 0): the root
        log_likelihood = torch.zeros(ctx.size, 1, device=ctx.device)  # (B, 1)
        for _ in range(min(self.depth, ctx.list_len)):
            leaves, log_likelihood = self._expand(ctx, leaves, log_likelihood)  # (B, P, t + 1), (B, P)
        num_leaves = leaves.shape[1]
        by_likelihood = log_likelihood.argsort(dim=1, descending=True)  # (B, P)
        keep = by_likelihood[:, : min(num_lists, num_leaves)]
        lists = _complete(ctx, _take(leaves, keep), greedy=True, temperature=1.0)
        if num_lists <= num_leaves:
            return lists
        reused = by_likelihood[:, torch.arange(num_lists - num_leaves, device=ctx.device) % num_leaves]
        extra = _complete(ctx, _take(leaves, reused), greedy=False, temperature=self.temperature)
        return torch.cat([lists, extra], dim=1)  # (B, num_lists, L)

    def _expand(
        self, ctx: GroupContext, prefixes: torch.Tensor, log_likelihood: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prefix (B, P, t) extended by its b most likely next items: (B, P * b, t + 1), and
        the children's log π_θ (B, P * b), the prefix's plus the chosen step's.

        The root's step is log-softmax of the shared first-step logits, so the tree costs one
        decoder pass fewer; leaf likelihoods are accumulated here instead of re-scored.
        """
        size, num_prefixes, length = prefixes.shape
        if length == 0:
            next_log_probs = ctx.first_step_logits().float().log_softmax(dim=1)[:, None]  # (B, 1, N)
        else:
            next_log_probs = ctx.generator.next_log_probs(ctx.encoding, prefixes).float()  # (B, P, N)
        best = next_log_probs.topk(min(self.branching, ctx.num_candidates - length), dim=2)  # (B, P, b)
        children = torch.cat(
            [prefixes[:, :, None].expand(-1, -1, best.indices.shape[2], -1), best.indices[..., None]], dim=3
        )  # (B, P, b, t + 1)
        return children.flatten(1, 2), (log_likelihood[..., None] + best.values).flatten(1)


def _take(lists: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, k, T) rows ``index`` (B, k) of ``lists`` (B, P, T)."""
    return lists.gather(1, index[..., None].expand(-1, -1, lists.shape[2]))


@dataclass
class GumbelPolicy:
    """Softmax sampling without replacement over the generator's first-step scores (App. C, third item).

    Gumbel-top-k (Efraimidis & Spirakis 2006): adding i.i.d. Gumbel noise to logits / temperature
    and keeping the top L positions samples L items without replacement, each step ∝ softmax over
    the items left; the first item is distributed as softmax(first_step_logits / temperature).
    """

    temperature: float = 1.0
    name: ClassVar[str] = "gumbel"

    def __post_init__(self) -> None:
        check_temperature("gumbel", self.temperature)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        logits = ctx.first_step_logits() / self.temperature  # (B, N)
        keys = logits[:, None] + gumbel(ctx, (ctx.size, num_lists, ctx.num_candidates))  # (B, n, N)
        return keys.topk(ctx.list_len, dim=2).indices  # (B, n, L)


@dataclass
class MarkovPolicy:
    """First-order Markov chain over the reward model's pair scores (App. C, fourth item).

    Every ordered pair (i, j), i ≠ j, of the ``top`` candidates with the highest first-step
    generator logits is scored by the evaluator as a length-2 list, ``chunk_size`` pairs per
    evaluator call to bound memory. The first two items are drawn ∝ exp(score(i, j) /
    temperature) over all pairs; each next item k ∝ exp(score(prev, k) / temperature) among the
    unused ones, conditioning only on the previous item. Scoring all N(N-1) pairs (2,450 for
    N=50) costs more than the rest of a training step together (measured with
    ``goalrank bench train``), hence ``top`` (default 12: 132 pairs); ``top >= N`` scores them all.
    """

    temperature: float = 1.0
    chunk_size: int = 4096
    top: int = 12
    name: ClassVar[str] = "markov"

    def __post_init__(self) -> None:
        check_temperature("markov", self.temperature)
        check(self.chunk_size >= 1, "group.markov.chunk_size", ">= 1", self.chunk_size)
        check(self.top >= 1, "group.markov.top", ">= 1", self.top)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        if ctx.list_len < 2:
            raise ConfigError(f"group.mix.markov: needs list_len >= 2, got list_len={ctx.list_len}")
        width = min(max(self.top, ctx.list_len), ctx.num_candidates)
        top = ctx.first_step_logits().topk(width, dim=1).indices  # (B, M)
        pair_scores = self.pair_scores(ctx, top) / self.temperature  # (B, M, M), -inf on the diagonal
        first = (pair_scores.flatten(1)[:, None] + gumbel(ctx, (ctx.size, num_lists, width * width))).argmax(2)
        chain = [first // width, first % width]  # 2 × (B, n), indices into top
        used = torch.zeros(ctx.size, num_lists, width, dtype=torch.bool, device=ctx.device)
        used.scatter_(2, torch.stack(chain, dim=2), True)
        for _ in range(2, ctx.list_len):
            rows = pair_scores.gather(1, chain[-1][..., None].expand(-1, -1, width))  # (B, n, M) score(prev, ·)
            keys = rows.masked_fill(used, -torch.inf) + gumbel(ctx, (ctx.size, num_lists, width))
            chain.append(keys.argmax(2))
            used.scatter_(2, chain[-1][..., None], True)
        return top.gather(1, torch.stack(chain, dim=2).flatten(1)).view(ctx.size, num_lists, ctx.list_len)

    def pair_scores(self, ctx: GroupContext, top: torch.Tensor) -> torch.Tensor:
        """(B, M, M) evaluator reward of every ordered pair of ``top`` (B, M) as a length-2 list; -inf where i = j."""
        width = top.shape[1]
        flat = torch.arange(width * width, device=ctx.device)
        flat = flat[flat // width != flat % width]  # (M(M-1),) ordered pairs i ≠ j
        pairs = torch.stack([flat // width, flat % width], dim=1)  # (M(M-1), 2)
        scores = torch.full((ctx.size, width * width), -torch.inf, device=ctx.device)
        for lo in range(0, len(flat), self.chunk_size):
            chunk = pairs[lo : lo + self.chunk_size]  # (C, 2) indices into top
            lists = top.gather(1, chunk.flatten()[None].expand(ctx.size, -1)).view(ctx.size, -1, 2)  # (B, C, 2)
            scores[:, flat[lo : lo + self.chunk_size]] = ctx.evaluator.list_reward(ctx.batch, lists).float()
        return scores.view(ctx.size, width, width)


@dataclass
class RandomPolicy:
    """Uniformly random lists without model guidance (App. C, fifth item)."""

    name: ClassVar[str] = "random"

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        return random_lists(ctx, num_lists)


@dataclass
class SubstitutionPolicy:
    """Heuristic substitution (App. C, sixth item): copy a list already in the group and replace
    1 to ``max_swaps`` of its positions with distinct candidates it does not contain.

    The source of each new list is drawn uniformly from ``ctx.existing``; with an empty group the
    generator's greedy list is the only source. The number of swaps is uniform in
    [1, min(max_swaps, L, N − L)]; when N = L no item can be swapped in and the sources are
    returned unchanged (the group builder then replaces the duplicates).
    """

    max_swaps: int = 2
    name: ClassVar[str] = "substitution"

    def __post_init__(self) -> None:
        check(self.max_swaps >= 1, "group.substitution.max_swaps", ">= 1", self.max_swaps)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        sources = ctx.existing
        if sources.shape[1] == 0:
            sources = ctx.generator.decode(ctx.encoding, 1, greedy=True)  # (B, 1, L)
        lists = _take(sources, randint(ctx, sources.shape[1], (ctx.size, num_lists)))  # (B, n, L)
        max_swaps = min(self.max_swaps, ctx.list_len, ctx.num_candidates - ctx.list_len)
        if max_swaps == 0:
            return lists
        swaps = 1 + randint(ctx, max_swaps, (ctx.size, num_lists))  # (B, n)
        position_rank = uniform(ctx, lists.shape).argsort(dim=2).argsort(dim=2)  # (B, n, L) random ranks
        replace = position_rank < swaps[..., None]  # exactly ``swaps`` positions per list
        keys = uniform(ctx, (ctx.size, num_lists, ctx.num_candidates)).scatter(2, lists, 2.0)  # listed last
        fresh = keys.topk(max_swaps, dim=2, largest=False).indices  # (B, n, S) distinct unlisted
        slot = (replace.cumsum(dim=2) - 1).clamp_min(0)  # k-th replaced position takes the k-th fresh item
        return torch.where(replace, fresh.gather(2, slot), lists)


@dataclass
class DiversityPolicy:
    """Diversity-oriented generation (App. C, seventh item): lists as unlike the group as possible.

    Lists are built one after another, position by position. At each step the unused candidate
    in the fewest lists of the group so far (``existing`` plus the lists this call already built)
    is taken, then the one least often at this position; remaining ties go to the highest
    first-step logit / ``temperature`` plus Gumbel noise, i.e. a generator-guided random choice.
    """

    temperature: float = 1.0
    name: ClassVar[str] = "diversity"

    def __post_init__(self) -> None:
        check_temperature("diversity", self.temperature)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        by_position = ctx.existing.transpose(1, 2)  # (B, L, K0)
        at_position = torch.zeros(ctx.size, ctx.list_len, ctx.num_candidates, device=ctx.device)
        at_position.scatter_add_(2, by_position, torch.ones(by_position.shape, device=ctx.device))
        # (B, L, N) how often each candidate sits at each position; its sum over L counts lists.
        rank_weight = by_position.shape[2] + num_lists + 1  # exceeds any per-position count
        logits = ctx.first_step_logits().float() / self.temperature  # (B, N)
        built = []
        for _ in range(num_lists):
            tie_break = logits + gumbel(ctx, (ctx.size, ctx.num_candidates))  # (B, N)
            in_lists = at_position.sum(dim=1)  # (B, N)
            used = torch.zeros(ctx.size, ctx.num_candidates, dtype=torch.bool, device=ctx.device)
            chosen = []
            for position in range(ctx.list_len):
                crowding = (in_lists * rank_weight + at_position[:, position]).masked_fill(used, torch.inf)
                least = crowding == crowding.min(dim=1, keepdim=True).values  # (B, N)
                chosen.append(tie_break.masked_fill(~least, -torch.inf).argmax(dim=1))  # (B,)
                used.scatter_(1, chosen[-1][:, None], True)
            new_list = torch.stack(chosen, dim=1)  # (B, L)
            at_position.scatter_add_(2, new_list[..., None], torch.ones(ctx.size, ctx.list_len, 1, device=ctx.device))
            built.append(new_list)
        return torch.stack(built, dim=1)  # (B, n, L)
