"""The frozen auxiliary policies against exact references on the toy pairwise reward."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
from toys import assert_valid_lists, make_context

from builders import all_lists, make_batch
from goalrank.errors import ConfigError
from goalrank.groups import (
    GroupConfig,
    LoggedPolicy,
    PopularityPolicy,
    RewardBeamPolicy,
    ScorerPolicy,
    ScorerShufflePolicy,
    build_group,
    duplicate_mask,
)
from goalrank.models.base import RequestMemo

NUM_ITEMS = 40


class FixedScorer:
    """An item-wise scorer whose logit is a fixed value per item id."""

    def __init__(self, seed: int = 0) -> None:
        self.values = torch.randn(NUM_ITEMS + 1, generator=torch.Generator().manual_seed(seed))

    def score(self, batch):
        return self.values[batch.candidates]


def auxiliary_context(size=3, n_cand=10, list_len=4, seed=0):
    logged = make_batch(size, n_cand, list_len, n_items=NUM_ITEMS, history_len=2, seed=seed)  # real exposed lists
    ctx = make_context(size, n_cand, list_len, seed=seed, num_items=NUM_ITEMS)
    batch = dataclasses.replace(ctx.batch, exposed=logged.exposed)
    popularity = torch.arange(NUM_ITEMS + 1).float() % 7
    return dataclasses.replace(ctx, batch=batch, scorer=FixedScorer(seed), popularity=popularity)


POLICIES = [ScorerPolicy(0.5), ScorerShufflePolicy(), RewardBeamPolicy(beam_width=3, top=6), PopularityPolicy(),
            LoggedPolicy()]


@pytest.mark.parametrize("policy", POLICIES, ids=[policy.name for policy in POLICIES])
@pytest.mark.parametrize("num_lists", [1, 5])
def test_valid_and_reproducible(policy, num_lists):
    lists = policy.propose(auxiliary_context(seed=1), num_lists)
    assert_valid_lists(lists, 3, num_lists, 4, 10)
    assert torch.equal(lists, policy.propose(auxiliary_context(seed=1), num_lists))


def test_scorer_and_popularity_lead_with_their_top_list_then_sample_near_it():
    ctx = auxiliary_context()
    scores = ctx.scorer.score(ctx.batch)
    lists = ScorerPolicy(temperature=0.05).propose(ctx, 6)
    assert torch.equal(lists[:, 0], scores.topk(4, dim=1).indices)
    assert (lists[:, 1:].sort(dim=2).values == lists[:, :1].sort(dim=2).values).float().mean() > 0.8  # cold: near top
    popular = PopularityPolicy().propose(ctx, 1)[:, 0]
    popularity = ctx.popularity[ctx.batch.candidates]
    assert torch.equal(popularity.gather(1, popular), popularity.topk(4, dim=1).values)


def test_shuffles_keep_the_items_of_their_base_list():
    ctx = auxiliary_context()
    top = ctx.scorer.score(ctx.batch).topk(4, dim=1).indices
    shuffled = ScorerShufflePolicy().propose(ctx, 8)
    assert torch.equal(shuffled.sort(dim=2).values, top.sort(dim=1).values[:, None].expand(-1, 8, -1))
    assert (shuffled != top[:, None]).any()
    logged = LoggedPolicy().propose(ctx, 8)
    assert torch.equal(logged[:, 0], ctx.batch.exposed)
    assert torch.equal(logged.sort(dim=2).values, ctx.batch.exposed.sort(dim=1).values[:, None].expand(-1, 8, -1))


def test_reward_beam_is_exact_when_the_beam_covers_every_prefix_and_greedy_at_width_one():
    ctx = auxiliary_context(size=2, n_cand=5, list_len=3)
    everything = all_lists(n_candidates=5, list_len=3, size=2)  # (2, 60, 3)
    rewards = ctx.evaluator.list_reward(ctx.batch, everything)
    beam = RewardBeamPolicy(beam_width=20, top=5).propose(ctx, 1)[:, 0]  # 20 = every prefix of length 2
    torch.testing.assert_close(ctx.evaluator.list_reward(ctx.batch, beam[:, None])[:, 0], rewards.max(dim=1).values)
    greedy = RewardBeamPolicy(beam_width=1, top=5).propose(ctx, 1)[:, 0]
    for request in range(2):
        prefix: list[int] = []
        for _ in range(3):
            options = [c for c in range(5) if c not in prefix]
            scored = ctx.evaluator.list_reward(ctx.batch.select(slice(request, request + 1)),
                                               torch.tensor([[prefix + [c] for c in options]]))
            prefix.append(options[int(scored.argmax())])
        assert greedy[request].tolist() == prefix


def test_reward_beam_searches_only_the_best_single_items():
    ctx = auxiliary_context()
    singles = ctx.evaluator.list_reward(ctx.batch, torch.arange(10).view(1, -1, 1).expand(3, -1, -1))
    top = singles.topk(5, dim=1).indices
    lists = RewardBeamPolicy(beam_width=4, top=5).propose(ctx, 4)
    assert (lists[..., None] == top[:, None, None]).any(dim=3).all()


class CountingEvaluator:
    """An evaluator that counts the requests it is asked to score lists for, and the lists of each length."""

    def __init__(self, evaluator) -> None:
        self.evaluator, self.requests, self.lists = evaluator, 0, collections.Counter()

    def list_reward(self, batch, lists):
        self.requests += len(batch)
        self.lists[lists.shape[2]] += lists.shape[1]
        return self.evaluator.list_reward(batch, lists)


def test_reward_beam_scores_each_prefix_length_once_and_the_one_item_lists_only_as_singles():
    ctx = auxiliary_context(n_cand=10, list_len=4)
    counting = CountingEvaluator(ctx.evaluator)
    RewardBeamPolicy(beam_width=2, top=6).propose(dataclasses.replace(ctx, evaluator=counting), 3)
    # N singles; then each of the 3 kept prefixes (max(width, n)) extended by its 6 − t unused top items
    assert counting.lists == {1: 10, 2: 3 * 5, 3: 3 * 4, 4: 3 * 3}


def test_reward_beam_memo_gives_the_searched_beams_and_searches_again_only_for_a_new_request():
    ctx = auxiliary_context(size=3)
    policy = RewardBeamPolicy(beam_width=3, top=6)
    searched = policy.propose(ctx, 4)
    counting = CountingEvaluator(ctx.evaluator)
    memo_ctx = dataclasses.replace(ctx, evaluator=counting, memo=RequestMemo(capacity=100))
    assert torch.equal(policy.propose(memo_ctx, 4), searched) and counting.requests > 0 and len(memo_ctx.memo) == 3
    counting.requests = 0
    assert torch.equal(policy.propose(memo_ctx, 4), searched) and counting.requests == 0  # every request known
    assert torch.equal(RewardBeamPolicy(beam_width=3, top=5).propose(memo_ctx, 4),  # other settings: other keys
                       RewardBeamPolicy(beam_width=3, top=5).propose(ctx, 4)) and counting.requests > 0
    candidates = ctx.batch.candidates.clone()
    candidates[0] = candidates[0].roll(1)  # request 0 is new: its candidates sit in other positions
    moved = dataclasses.replace(ctx, batch=dataclasses.replace(ctx.batch, candidates=candidates))
    counting.requests = 0
    fresh = policy.propose(dataclasses.replace(memo_ctx, batch=moved.batch), 4)
    assert torch.equal(fresh, policy.propose(moved, 4)) and counting.requests > 0
    assert not torch.equal(fresh[0], searched[0]) and torch.equal(fresh[1:], searched[1:])


def test_group_with_every_auxiliary_policy_is_distinct_and_scorer_needs_a_run():
    mix = {name: 1.0 for name in ("scorer", "scorer_shuffle", "reward_beam", "popularity", "logged", "random")}
    config = GroupConfig(group_size=12, mix=mix, scorer_run="some/run")
    group = build_group(auxiliary_context(), config)
    assert_valid_lists(group, 3, 12, 4, 10)
    assert not duplicate_mask(group).any()
    with pytest.raises(ConfigError, match="group.scorer_run"):
        GroupConfig(mix={"scorer": 1.0})
    with pytest.raises(ConfigError, match="scorer_run"):
        ScorerPolicy().propose(dataclasses.replace(auxiliary_context(), scorer=None), 2)
    with pytest.raises(ConfigError, match="popularity"):
        PopularityPolicy().propose(dataclasses.replace(auxiliary_context(), popularity=None), 2)
