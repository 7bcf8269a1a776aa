"""The seven auxiliary policies against exact references on toy Plackett–Luce / pairwise models."""

from __future__ import annotations

import pytest
import torch
from toys import assert_valid_lists, make_context

from builders import PairwiseReward, all_lists
from goalrank.errors import ConfigError
from goalrank.groups import (
    AutoregressivePolicy,
    DiversityPolicy,
    GumbelPolicy,
    MarkovPolicy,
    RandomPolicy,
    SubstitutionPolicy,
    TreePolicy,
    random_lists,
)

ALL_POLICIES = [
    AutoregressivePolicy(0.7),
    TreePolicy(branching=2, depth=2),
    GumbelPolicy(0.5),
    MarkovPolicy(chunk_size=13),
    RandomPolicy(),
    SubstitutionPolicy(),
    DiversityPolicy(),
]
IDS = [policy.name for policy in ALL_POLICIES]


def list_frequencies(lists: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Share of the rows of ``lists`` (S, L) equal to each row of ``reference`` (M, L)."""
    return (lists[:, None] == reference[None]).all(dim=2).float().mean(dim=0)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=IDS)
@pytest.mark.parametrize(("size", "n_cand", "list_len", "num_lists"), [(1, 6, 3, 5), (4, 12, 5, 7), (2, 5, 5, 3)])
def test_valid_and_reproducible(policy, size, n_cand, list_len, num_lists):
    existing = random_lists(make_context(size, n_cand, list_len, seed=9), 2)
    lists = policy.propose(make_context(size, n_cand, list_len, seed=1, existing=existing), num_lists)
    assert_valid_lists(lists, size, num_lists, list_len, n_cand)
    again = policy.propose(make_context(size, n_cand, list_len, seed=1, existing=existing), num_lists)
    assert torch.equal(lists, again)


@pytest.mark.parametrize("policy", [p for p in ALL_POLICIES if p.name != "tree"], ids=[i for i in IDS if i != "tree"])
def test_seed_changes_stochastic_policies(policy):
    existing = random_lists(make_context(2, 12, 4, seed=9), 3)
    first = policy.propose(make_context(2, 12, 4, seed=1, existing=existing), 10)
    context = make_context(2, 12, 4, seed=1, existing=existing)
    context.rng.manual_seed(2)
    assert not torch.equal(first, policy.propose(context, 10))


def test_autoregressive_matches_tempered_plackett_luce():
    ctx = make_context(1, 4, 2, seed=3)
    temperature = 0.5
    lists = AutoregressivePolicy(temperature).propose(ctx, 20000)[0]  # (S, 2)
    candidates = all_lists(4, 2)
    exact = ctx.generator.log_prob(ctx.encoding / temperature, candidates[None]).exp()[0]  # PL at τ
    assert torch.allclose(exact.sum(), torch.tensor(1.0), atol=1e-5)
    assert (list_frequencies(lists, candidates) - exact).abs().max() < 0.02


def test_tree_branches_over_top_items_and_completes_greedily():
    ctx = make_context(2, 7, 4, seed=4)
    lists = TreePolicy(branching=2, depth=2).propose(ctx, 4)
    for b in range(2):
        s = ctx.encoding[b].argsort(descending=True).tolist()  # positions by logit: PL greedy order
        expected = {
            (s[0], s[1], s[2], s[3]), (s[0], s[2], s[1], s[3]),
            (s[1], s[0], s[2], s[3]), (s[1], s[2], s[0], s[3]),
        }
        assert {tuple(row) for row in lists[b].tolist()} == expected


def test_tree_trims_to_most_likely_leaves_and_pads_by_reusing_them():
    ctx = make_context(2, 8, 5, seed=5)
    full = TreePolicy(branching=3, depth=2).propose(ctx, 9)  # (B, 9, L): all 3^2 leaves
    prefixes = full[:, :, :2]
    leaf_log_probs = ctx.generator.log_prob(ctx.encoding, prefixes)  # (B, 9)
    trimmed = TreePolicy(branching=3, depth=2).propose(ctx, 4)
    for b in range(2):
        best = leaf_log_probs[b].topk(4).indices
        assert {tuple(r) for r in trimmed[b].tolist()} == {tuple(full[b, i].tolist()) for i in best}
        # every first item is shared by exactly `branching` leaves
        assert sorted(torch.unique(prefixes[b, :, 0], return_counts=True)[1].tolist()) == [3, 3, 3]
    padded = TreePolicy(branching=2, depth=2).propose(ctx, 7)
    assert_valid_lists(padded, 2, 7, 5, 8)
    tree_prefixes = {tuple(r) for r in padded[0, :4, :2].tolist()}
    assert len(tree_prefixes) == 4
    assert {tuple(r) for r in padded[0, 4:, :2].tolist()} <= tree_prefixes


def test_tree_with_depth_at_least_list_len_returns_leaves():
    ctx = make_context(1, 5, 2, seed=6)
    lists = TreePolicy(branching=5, depth=3).propose(ctx, 20)
    assert {tuple(r) for r in lists[0].tolist()} == {tuple(r) for r in all_lists(5, 2).tolist()}


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_gumbel_first_item_follows_tempered_softmax(temperature):
    ctx = make_context(2, 6, 3, seed=7)
    lists = GumbelPolicy(temperature).propose(ctx, 20000)
    for b in range(2):
        frequency = torch.bincount(lists[b, :, 0], minlength=6).float() / 20000
        expected = torch.softmax(ctx.encoding[b] / temperature, dim=0)
        assert (frequency - expected).abs().max() < 0.02


def test_markov_distribution_matches_exact_chain():
    ctx = make_context(2, 4, 3, seed=8)
    scores = ctx.evaluator.list_reward(ctx.batch, all_lists(4, 2).expand(2, -1, -1))  # (B, 12)
    lists = MarkovPolicy(temperature=2.0, chunk_size=5).propose(ctx, 20000)
    for b in range(2):
        pair = {tuple(p): s / 2.0 for p, s in zip(all_lists(4, 2).tolist(), scores[b])}
        pair_norm = torch.logsumexp(torch.stack(list(pair.values())), 0)
        exact = []
        for i, j, k in all_lists(4, 3).tolist():
            rest = [m for m in range(4) if m not in (i, j)]
            step = pair[(j, k)] - torch.logsumexp(torch.stack([pair[(j, m)] for m in rest]), 0)
            exact.append((pair[(i, j)] - pair_norm + step).exp())
        frequency = list_frequencies(lists[b], all_lists(4, 3))
        assert 0.5 * (frequency - torch.stack(exact)).abs().sum() < 0.04


def test_markov_follows_dominant_pairs():
    evaluator = PairwiseReward(40, seed=0)
    evaluator.value.zero_()
    evaluator.interaction.zero_()
    ctx = make_context(1, 9, 4, seed=2, evaluator=evaluator)
    chain_items = ctx.batch.candidates[0, [5, 2, 7]]  # a dominant chain of positions 5 → 2 → 7
    evaluator.interaction[chain_items[0], chain_items[1]] = 10.0  # the best pair overall
    evaluator.interaction[chain_items[1], chain_items[2]] = 6.0  # the best continuation of 2
    lists = MarkovPolicy().propose(ctx, 500)
    assert (lists[0, :, :3] == torch.tensor([5, 2, 7])).all(dim=1).float().mean() > 0.9


def test_markov_chunking_does_not_change_the_result():
    big = MarkovPolicy(chunk_size=10_000).propose(make_context(3, 7, 4, seed=3), 6)
    small = MarkovPolicy(chunk_size=4).propose(make_context(3, 7, 4, seed=3), 6)
    assert torch.equal(big, small)


def test_markov_needs_two_positions():
    with pytest.raises(ConfigError, match="list_len"):
        MarkovPolicy().propose(make_context(1, 5, 1), 2)


def test_random_first_item_is_uniform():
    lists = RandomPolicy().propose(make_context(1, 5, 2, seed=1), 20000)
    frequency = torch.bincount(lists[0, :, 0], minlength=5).float() / 20000
    assert (frequency - 0.2).abs().max() < 0.02


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) number of positions where lists a (n, L) and b (m, L) differ."""
    return (a[:, None] != b[None]).sum(dim=2)


@pytest.mark.parametrize("max_swaps", [1, 2])
def test_substitution_changes_one_to_max_swaps_positions(max_swaps):
    existing = random_lists(make_context(3, 10, 5, seed=11), 3)
    ctx = make_context(3, 10, 5, seed=12, existing=existing)
    lists = SubstitutionPolicy(max_swaps).propose(ctx, 200)
    swaps_seen = set()
    for b in range(3):
        distance, nearest = hamming(lists[b], existing[b]).min(dim=1)  # (n,)
        assert bool(((distance >= 1) & (distance <= max_swaps)).all())
        swaps_seen |= set(distance.tolist())
        source = existing[b, nearest]  # (n, L)
        in_source = (lists[b][:, :, None] == source[:, None, :]).any(dim=2)  # (n, L)
        assert not bool((in_source & (lists[b] != source)).any())  # swapped-in items are new
    assert swaps_seen == set(range(1, max_swaps + 1))


def test_substitution_without_existing_edits_the_greedy_list():
    ctx = make_context(2, 8, 3, seed=13)
    greedy = ctx.encoding.topk(3, dim=1).indices  # PL greedy list
    lists = SubstitutionPolicy().propose(ctx, 50)
    for b in range(2):
        distance = (lists[b] != greedy[b]).sum(dim=1)
        assert bool(((distance >= 1) & (distance <= 2)).all())


def test_substitution_with_no_free_candidate_returns_sources():
    existing = random_lists(make_context(2, 4, 4, seed=1), 2)
    lists = SubstitutionPolicy().propose(make_context(2, 4, 4, existing=existing), 5)
    assert bool((hamming(lists[0], existing[0]).min(dim=1).values == 0).all())


def test_diversity_avoids_items_of_existing_lists():
    existing = torch.tensor([[[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]])  # (1, 2, 5)
    ctx = make_context(1, 10, 5, existing=existing)
    lists = DiversityPolicy().propose(ctx, 2)
    assert set(lists[0, 0].tolist()) == {5, 6, 7, 8, 9}
    assert set(lists[0, 1].tolist()) == {5, 6, 7, 8, 9}  # still in fewer lists (1) than 0..4 (2)
    assert lists[0, 1, 0] != lists[0, 0, 0]  # then the least used at the position wins


def test_diversity_overlaps_existing_less_than_random():
    existing = random_lists(make_context(8, 20, 5, seed=21), 4)
    ctx = make_context(8, 20, 5, seed=22, existing=existing)

    def mean_overlap(lists: torch.Tensor) -> float:
        shared = (lists[:, :, None, :, None] == existing[:, None, :, None, :]).any(dim=4).sum(dim=3)
        return shared.float().mean().item()  # items shared with an existing list, on average

    diverse = mean_overlap(DiversityPolicy().propose(ctx, 4))
    random = mean_overlap(RandomPolicy().propose(ctx, 200))
    assert diverse < random - 0.5


def test_markov_restricted_to_top_candidates_uses_only_them():
    ctx = make_context(3, 20, 4, seed=5)
    top = ctx.generator.first_step_logits(ctx.encoding).topk(6, dim=1).indices  # (B, 6)
    lists = MarkovPolicy(top=6).propose(ctx, 50)
    assert_valid_lists(lists, 3, 50, 4, 20)
    for b in range(3):
        assert set(lists[b].flatten().tolist()) <= set(top[b].tolist())


def test_tree_branches_follow_next_item_log_probs():
    ctx = make_context(2, 8, 3, seed=4)
    prefixes = torch.tensor([[[1], [4]], [[0], [7]]])  # (B, 2, 1)
    next_log_probs = ctx.generator.next_log_probs(ctx.encoding, prefixes)  # (B, 2, N)
    extended = torch.cat([prefixes[:, :, None].expand(-1, -1, 8, -1),
                          torch.arange(8).view(1, 1, 8, 1).expand(2, 2, -1, -1)], dim=3)  # (B, 2, 8, 2)
    full = ctx.generator.log_prob(ctx.encoding, extended.flatten(1, 2)).view(2, 2, 8)
    prefix_lp = ctx.generator.log_prob(ctx.encoding, prefixes)[..., None]
    valid = ~torch.zeros(2, 2, 8, dtype=torch.bool).scatter(2, prefixes, True)
    torch.testing.assert_close(next_log_probs[valid], (full - prefix_lp)[valid])
