"""Shared layers of every ranker and of the reward model: written once, reused everywhere.

GoalRank's generator (paper §3.3, App. D.2), the list-wise reward model (App. B) and the
baselines are all built from the same few pieces: an item embedding, a user-context encoder,
pre-norm Transformer layers on ``scaled_dot_product_attention`` (self- or cross-attention,
causal masks, key padding masks, an incremental key/value cache), a masked log-softmax and a
pointer head that scores every candidate. The re-ranking baselines also share a config base and
a request encoder: personalised candidate tokens and the initial ranking they refine.

Conventions: ``D`` model width, ``h`` heads, ``dh = D / h``; boolean *padding* masks are True
where a token is padding (PyTorch's ``key_padding_mask`` convention); ``masked_log_softmax``
excludes the entries where its mask is True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from goalrank.config import PAPER_LIST_LEN, check

PAD = 0


def check_width(section: str, d_model: int, n_heads: int, ffn_mult: int, dropout: float) -> None:
    """Validate the width fields every Transformer config shares (ConfigError names the field)."""
    check(d_model >= 1, f"{section}.d_model", ">= 1", d_model)
    check(n_heads >= 1, f"{section}.n_heads", ">= 1", n_heads)
    check(d_model % n_heads == 0, f"{section}.n_heads", f"a divisor of d_model={d_model}", n_heads)
    check(ffn_mult >= 1, f"{section}.ffn_mult", ">= 1", ffn_mult)
    check(0.0 <= dropout < 1.0, f"{section}.dropout", "in [0, 1)", dropout)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (works on ``meta``-device modules, so huge configs can be sized)."""
    return sum(p.numel() for p in module.parameters())


def item_embedding(n_items: int, d_model: int) -> nn.Embedding:
    """Embedding of item indices 1..n_items; index 0 pads histories and maps to the zero vector."""
    return nn.Embedding(n_items + 1, d_model, padding_idx=PAD)


def sinusoidal_positions(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(…, D) fixed sin/cos encoding of integer ``positions`` (…,); needs no maximum length."""
    half = d_model // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1)
    )
    angles = positions.float()[..., None] * frequencies  # (…, D/2)
    encoding = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (…, 2 * (D/2))
    return F.pad(encoding, (0, d_model - 2 * half))  # (…, D)


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the last dim excluding entries where ``mask`` is True.

    Excluded entries get the dtype's lowest finite value instead of −inf, so they have
    probability exactly 0 yet the output (and its gradient) stays finite: a row multiplied by
    zero weights never turns into NaN. A fully masked row gives the uniform distribution.
    """
    filled = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    return filled.log_softmax(dim=-1)


@dataclass
class KeyValues:
    """Attention keys and values split into heads: each (B, h, S, dh)."""

    keys: torch.Tensor
    values: torch.Tensor


class KVCache:
    """Keys/values of the steps decoded so far; each step appends only its own (paper App. D.2).

    Incremental decoding attends the new step's query to every cached key, so earlier steps
    are never recomputed.
    """

    def __init__(self, cached: KeyValues | None = None) -> None:
        self.cached = cached

    def append(self, new: KeyValues) -> KeyValues:
        """Add ``new`` (B, h, s, dh) after the cached steps; return everything cached (B, h, S+s, dh)."""
        if self.cached is not None:
            new = KeyValues(
                torch.cat([self.cached.keys, new.keys], dim=2),  # (B, h, S + s, dh)
                torch.cat([self.cached.values, new.values], dim=2),
            )
        self.cached = new
        return new


def attention_mask(
    q_len: int, k_len: int, causal: bool, key_padding_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean mask, True where a query may attend a key; None when everything is allowed.

    The causal part is aligned to the *last* keys: query i sits at absolute step
    ``k_len - q_len + i``, which is what incremental decoding with a cache needs.
    """
    allowed = None
    if causal:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)  # (Tq, Tk)
    if key_padding_mask is not None:
        keep = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Tk)
        allowed = keep if allowed is None else keep & allowed  # (B, 1, Tq, Tk)
    return allowed


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention sublayer with its residual: x + Dropout(MHA(LN(x), ·)).

    Self-attention when no ``memory`` is given, cross-attention to ``memory`` (B, S, D) or to
    keys/values projected once beforehand with ``project_kv`` (``memory_kv``). Cross-attention
    memory is used as given (encoders end in their own LayerNorm). Every query must be able to
    attend at least one key; the user-context encoder guarantees this with an always-present
    context token.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.residual_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        if steps == 1:  # one decoding step is already laid out as (B, h, 1, dh): no transpose node
            return x.view(batch, self.n_heads, 1, width // self.n_heads)
        return x.view(batch, steps, self.n_heads, width // self.n_heads).transpose(1, 2)  # (B, h, S, dh)

    def project_kv(self, source: torch.Tensor) -> KeyValues:
        """Keys and values (B, h, S, dh) of ``source`` (B, S, D), e.g. a memory attended many times."""
        keys, values = self.key_value(source).chunk(2, dim=-1)  # 2 x (B, S, D)
        return KeyValues(self._split_heads(keys), self._split_heads(values))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        memory_kv: KeyValues | None = None,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D).

        ``cache`` (self-attention only): the keys/values of ``x`` are appended to it and the
        queries attend to every cached step; with ``causal`` the T new steps are the last ones.
        ``key_padding_mask`` (B, S): True at padded keys.
        """
        hidden = self.norm(x)
        queries = self._split_heads(self.query(hidden))  # (B, h, T, dh)
        if memory_kv is None:
            memory_kv = self.project_kv(hidden if memory is None else memory)  # (B, h, S, dh)
        if cache is not None:
            memory_kv = cache.append(memory_kv)
        q_len, k_len = queries.shape[2], memory_kv.keys.shape[2]
        dropout = self.dropout if self.training else 0.0
        if q_len == 1 and torch.onnx.is_in_onnx_export():
            attended = self._attend_one(queries, memory_kv, key_padding_mask, dropout)
        elif causal and key_padding_mask is None and q_len == k_len:
            attended = F.scaled_dot_product_attention(
                queries, memory_kv.keys, memory_kv.values, dropout_p=dropout, is_causal=True
            )
        else:
            mask = attention_mask(q_len, k_len, causal, key_padding_mask, x.device)
            attended = F.scaled_dot_product_attention(
                queries, memory_kv.keys, memory_kv.values, attn_mask=mask, dropout_p=dropout
            )  # (B, h, T, dh)
        batch, _, steps, _ = attended.shape
        if steps == 1:
            merged = attended.reshape(batch, 1, -1)  # (B, h, 1, dh) is (B, 1, D) in memory
        else:
            merged = attended.transpose(1, 2).reshape(batch, steps, -1)  # (B, T, D)
        return x + self.residual_dropout(self.out(merged))

    @staticmethod
    def _attend_one(
        queries: torch.Tensor, memory_kv: KeyValues, key_padding_mask: torch.Tensor | None, dropout: float
    ) -> torch.Tensor:
        """Attention of one query step (B, h, 1, dh), written out rather than through SDPA.

        Used only while exporting to ONNX: every step of the exported greedy decode is a single
        query, causal or not (a lone query may see every cached step), and SDPA's ONNX
        decomposition adds Shape, Slice, Concat and Reshape nodes around each call. Written out,
        with the transpose-free head split and merge of a single step, the exported GoalRank graph
        went from 1,067 to 823 nodes and ONNX Runtime's p50 fell by 10 % (2.72 vs 3.03 ms, one
        thread, the graphs timed alternately on the same 900 requests, lists equal). Eager keeps
        SDPA: one thread, B=1 with 50 padded keys it was 2.6x faster than this code, and on the
        (2560, h, 6) cached self-attention of group construction 1.6x faster.
        """
        scores = queries @ memory_kv.keys.transpose(-2, -1) * queries.shape[-1] ** -0.5  # (B, h, 1, S)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), dropout, training=dropout > 0)
        return weights @ memory_kv.values  # (B, h, 1, dh)


class FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward sublayer with its residual: x + Dropout(W2 GELU(W1 LN(x)))."""

    def __init__(self, d_model: int, ffn_mult: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn_mult * d_model),
            nn.GELU(),
            nn.Linear(ffn_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, both pre-norm."""

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = AttentionBlock(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, ffn_mult, dropout)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        return self.feed_forward(self.attention(x, causal=causal, key_padding_mask=key_padding_mask))


class TransformerEncoder(nn.Module):
    """A stack of pre-norm encoder layers and the final LayerNorm pre-norm stacks need.

    Adds no positional information: callers add it when order matters. Without it the stack is
    permutation-equivariant, which GoalRank's candidate encoder relies on.
    """

    def __init__(self, d_model: int, n_heads: int, layers: int, ffn_mult: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, ffn_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """x (B, S, D) -> (B, S, D)."""
        for layer in self.layers:
            x = layer(x, key_padding_mask, causal)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Causal self-attention over each sequence, cross-attention to its request's memory, FFN.

    ``x`` holds K sequences per request, (B*K, S, D), request-major. For cross-attention they
    are viewed as (B, K*S, D) queries against the request's (B, h, N, dh) memory keys/values,
    so the memory is never copied K times.
    """

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attention = AttentionBlock(d_model, n_heads, dropout)
        self.cross_attention = AttentionBlock(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, ffn_mult, dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: KeyValues,
        cache: KVCache | None = None,
        *,
        causal: bool = True,
        memory_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B*K, S, D) -> (B*K, S, D); with ``cache`` the S steps continue the cached ones.

        ``causal=False`` lets every token see the whole sequence (the reward model scores whole
        lists); ``memory_padding`` (B, M) is True at padded memory keys (a left-padded history).
        """
        rows, steps, width = x.shape
        x = self.self_attention(x, causal=causal, cache=cache)  # (B*K, S, D)
        x = x.reshape(memory.keys.shape[0], -1, width)  # (B, K*S, D)
        x = self.feed_forward(self.cross_attention(x, memory_kv=memory, key_padding_mask=memory_padding))
        return x.reshape(rows, steps, width)  # (B*K, S, D)


class PointerHead(nn.Module):
    """Scores every candidate for a query: ⟨W_q q, W_k m_j⟩ / √D (the decoder's next-item scores).

    ``project_keys`` runs once per request; ``scores`` reuses the keys for every list and step.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.scale = d_model**-0.5

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, N, D) candidate keys."""
        return self.key(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query (B, …, D) x keys (B, N, D) -> logits (B, …, N)."""
        batch, *middle, width = query.shape
        flat = self.query(query).reshape(batch, -1, width)  # (B, M, D)
        logits = flat @ keys.transpose(1, 2) * self.scale  # (B, M, N)
        return logits.reshape(batch, *middle, keys.shape[1])  # (B, …, N)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """query (B, …, D) x memory (B, N, D) -> logits (B, …, N)."""
        return self.scores(query, self.project_keys(memory))


class FeatureCross(nn.Module):
    """Cross item tokens with the user vector: MLP([item, user, item ⊙ user]) -> (…, D).

    A user–item affinity is (close to) a dot product; adding the user vector to the item token
    leaves attention and FFN layers to rediscover that product, which they learn slowly. The
    explicit element-wise product term makes it one linear read-out away (measured on the
    simulator: the reward model's validation AUC rose sharply with it).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, items: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """items (B, …, D) and user (B, D) -> crossed tokens (B, …, D)."""
        user = user.view(user.shape[0], *([1] * (items.dim() - 2)), user.shape[-1]).expand_as(items)
        return self.mlp(torch.cat([items, user, items * user], dim=-1))


UNKNOWN_USER = -1  # the user index of a request from a user the training data never saw


class UserIdEmbedding(nn.Module):
    """A learned vector per known user index 0..n_users-1, and one cold-start row for UNKNOWN_USER.

    Sixty history events say less about a user than the user's whole training log, which an id
    embedding memorises (paper App. B: the reward model sees the user's id features). The
    cold-start row is what a new user gets at serving time; it is learned by replacing a
    ``cold_start_rate`` share of the training requests' users with UNKNOWN_USER (like dropout:
    only in training mode, drawn from torch's global generator, which every run seeds), so it
    becomes the average user rather than an untrained vector.
    """

    def __init__(self, n_users: int, d_model: int, cold_start_rate: float) -> None:
        super().__init__()
        check(n_users >= 1, "model.n_users", ">= 1 (set from the dataset) for a user-id embedding", n_users)
        self.n_users = n_users
        self.cold_start_rate = cold_start_rate
        self.table = nn.Embedding(n_users + 1, d_model)  # row 0: UNKNOWN_USER, row u + 1: user u
        nn.init.normal_(self.table.weight, std=d_model**-0.5)
        # Row u + 1 is read only for users the training split holds (``restrict_to``): a user first
        # seen after the training cut (real logs split by time) would read an untrained row.
        self.register_buffer("trained", torch.ones(n_users + 1, dtype=torch.bool))

    trained: torch.Tensor  # (n_users + 1,) whether each row was trained; row 0 always

    @torch.no_grad()
    def restrict_to(self, users: torch.Tensor) -> None:
        """Map every user not among ``users`` (the training split's) to the cold-start row."""
        self.trained.fill_(False)
        self.trained[0] = True
        self.trained[users.long() + 1] = True

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """users (B,) indices in [0, n_users) or UNKNOWN_USER -> (B, D).

        No range check here (it would read the tensor's values, which breaks ``torch.export`` and
        syncs a GPU on every call): the catalogue and the prepared data give valid indices, and an
        invalid one fails in the embedding lookup.
        """
        rows = users + 1
        if self.training and self.cold_start_rate > 0:
            cold = torch.rand(users.shape, device=users.device) < self.cold_start_rate
            rows = rows.masked_fill(cold, 0)
        return self.table(torch.where(self.trained[rows], rows, 0))


@dataclass
class UserContext:
    """An encoded user context.

    user:         (B, D) pooled user vector.
    tokens:       (B, 1+H, D) the learned context token, then the encoded history items.
    padding_mask: (B, 1+H) True at padded history positions; the context token is never padding,
                  so attending to ``tokens`` is defined even for a user without history.
    """

    user: torch.Tensor
    tokens: torch.Tensor
    padding_mask: torch.Tensor


class UserContextEncoder(nn.Module):
    """History items + feedback label + recency -> pre-norm Transformer -> user vector.

    Position is the recency (0 = most recent) under a fixed sinusoidal encoding, so it means the
    same for every history length H. A learned context token is prepended to every history: it
    is the only valid token of a new user, whose vector is then a learned prior instead of NaN.
    ``items`` is the model's item embedding, shared with the candidates.
    """

    def __init__(
        self,
        items: nn.Embedding,
        n_heads: int,
        layers: int,
        ffn_mult: int,
        dropout: float = 0.0,
        pooling: Literal["attention", "mean"] = "attention",
    ) -> None:
        super().__init__()
        d_model = items.embedding_dim
        self.items = items
        self.labels = nn.Embedding(2, d_model)
        self.context_token = nn.Parameter(torch.randn(d_model))
        self.encoder = TransformerEncoder(d_model, n_heads, layers, ffn_mult, dropout)
        self.pooling = pooling
        self.pool_score = nn.Linear(d_model, 1, bias=False)  # softmax pooling ignores a shift

    def forward(self, history: torch.Tensor, history_labels: torch.Tensor) -> UserContext:
        """history, history_labels (B, H) -> UserContext (left-padded histories, oldest first)."""
        batch, length = history.shape
        width = self.items.embedding_dim
        recency = torch.arange(length - 1, -1, -1, device=history.device)  # (H,)
        tokens = (
            self.items(history) + self.labels(history_labels.long()) + sinusoidal_positions(recency, width)
        )  # (B, H, D)
        tokens = torch.cat([self.context_token.expand(batch, 1, width), tokens], dim=1)  # (B, 1+H, D)
        context_padding = history.new_zeros(batch, 1, dtype=torch.bool)  # (B, 1)
        padding = torch.cat([context_padding, history == PAD], dim=1)  # (B, 1+H)
        tokens = self.encoder(tokens, key_padding_mask=padding)  # (B, 1+H, D)
        if self.pooling == "attention":
            weights = masked_log_softmax(self.pool_score(tokens).squeeze(-1), padding).exp()  # (B, 1+H)
        else:
            valid = (~padding).float()
            weights = valid / valid.sum(dim=1, keepdim=True)  # (B, 1+H)
        user = (weights[..., None] * tokens).sum(dim=1)  # (B, D)
        return UserContext(user=user, tokens=tokens, padding_mask=padding)


def user_modules(
    config: ModelConfig, user_embedding: bool, cold_start_rate: float
) -> tuple[nn.Embedding, UserContextEncoder, UserIdEmbedding | None, FeatureCross]:
    """The user side GoalRank's generator and its reward model share by design (App. B, D.2): one
    item table for history and candidates, the history encoder, the user-id embedding (None when
    off) and the cross of each candidate with the user vector (``with_user_id`` joins the first two).

    The caller keeps them as ``items``, ``user_encoder``, ``user_ids`` and ``cross``: those names
    are its checkpoints' keys, and building in this order keeps the weights a seed initialises, so
    runs recorded before this helper existed still load and reproduce.
    """
    items = item_embedding(config.n_items, config.d_model)
    encoder = UserContextEncoder(items, config.n_heads, config.history_layers, config.ffn_mult, config.dropout)
    user_ids = UserIdEmbedding(config.n_users, config.d_model, cold_start_rate) if user_embedding else None
    return items, encoder, user_ids, FeatureCross(config.d_model)


def with_user_id(user: torch.Tensor, user_ids: UserIdEmbedding | None, users: torch.Tensor) -> torch.Tensor:
    """(B, D) the history's user vector plus the user-id embedding of ``users`` (B,), where there is one."""
    return user if user_ids is None else user + user_ids(users)


@dataclass
class ModelConfig:
    """Sizes every model shares (paper §4.1.2: hidden size 128 for all models).

    n_items and n_users come from the dataset (n_users is read only by models with a user-id
    embedding; 0 in runs of earlier versions); history_layers is the depth of the user-context encoder;
    n_heads, ffn_mult and dropout serve every stack of the model; list_len is L. Each model's
    config subclasses this dataclass and adds its own depth fields.
    """

    n_items: int
    n_users: int = 0
    d_model: int = 128
    n_heads: int = 4
    history_layers: int = 1
    ffn_mult: int = 4
    dropout: float = 0.0
    list_len: int = PAPER_LIST_LEN

    def __post_init__(self) -> None:
        check(self.n_items >= 1, "model.n_items", ">= 1", self.n_items)
        check(self.n_users >= 0, "model.n_users", ">= 0", self.n_users)
        check_width("model", self.d_model, self.n_heads, self.ffn_mult, self.dropout)
        check(self.history_layers >= 0, "model.history_layers", ">= 0", self.history_layers)
        check(self.list_len >= 1, "model.list_len", ">= 1", self.list_len)


@dataclass
class RerankerConfig(ModelConfig):
    """A model with one stack of ``layers`` over its tokens (the re-ranking baselines, the reward model)."""

    layers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.layers >= 1, "model.layers", ">= 1", self.layers)


def check_max_candidates(n_candidates: int, max_candidates: int) -> None:
    """ConfigError unless a batch's N fits a model with per-rank parameters for ``max_candidates`` ranks."""
    check(n_candidates <= max_candidates, "model.max_candidates",
          f">= the batch's number of candidates N={n_candidates}", max_candidates)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Reorder the candidate axis: ``out[b, i] = x[b, index[b, i]]`` for x (B, N, …), index (B, M).

    Re-rankers read candidates in their initial-ranking order and put scores back in the batch's
    order with the inverse permutation, ``gather_rows(scores, order.argsort(dim=1))``.
    """
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, expanded)  # (B, M, …)


@dataclass
class EncodedRequest:
    """A ranking request encoded for a re-ranking baseline (DLCM, SetRank, PRM, MIR, RankMixer, …).

    context:        the encoded user context (user vector, history tokens and their padding).
    candidates:     (B, N, D) personalised candidate tokens, in the batch's candidate order.
    initial_scores: (B, N) the cheap initial score ⟨e_c, u⟩ / √D, without gradient.
    """

    context: UserContext
    candidates: torch.Tensor
    initial_scores: torch.Tensor

    @property
    def initial_order(self) -> torch.Tensor:
        """(B, N) candidate positions, best first: the initial ranking a re-ranker refines."""
        return self.initial_scores.argsort(dim=1, descending=True, stable=True)


class RequestEncoder(nn.Module):
    """The inputs every re-ranking baseline shares: user context, candidate tokens, initial ranking.

    Re-rankers (paper §4.1.2) refine the list of an earlier stage, but prepared candidates come in
    a random order, so the initial ranking is defined here as the order of the dot product of each
    candidate's embedding with the user vector: a learned-for-free first-stage score (it is
    detached, so it only orders inputs and is trained through the shared embeddings). Each
    candidate token is Linear([e_c, u, e_c ⊙ u]), the DNN baseline's features, so every
    baseline sees the same personalised inputs.
    """

    def __init__(
        self, n_items: int, d_model: int, n_heads: int, history_layers: int, ffn_mult: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.items = item_embedding(n_items, d_model)
        self.context = UserContextEncoder(self.items, n_heads, history_layers, ffn_mult, dropout)
        self.personalise = nn.Linear(3 * d_model, d_model)

    def forward(self, history: torch.Tensor, history_labels: torch.Tensor, candidates: torch.Tensor) -> EncodedRequest:
        """history, history_labels (B, H), candidates (B, N) item indices -> EncodedRequest."""
        context = self.context(history, history_labels)
        items = self.items(candidates)  # (B, N, D)
        user = context.user[:, None].expand_as(items)  # (B, N, D)
        tokens = self.personalise(torch.cat([items, user, items * user], dim=-1))  # (B, N, D)
        initial = (items * user).sum(dim=-1).detach() * items.shape[-1] ** -0.5  # (B, N)
        return EncodedRequest(context=context, candidates=tokens, initial_scores=initial)
