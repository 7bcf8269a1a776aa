import math

import pytest
import torch
from torch import nn

from goalrank.errors import ConfigError
from goalrank.models.blocks import (
    AttentionBlock,
    FeedForward,
    KVCache,
    PointerHead,
    TransformerEncoder,
    UserContextEncoder,
    attention_mask,
    check_width,
    count_parameters,
    item_embedding,
    masked_log_softmax,
    sinusoidal_positions,
    user_modules,
    with_user_id,
)
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator
from goalrank.reward.model import RewardConfig, RewardModel

WIDTH, HEADS = 8, 2


def reference_attention(
    block: AttentionBlock, x: torch.Tensor, memory: torch.Tensor | None, allowed: torch.Tensor
) -> torch.Tensor:
    """Textbook multi-head attention with the block's weights; ``allowed`` (B, Tq, Tk)."""
    batch, steps, width = x.shape
    dh = width // HEADS
    hidden = block.norm(x)
    source = hidden if memory is None else memory
    q = block.query(hidden).view(batch, steps, HEADS, dh).transpose(1, 2)
    k, v = block.key_value(source).chunk(2, dim=-1)
    k = k.view(batch, -1, HEADS, dh).transpose(1, 2)
    v = v.view(batch, -1, HEADS, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, steps, width)
    return x + block.out(out)


def test_masked_log_softmax_renormalises_over_unmasked_items_and_stays_finite():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    mask = torch.tensor([[False, True, False, True], [True, True, True, True]])
    out = masked_log_softmax(logits, mask)
    expected = torch.tensor([1.0, 3.0]) - torch.logsumexp(torch.tensor([1.0, 3.0]), 0)
    torch.testing.assert_close(out[0, [0, 2]], expected)
    assert out[0, [1, 3]].exp().eq(0).all()
    torch.testing.assert_close(out[1].exp(), torch.full((4,), 0.25))  # all masked: uniform
    assert torch.isfinite(out).all()
    (out * (~mask)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, [1, 3]].eq(0).all()


def test_attention_mask_aligns_causality_to_the_last_keys_and_masks_padding():
    mask = attention_mask(2, 4, causal=True, key_padding_mask=None, device=torch.device("cpu"))
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    padding = torch.tensor([[False, False, True, False]])
    mask = attention_mask(2, 4, causal=True, key_padding_mask=padding, device=torch.device("cpu"))
    assert mask.shape == (1, 1, 2, 4)
    assert mask[0, 0].tolist() == [[True, True, False, False], [True, True, False, True]]


@pytest.mark.parametrize(("queries", "exporting"), [(3, False), (1, False), (1, True)])
def test_cross_attention_with_padding_matches_textbook_attention(queries, exporting, monkeypatch):
    """``exporting``: the written-out single-query attention that ONNX export uses."""
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: exporting)
    torch.manual_seed(0)
    block = AttentionBlock(WIDTH, HEADS)
    x, memory = torch.randn(2, queries, WIDTH), torch.randn(2, 5, WIDTH)
    padding = torch.tensor([[False, False, False, True, True], [False, True, False, False, False]])
    expected = reference_attention(block, x, memory, (~padding)[:, None, :].expand(-1, queries, -1))
    torch.testing.assert_close(block(x, memory, key_padding_mask=padding), expected)
    precomputed = block.project_kv(memory)
    torch.testing.assert_close(block(x, memory_kv=precomputed, key_padding_mask=padding), expected)


def test_causal_self_attention_matches_textbook_attention():
    torch.manual_seed(1)
    block = AttentionBlock(WIDTH, HEADS)
    x = torch.randn(2, 4, WIDTH)
    allowed = torch.ones(4, 4, dtype=torch.bool).tril().expand(2, -1, -1)
    torch.testing.assert_close(block(x, causal=True), reference_attention(block, x, None, allowed))


def test_kv_cache_steps_and_chunks_equal_one_causal_pass():
    torch.manual_seed(2)
    block = AttentionBlock(WIDTH, HEADS)
    x = torch.randn(3, 5, WIDTH)
    full = block(x, causal=True)
    cache = KVCache()
    chunks = [block(x[:, :2], causal=True, cache=cache)]  # a two-step prefix at once, then one by one
    chunks += [block(x[:, t : t + 1], causal=True, cache=cache) for t in range(2, 5)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full)
    assert cache.cached.keys.shape == (3, HEADS, 5, WIDTH // HEADS)


def test_pointer_head_is_scaled_dot_product_of_projections():
    torch.manual_seed(3)
    head = PointerHead(WIDTH)
    query, memory = torch.randn(2, 3, 4, WIDTH), torch.randn(2, 6, WIDTH)
    logits = head(query, memory)
    assert logits.shape == (2, 3, 4, 6)
    expected = torch.einsum("bkte,bne->bktn", head.query(query), head.key(memory)) / math.sqrt(WIDTH)
    torch.testing.assert_close(logits, expected)


def test_encoder_without_positions_is_permutation_equivariant():
    torch.manual_seed(4)
    encoder = TransformerEncoder(WIDTH, HEADS, layers=2, ffn_mult=2)
    x = torch.randn(2, 6, WIDTH)
    permutation = torch.randperm(6)
    torch.testing.assert_close(encoder(x[:, permutation]), encoder(x)[:, permutation])


def test_sinusoidal_positions_values():
    encoding = sinusoidal_positions(torch.tensor([0, 1]), 5)
    assert encoding.shape == (2, 5)
    torch.testing.assert_close(encoding[0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(encoding[1, :2], torch.tensor([math.sin(1.0), math.sin(1.0 / 100.0)]))


def make_user_encoder(pooling: str = "attention") -> UserContextEncoder:
    torch.manual_seed(5)
    return UserContextEncoder(item_embedding(20, WIDTH), HEADS, layers=1, ffn_mult=2, pooling=pooling).eval()


def test_user_encoder_new_user_is_finite_and_padding_is_ignored():
    encoder = make_user_encoder()
    history = torch.tensor([[0, 0, 0, 0], [0, 0, 7, 3]])
    labels = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 0]])
    context = encoder(history, labels)
    assert context.user.shape == (2, WIDTH) and context.tokens.shape == (2, 5, WIDTH)
    assert torch.isfinite(context.user).all() and torch.isfinite(context.tokens).all()
    assert context.padding_mask.tolist()[1] == [False, True, True, False, False]
    # Extra left padding and labels on padded slots change nothing: recency aligns the items.
    shorter = encoder(history[1:, 1:], labels[1:, 1:]).user
    relabelled = encoder(history[1:], torch.tensor([[1, 1, 1, 0]])).user
    torch.testing.assert_close(shorter, context.user[1:])
    torch.testing.assert_close(relabelled, context.user[1:])


def test_user_encoder_mean_pooling_averages_valid_tokens():
    encoder = make_user_encoder("mean")
    context = encoder(torch.tensor([[0, 4, 9]]), torch.tensor([[0, 1, 1]]))
    expected = context.tokens[0, [0, 2, 3]].mean(dim=0)
    torch.testing.assert_close(context.user[0], expected)


@pytest.mark.parametrize("build", [
    lambda: GoalRankGenerator(GeneratorConfig(n_items=20, n_users=5, d_model=WIDTH, n_heads=HEADS)),
    lambda: RewardModel(RewardConfig(n_items=20, n_users=5, d_model=WIDTH, n_heads=HEADS, position_weights="uniform")),
], ids=["generator", "reward"])
def test_the_generator_and_its_reward_model_build_the_shared_user_side_first_under_the_same_keys(build):
    """Both models take their user side from ``user_modules`` before anything else draws from the
    seed, so a seed initialises it as it did before the block was shared and checkpoints keep their keys."""
    torch.manual_seed(3)
    model = build()
    torch.manual_seed(3)
    shared = nn.Module()
    shared.items, shared.user_encoder, shared.user_ids, shared.cross = user_modules(model.config, True, 0.1)
    state = model.state_dict()
    for key, value in shared.state_dict().items():
        assert torch.equal(state[key], value), key


def test_with_user_id_adds_the_users_row_only_where_the_model_has_an_id_embedding():
    torch.manual_seed(0)
    config = GeneratorConfig(n_items=20, n_users=5, d_model=WIDTH, n_heads=HEADS)
    _, _, user_ids, _ = user_modules(config, True, 0.0)
    user, users = torch.randn(2, WIDTH), torch.tensor([4, -1])
    assert with_user_id(user, None, users) is user
    torch.testing.assert_close(with_user_id(user, user_ids, users), user + user_ids.table.weight[[5, 0]])


def test_count_parameters_matches_hand_count():
    assert count_parameters(nn.Linear(3, 4)) == 16
    ffn = FeedForward(4, 2)
    assert count_parameters(ffn) == 2 * 4 + (4 * 8 + 8) + (8 * 4 + 4)
    assert count_parameters(AttentionBlock(4, 2)) == 2 * 4 + 4 * (4 * 4 + 4)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"n_heads": 3}, "n_heads"), ({"d_model": 0}, "d_model"),
     ({"dropout": 1.0}, "dropout"), ({"ffn_mult": 0}, "ffn_mult")],
)
def test_check_width_names_the_bad_field(kwargs, field):
    values = {"d_model": 8, "n_heads": 2, "ffn_mult": 4, "dropout": 0.0, **kwargs}
    with pytest.raises(ConfigError, match=f"model.{field}"):
        check_width("model", **values)
