from unittest.mock import patch

import pytest
import torch

from builders import N_ITEMS, N_USERS, all_lists, make_batch
from goalrank.config import from_dict
from goalrank.data.storage import RankingBatch
from goalrank.errors import ConfigError
from goalrank.models.base import scores_from_lists
from goalrank.models.blocks import count_parameters
from goalrank.models.goalrank import Encoding, GeneratorConfig, GoalRankGenerator, prefix_tree


def make_generator(list_len: int, seed: int = 0, **sizes: float | bool) -> GoalRankGenerator:
    torch.manual_seed(seed)
    config = GeneratorConfig(n_items=N_ITEMS, n_users=N_USERS, d_model=16, n_heads=2, ffn_mult=2, list_len=list_len,
                             **sizes)
    return GoalRankGenerator(config).eval()


def test_probabilities_of_all_ordered_lists_sum_to_one():
    generator = make_generator(list_len=3)
    batch = make_batch(3, n_candidates=5, list_len=3)
    encoding = generator.encode(batch)
    lists = all_lists(5, 3, 3)
    assert lists.shape == (3, 60, 3)
    log_probs = generator.log_prob(encoding, lists)
    assert torch.isfinite(log_probs).all()
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(3))
    prefixes = generator.log_prob(encoding, all_lists(5, 2, 3))  # T < L: marginals of 2-item prefixes
    torch.testing.assert_close(prefixes.exp().sum(dim=1), torch.ones(3))


def test_sampled_lists_have_teacher_forced_log_probs_and_never_repeat_items():
    generator = make_generator(list_len=4)
    encoding = generator.encode(make_batch(2, n_candidates=6, list_len=4))
    rng = torch.Generator().manual_seed(0)
    for temperature in (1.0, 5.0):
        lists, sampled = generator.generate(encoding, 300, temperature=temperature, rng=rng)
        assert lists.shape == (2, 300, 4)
        assert all(len(set(row)) == 4 for row in lists.reshape(-1, 4).tolist())
        if temperature == 1.0:
            torch.testing.assert_close(sampled, generator.log_prob(encoding, lists), atol=1e-5, rtol=0)


def test_full_permutations_never_repeat_items():
    generator = make_generator(list_len=5)
    encoding = generator.encode(make_batch(2, n_candidates=5, list_len=5))
    lists = generator.decode(encoding, 200, temperature=5.0, rng=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lists.sort(dim=-1).values, torch.arange(5).expand(2, 200, -1))


def test_sample_frequencies_match_list_probabilities():
    generator = make_generator(list_len=2)
    encoding = generator.encode(make_batch(1, n_candidates=4, list_len=2))
    lists = generator.decode(encoding, 20000, rng=torch.Generator().manual_seed(2))[0]
    codes = lists[:, 0] * 4 + lists[:, 1]
    frequencies = torch.bincount(codes, minlength=16).float() / codes.numel()
    enumerated = all_lists(4, 2, 1)
    probabilities = generator.log_prob(encoding, enumerated)[0].exp()
    torch.testing.assert_close(frequencies[enumerated[0, :, 0] * 4 + enumerated[0, :, 1]], probabilities,
                               atol=0.015, rtol=0)


def test_temperature_flattens_the_first_step_distribution():
    generator = make_generator(list_len=2)
    encoding = generator.encode(make_batch(1, n_candidates=4, list_len=2))
    lists = generator.decode(encoding, 20000, temperature=3.0, rng=torch.Generator().manual_seed(3))[0]
    frequencies = torch.bincount(lists[:, 0], minlength=4).float() / lists.shape[0]
    expected = (generator.first_step_logits(encoding)[0] / 3.0).softmax(dim=0)
    torch.testing.assert_close(frequencies, expected, atol=0.015, rtol=0)


def test_sampling_is_reproducible_from_the_rng_seed():
    generator = make_generator(list_len=3)
    encoding = generator.encode(make_batch(4, n_candidates=8, list_len=3))

    def sample(seed: int) -> torch.Tensor:
        return generator.decode(encoding, 16, rng=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(7), sample(7))
    assert not torch.equal(sample(7), sample(8))


def test_greedy_decode_equals_stepwise_argmax_without_cache():
    generator = make_generator(list_len=4, decoder_layers=3)
    batch = make_batch(3, n_candidates=7, list_len=4)
    encoding = generator.encode(batch)
    greedy = generator.decode(encoding, 1, greedy=True)
    expected = torch.zeros(3, 1, 0, dtype=torch.long)
    for step in range(4):
        # step_logits' last input item is never fed, so a placeholder exposes this step's logits.
        padded = torch.cat([expected, torch.zeros(3, 1, 1, dtype=torch.long)], dim=2)
        logits = generator.step_logits(encoding, padded)[:, :, step].clone()  # (B, 1, N)
        logits.scatter_(-1, expected, float("-inf"))
        expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=2)
    assert torch.equal(greedy, expected)
    output = generator.rank(batch)
    assert torch.equal(output.lists, greedy[:, 0])
    listed = output.scores.gather(1, output.lists)
    assert (listed[:, :-1] > listed[:, 1:]).all()
    unlisted = output.scores.scatter(1, output.lists, -1.0)
    assert (listed[:, -1] > unlisted.max(dim=1).values).all()
    # rank reads the decode's first-step logits: bit for bit those of the separate first-step pass
    assert torch.equal(output.scores, scores_from_lists(output.lists, generator.first_step_logits(encoding)))


def test_step_logits_do_not_see_future_items():
    generator = make_generator(list_len=4)
    encoding = generator.encode(make_batch(2, n_candidates=6, list_len=4))
    lists = torch.tensor([[[0, 1, 2, 3]], [[5, 4, 3, 2]]])
    changed = lists.clone()
    changed[..., 2:] = torch.tensor([[[4, 5]], [[0, 1]]])
    before, after = generator.step_logits(encoding, lists), generator.step_logits(encoding, changed)
    torch.testing.assert_close(before[:, :, :3], after[:, :, :3])
    assert not torch.allclose(before[:, :, 3], after[:, :, 3])


def test_prefix_is_kept_and_continued_consistently():
    generator = make_generator(list_len=4)
    encoding = generator.encode(make_batch(2, n_candidates=7, list_len=4))
    prefix = torch.tensor([[[3, 1], [0, 6], [3, 1]], [[2, 5], [5, 2], [4, 0]]])
    lists, continuation = generator.generate(encoding, 3, prefix=prefix, rng=torch.Generator().manual_seed(4))
    assert torch.equal(lists[..., :2], prefix)
    assert all(len(set(row)) == 4 for row in lists.reshape(-1, 4).tolist())
    expected = generator.log_prob(encoding, lists) - generator.log_prob(encoding, prefix)
    torch.testing.assert_close(continuation, expected, atol=1e-5, rtol=0)
    greedy = generator.decode(encoding, 1, greedy=True)
    resumed = generator.decode(encoding, 1, greedy=True, prefix=greedy[..., :2])
    assert torch.equal(resumed, greedy)
    assert torch.equal(generator.decode(encoding, 1, prefix=greedy), greedy)  # t0 = L: nothing to add


def test_encoder_is_permutation_equivariant_over_candidates():
    generator = make_generator(list_len=3)
    batch = make_batch(2, n_candidates=6, list_len=3)
    permutation = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = RankingBatch(**{**vars(batch), "candidates": batch.candidates[:, permutation]})
    encoding, permuted_encoding = generator.encode(batch), generator.encode(permuted)
    torch.testing.assert_close(permuted_encoding.memory, encoding.memory[:, permutation])
    torch.testing.assert_close(generator.first_step_logits(permuted_encoding),
                               generator.first_step_logits(encoding)[:, permutation])
    lists = torch.tensor([[[0, 1, 2], [5, 3, 4]]]).expand(2, -1, -1)
    inverse = permutation.argsort()
    torch.testing.assert_close(generator.log_prob(permuted_encoding, inverse[lists]),
                               generator.log_prob(encoding, lists))


def test_new_user_gets_finite_outputs_and_every_parameter_gets_a_gradient():
    generator = make_generator(list_len=3).train()
    batch = make_batch(2, n_candidates=5, list_len=3)
    assert batch.history[0].eq(0).all()
    encoding = generator.encode(batch)
    log_probs = generator.log_prob(encoding, batch.exposed[:, None])
    assert torch.isfinite(log_probs).all() and torch.isfinite(generator.first_step_logits(encoding)).all()
    log_probs.sum().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def hand_count(n_items: int, n_users: int, d: int, f: int, history: int, encoder: int, decoder: int,
               length: int) -> int:
    """Parameters of the architecture counted by hand, layer by layer."""
    attention = 2 * d + 4 * d * d + 4 * d  # LayerNorm, query, key+value, output
    ffn = 2 * d + (d * f * d + f * d) + (f * d * d + d)
    encoder_layer, decoder_layer = attention + ffn, 2 * attention + ffn
    user = 2 * d + d + history * encoder_layer + 2 * d + d  # labels, context token, layers, norm, pool
    user += (n_users + 1) * d  # user-id embedding, with its cold-start row
    cross = (3 * d * d + d) + (d * d + d)  # FeatureCross MLP
    candidates = cross + encoder * encoder_layer + 2 * d
    # start token, positions, decoder layers, final norm, pointer head
    upper = d + length * d + decoder * decoder_layer + 2 * d + 2 * (d * d + d)
    return (n_items + 1) * d + user + candidates + upper


def test_parameter_count_matches_hand_count_and_reaches_100m():
    def size(**fields: int) -> int:
        with torch.device("meta"):  # sized, never allocated
            return count_parameters(GoalRankGenerator(GeneratorConfig(n_items=1000, n_users=500, **fields)))

    base = size()
    assert base == hand_count(1000, 500, d=128, f=4, history=1, encoder=2, decoder=2, length=6)
    assert 0.5e6 < base < 2e6
    assert size(d_model=256) > base and size(encoder_layers=4) > base and size(decoder_layers=4) > base
    large = size(d_model=1024, n_heads=16, encoder_layers=3, decoder_layers=3)
    assert large == hand_count(1000, 500, d=1024, f=4, history=1, encoder=3, decoder=3, length=6)
    assert 90e6 < large < 110e6


def test_config_is_validated_and_built_from_overrides():
    config = from_dict(GeneratorConfig, {"n_items": "30", "n_users": "10", "d_model": "32", "list_len": "4"})
    assert (config.n_items, config.d_model, config.list_len) == (30, 32, 4)
    with pytest.raises(ConfigError, match="model.n_heads"):
        GeneratorConfig(n_items=30, d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="model.decoder_layers"):
        GeneratorConfig(n_items=30, n_users=10, decoder_layers=0)
    with pytest.raises(ConfigError, match="model.n_users"):  # the default user-id embedding needs the users
        GeneratorConfig(n_items=30)
    assert GeneratorConfig(n_items=30, user_embedding=False).n_users == 0
    generator = make_generator(list_len=3)
    with pytest.raises(ConfigError, match="temperature"):
        generator.decode(generator.encode(make_batch(1, 5, 3)), 2, temperature=0.0)


def test_next_log_probs_equal_log_prob_differences():
    generator = make_generator(list_len=3)
    batch = make_batch(2, n_candidates=5, list_len=3)
    encoding = generator.encode(batch)
    prefixes = torch.tensor([[[0, 3], [2, 1]], [[4, 0], [1, 2]]])  # (B, 2, 2)
    next_log_probs = generator.next_log_probs(encoding, prefixes)  # (B, 2, N)
    assert torch.allclose(next_log_probs.exp().sum(dim=2), torch.ones(2, 2), atol=1e-5)
    for item in range(5):
        lists = torch.cat([prefixes, torch.full((2, 2, 1), item)], dim=2)
        unused = ~(prefixes == item).any(dim=2)
        expected = generator.log_prob(encoding, lists) - generator.log_prob(encoding, prefixes)
        torch.testing.assert_close(next_log_probs[..., item][unused], expected[unused], atol=1e-5, rtol=1e-5)
        assert (next_log_probs[..., item][~unused].exp() < 1e-6).all()


def test_user_embedding_personalises_the_encoding_and_unknown_users_share_the_cold_start_row():
    import dataclasses

    from goalrank.models.blocks import UNKNOWN_USER

    generator = make_generator(list_len=3)
    batch = make_batch(2, n_candidates=5, list_len=3, new_user=False)
    same_history = dataclasses.replace(batch, history=batch.history[:1].expand(2, -1),
                                       history_labels=batch.history_labels[:1].expand(2, -1),
                                       candidates=batch.candidates[:1].expand(2, -1), users=torch.tensor([1, 2]))
    logits = generator.first_step_logits(generator.encode(same_history))
    assert not torch.allclose(logits[0], logits[1])  # same history and candidates, other user
    unknown = dataclasses.replace(same_history, users=torch.full((2,), UNKNOWN_USER))
    cold = generator.first_step_logits(generator.encode(unknown))
    with torch.no_grad():
        generator.user_ids.table.weight[0] += 1.0  # the cold-start row
    assert not torch.allclose(generator.first_step_logits(generator.encode(unknown)), cold)
    torch.testing.assert_close(generator.first_step_logits(generator.encode(same_history)), logits)
    assert generator.config.user_embedding  # on by default (the tuning study's pick)
    assert make_generator(list_len=3, user_embedding=False).user_ids is None


def test_prefix_tree_numbers_each_requests_distinct_prefixes():
    lists = torch.tensor([[[0, 1, 2], [0, 1, 3], [4, 1, 2]],
                          [[2, 3, 4], [3, 2, 4], [2, 4, 3]]])  # (B=2, K=3, T=3), N=5
    tree = prefix_tree(lists, n_candidates=5)
    assert [slot.tolist() for slot in tree.slots] == [
        [[0, 0, 0], [0, 0, 0]],  # the empty prefix: one per request
        [[0, 0, 1], [0, 1, 0]],  # (0), (4) | (2), (3), each request's in item order
        [[0, 0, 1], [0, 2, 1]],  # (0,1), (4,1) | (2,3), (2,4), (3,2): by parent, then item
    ]
    assert [rep.shape[1] for rep in tree.representatives] == [1, 2, 3]  # the most any request has
    assert tree.share == pytest.approx((1 + 2 + 3) / 9)
    for t, (slot, representative) in enumerate(zip(tree.slots, tree.representatives, strict=True)):
        held = lists.gather(1, representative.gather(1, slot)[..., None].expand(-1, -1, 3))[..., :t]
        assert torch.equal(held, lists[..., :t])  # each list's slot is represented by a list with its prefix


@pytest.mark.parametrize("length", [2, 4])
def test_teacher_forcing_as_a_prefix_tree_equals_the_flat_pass_with_its_gradients(length: int) -> None:
    generator = make_generator(list_len=4).train()
    batch = make_batch(3, n_candidates=7, list_len=4)
    lists = generator.decode(generator.encode(batch), 40, temperature=0.5, rng=torch.Generator().manual_seed(3))
    lists = lists[..., :length]  # T < L too
    tree = prefix_tree(lists, n_candidates=7)
    assert tree.share < 0.6  # sampled at a low temperature, the lists share most prefixes
    weights = torch.rand(lists.shape, generator=torch.Generator().manual_seed(4))
    results = []
    def tree_pass(encoding: Encoding, lists: torch.Tensor) -> torch.Tensor:
        return generator.tree_step_log_probs(encoding, lists, tree)

    for teacher_force in (generator.flat_step_log_probs, tree_pass):
        generator.zero_grad()
        torch.manual_seed(0)  # the cold-start draw of the user-id embedding, the same for both
        step_log_probs = teacher_force(generator.encode(batch), lists)
        (step_log_probs * weights).sum().backward()
        grads = [p.grad.clone() for p in generator.parameters() if p.grad is not None]
        results.append((step_log_probs.detach(), grads))
    (flat, flat_grads), (tree_values, tree_grads) = results
    assert flat.shape == (3, 40, length)
    torch.testing.assert_close(tree_values, flat, atol=1e-5, rtol=1e-5)
    assert len(tree_grads) == len(flat_grads)
    for tree_grad, flat_grad in zip(tree_grads, flat_grads, strict=True):
        torch.testing.assert_close(tree_grad, flat_grad, atol=1e-5, rtol=1e-4)


def test_step_log_probs_takes_the_tree_only_when_it_is_exact_and_pays() -> None:
    def path(generator: GoalRankGenerator, lists: torch.Tensor) -> str:
        encoding = generator.encode(make_batch(3, n_candidates=5, list_len=3))
        with (patch.object(generator, "tree_step_log_probs", wraps=generator.tree_step_log_probs) as tree,
              patch("goalrank.models.goalrank.prefix_tree", wraps=prefix_tree) as built):
            generator.step_log_probs(encoding, lists)
        assert not (built.called and lists.shape[1] == 1)  # one list per request: no tree is built
        return "tree" if tree.called else "flat"

    shared = all_lists(5, 3, 3)  # 60 lists: 1 + 5 + 20 distinct prefixes of 180 steps
    distinct = torch.tensor([[0, 1, 2], [1, 2, 3], [4, 3, 0]])[:, None]  # one list per request
    assert path(make_generator(list_len=3), shared) == "tree"
    assert path(make_generator(list_len=3), distinct) == "flat"  # nothing shared: one pass is cheaper
    assert path(make_generator(list_len=3, dropout=0.1).train(), shared) == "flat"  # a shared prefix, a shared mask
    assert path(make_generator(list_len=3, dropout=0.1), shared) == "tree"  # evaluating: no dropout
