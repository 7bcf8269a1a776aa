"""Frozen auxiliary policies (paper §3.3, App. C: "heuristic methods and lightweight neural models").

The seven policies of ``groups.policies`` mostly follow the generator being trained, which starts
random: a fresh generator's group holds lists of nearly equal reward, and the reference policy
built from them is nearly flat. These policies do not depend on the generator, so from the first
step the group holds lists that are good by some independent judgement, and the reference policy
has something to prefer:

- ``scorer``: a frozen pretrained item-wise model's top-L list (``group.scorer_run``, e.g. the
  DNN baseline), then Plackett–Luce samples from its scores;
- ``scorer_shuffle``: random orders of that top-L list (same items, other positions);
- ``reward_beam``: beam search over the frozen reward model's own list reward;
- ``popularity``: the top-L of the items' training positives, then Plackett–Luce samples;
- ``logged``: the logged list, then random orders of it (training data only: groups are built
  only while training, where ``batch.exposed`` is the list the logging policy showed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import torch

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.errors import ConfigError
from goalrank.groups.context import GroupContext, check_temperature, gumbel, uniform
from goalrank.models.base import ListEvaluator


def top_then_samples(ctx: GroupContext, scores: torch.Tensor, num_lists: int, temperature: float) -> torch.Tensor:
    """(B, n, L): the top-L of ``scores`` (B, N), then n − 1 Plackett–Luce samples at ``temperature``.

    Gumbel-top-k: the top L of scores / temperature + Gumbel noise is a draw without replacement.
    """
    best = scores.topk(ctx.list_len, dim=1).indices[:, None]  # (B, 1, L)
    if num_lists == 1:
        return best
    keys = scores[:, None] / temperature + gumbel(ctx, (ctx.size, num_lists - 1, ctx.num_candidates))
    return torch.cat([best, keys.topk(ctx.list_len, dim=2).indices], dim=1)


def shuffles(ctx: GroupContext, base: torch.Tensor, num_lists: int) -> torch.Tensor:
    """(B, n, L) uniformly random orders of the lists ``base`` (B, L)."""
    order = uniform(ctx, (ctx.size, num_lists, ctx.list_len)).argsort(dim=2)  # (B, n, L)
    return base[:, None].expand(-1, num_lists, -1).gather(2, order)


def require_scorer(ctx: GroupContext, policy: str) -> torch.Tensor:
    """The frozen scorer's (B, N) logits; ConfigError when the run has no scorer."""
    if ctx.scorer_logits is not None:
        return ctx.scorer_logits
    if ctx.scorer is None:
        raise ConfigError(f"group.mix.{policy}: needs a frozen pretrained scorer; set group.scorer_run to a "
                          "trained item-wise ranker's run folder (e.g. the DNN's) or drop the policy from the mix")
    return ctx.scorer.score(ctx.batch).float()


@dataclass
class ScorerPolicy:
    """The frozen scorer's top-L list, then Plackett–Luce samples from its scores at ``temperature``."""

    temperature: float = 1.0
    name: ClassVar[str] = "scorer"

    def __post_init__(self) -> None:
        check_temperature("scorer", self.temperature)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        return top_then_samples(ctx, require_scorer(ctx, self.name), num_lists, self.temperature)


@dataclass
class ScorerShufflePolicy:
    """Random orders of the frozen scorer's top-L list: the same items, other positions, so the
    reward model's judgement of order (position and list context) decides among them."""

    name: ClassVar[str] = "scorer_shuffle"

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        top = require_scorer(ctx, self.name).topk(ctx.list_len, dim=1).indices  # (B, L)
        return shuffles(ctx, top, num_lists)


@dataclass
class RewardBeamPolicy:
    """Beam search for the lists the frozen reward model scores highest (greedy at ``beam_width`` 1).

    The search runs over the ``top`` candidates with the highest one-item reward (one evaluator
    call of N one-item lists) and extends every beam by each unused one of them, scoring the
    prefixes as lists: width · top lists per step instead of width · N. The reward model sees the
    whole list, so a prefix's reward is only a guide to the full list's (the search is heuristic);
    the final beams are returned best first, max(beam_width, n) of them kept throughout; when
    fewer distinct lists exist than asked for, they repeat (the group builder replaces repeats).

    Cost: after the N one-item lists, every step re-scores whole prefixes with the learned reward
    model (only the unused extensions), about width · Σ_{t≥1} (top − t)(t + 1) list tokens per
    request; at width 4 over 12 that was 20 s of a batch of 128 under load, 3.4 times the Markov
    policy, so the default searches width 2 over 8 (180 tokens instead of 680).
    """

    beam_width: int = 2
    top: int = 8
    name: ClassVar[str] = "reward_beam"

    def __post_init__(self) -> None:
        check(self.beam_width >= 1, "group.reward_beam.beam_width", ">= 1", self.beam_width)
        check(self.top >= 1, "group.reward_beam.top", ">= 1", self.top)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        beams = self.beams(ctx, num_lists)
        return beams[:, torch.arange(num_lists, device=ctx.device) % beams.shape[1]]

    def beams(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        """(B, P, L) the search's beams, from ``ctx.memo`` when it holds every request's.

        The search reads only the request and the frozen evaluator, so a training request gets the
        same beams in every epoch: with a memo they are searched in its first epoch only. The
        evaluator is bound to the whole batch, so one request the memo lacks means searching them all.
        """
        if ctx.memo is None:
            return reward_beam_search(ctx.evaluator, ctx.batch, ctx.list_len, self.beam_width, self.top, num_lists)
        keep = max(self.beam_width, num_lists)
        keys = ctx.memo.keys(ctx.batch, tag=f"{self.name} {self.beam_width} {self.top} {keep}".encode())
        found = [ctx.memo.get(key) for key in keys]
        if all(beams is not None for beams in found):
            return torch.stack(cast(list[torch.Tensor], found)).to(ctx.device)
        beams = reward_beam_search(ctx.evaluator, ctx.batch, ctx.list_len, self.beam_width, self.top, num_lists)
        for key, row in zip(keys, beams.cpu(), strict=True):
            ctx.memo.put(key, row)
        return beams


@torch.no_grad()
def reward_beam_search(evaluator: ListEvaluator, batch: RankingBatch, list_len: int, beam_width: int, top: int,
                       keep: int) -> torch.Tensor:
    """(B, P, L) the beams of ``RewardBeamPolicy``'s search, best first, P ≤ max(``keep``,
    ``beam_width``) of them kept per step; shared with the benchmark's ``reward_beam`` row (what
    the reward model itself would rank: the lists GoalRank's reference policy is built to prefer)."""
    size, n_candidates = batch.candidates.shape
    width = min(max(top, list_len), n_candidates)
    keep = max(beam_width, keep)
    best = single_item_rewards(evaluator, batch).topk(width, dim=1).indices  # (B, M), best first
    # The one-item prefixes are the singles just scored: the search starts from the best of them
    # rather than scoring those M lists a second time.
    beams = best[:, : min(keep, width), None]  # (B, P, t)
    for step in range(1, list_len):
        prefixes = beams.shape[1]
        used = (beams[:, :, None, :] == best[:, None, :, None]).any(dim=3)  # (B, P, M)
        # A beam holds `step` of the M top candidates, so each has exactly M − step extensions:
        # only those are scored (a stable sort puts the unused first, in their order in `best`).
        unused = used.to(torch.uint8).argsort(dim=2, stable=True)[:, :, : width - step]  # (B, P, M−t)
        nexts = best[:, None].expand(-1, prefixes, -1).gather(2, unused)  # (B, P, M−t)
        extended = torch.cat([beams[:, :, None].expand(-1, -1, width - step, -1), nexts[..., None]],
                             dim=3)  # (B, P, M−t, t+1)
        flat = extended.flatten(1, 2)  # (B, P*(M−t), t+1)
        rewards = evaluator.list_reward(batch, flat).float()
        chosen = rewards.topk(min(keep, flat.shape[1]), dim=1).indices  # (B, P')
        beams = flat.gather(1, chosen[..., None].expand(-1, -1, step + 1))
    return beams


def single_item_rewards(evaluator: ListEvaluator, batch: RankingBatch) -> torch.Tensor:
    """(B, N) the reward of each candidate shown alone: the beam search's first step."""
    size, n_candidates = batch.candidates.shape
    singles = torch.arange(n_candidates, device=batch.candidates.device).view(1, -1, 1).expand(size, -1, -1)
    return evaluator.list_reward(batch, singles)  # (B, N, 1) one-item lists → (B, N)


@dataclass
class PopularityPolicy:
    """The most popular candidates in training (positives), then Plackett–Luce samples over
    log(1 + positives) / ``temperature``: a non-personalised heuristic of App. C."""

    temperature: float = 1.0
    name: ClassVar[str] = "popularity"

    def __post_init__(self) -> None:
        check_temperature("popularity", self.temperature)

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        if ctx.popularity is None:
            raise ConfigError("group.mix.popularity: needs the items' training popularity, which this caller "
                              "did not provide; drop the policy from the mix")
        scores = torch.log1p(ctx.popularity[ctx.batch.candidates].float())  # (B, N)
        return top_then_samples(ctx, scores, num_lists, self.temperature)


@dataclass
class LoggedPolicy:
    """The logged list, then random orders of it: what the logging policy showed, in the group so
    that the reference policy weighs it against the alternatives by reward (training only)."""

    name: ClassVar[str] = "logged"

    @torch.no_grad()
    def propose(self, ctx: GroupContext, num_lists: int) -> torch.Tensor:
        logged = ctx.batch.exposed  # (B, L)
        if num_lists == 1:
            return logged[:, None]
        return torch.cat([logged[:, None], shuffles(ctx, logged, num_lists - 1)], dim=1)
