"""GoalRank's generator: the autoregressive list policy π_θ(l | u, C) of paper Eq. 6.

Architecture (paper App. D.2): a *lower block* crosses every candidate with the user context
through Transformer encoder layers over the N candidates, and an *upper block*, a Transformer
decoder, predicts the next item's score over the whole candidate set at each step; a list is
built by picking items one by one (top-1 or sampling), never repeating one.

The encoding of a request is computed once and shared by every list of that request: the
group-relative loss (Eq. 5) scores K lists per request by teacher forcing in one parallel pass,
and decoding reuses it at every step with a key/value cache. Lists of a group share prefixes
(every list of a request starts from the same empty prefix, and beam-like policies branch late),
so on the CPU, where the step is compute-bound, teacher forcing runs once per distinct prefix
instead when few enough are distinct (``prefix_tree``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from goalrank.config import check, check_finite
from goalrank.data.storage import RankingBatch
from goalrank.models.base import Ranker, RankOutput, gumbel_noise, scores_from_lists
from goalrank.models.blocks import (
    DecoderLayer,
    KeyValues,
    KVCache,
    ModelConfig,
    PointerHead,
    TransformerEncoder,
    masked_log_softmax,
    user_modules,
    with_user_id,
)


@dataclass
class GeneratorConfig(ModelConfig):
    """GoalRank generator size. Width/depth/heads span ~1M to ~100M parameters (scaling study, §4).

    encoder_layers: depth of the lower block over the N candidates; decoder_layers: depth of the
    upper (autoregressive) block.
    user_embedding: add a user-id embedding to the user vector (``blocks.UserIdEmbedding``, with
    ``cold_start_rate`` of the training requests shown as new users): the history alone tells the
    generator less about a user than the reward model it imitates knows. On by default since the
    tuning study picked it (valid NDCG@6 0.6675 against 0.6631 without; docs/results.md).
    """

    encoder_layers: int = 2
    decoder_layers: int = 2
    user_embedding: bool = True
    cold_start_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("model.cold_start_rate", self.cold_start_rate)
        check(0 <= self.cold_start_rate < 1, "model.cold_start_rate", "in [0, 1)", self.cold_start_rate)
        check(not self.user_embedding or self.n_users >= 1, "model.n_users",
              ">= 1 (set from the dataset) with model.user_embedding", self.n_users)
        check(self.encoder_layers >= 0, "model.encoder_layers", ">= 0", self.encoder_layers)
        check(self.decoder_layers >= 1, "model.decoder_layers", ">= 1", self.decoder_layers)


# Teacher forcing as a prefix tree runs T sequential one-step passes over the distinct prefixes
# instead of one T-step pass over every list, so it pays only when few enough steps are distinct.
# Measured on one training batch's group of trained default-world generators (one CPU thread
# beside two training jobs, batch 128, encoder + teacher forcing forward and backward, median of
# 5–7; docs/benchmarks.md): with 0.808 / 0.733 / 0.685 of the steps distinct (padded per request)
# at K = 20 / 50 / 100, the tree took 0.96 / 0.86 / 0.68 of the flat pass's time. At a limit of
# 0.8 an untrained generator's K = 20 group (between 0.75 and 0.8) took the tree in `goalrank bench
# train` and its loss+backward was slower (2,438 against 1,958 ms), hence 0.75.
PREFIX_TREE_MAX_SHARE = 0.75


@dataclass(frozen=True)
class PrefixTree:
    """The distinct prefixes of lists (B, K, T), depth by depth: what teacher forcing computes once each.

    slots[t]: (B, K) the slot of list k's length-t prefix among its request's distinct length-t
    prefixes. representatives[t]: (B, M_t) for each slot a list that holds its prefix; M_t is the
    most any request has, and the slots past a request's own count repeat list 0 (computed, never read).
    """

    slots: list[torch.Tensor]
    representatives: list[torch.Tensor]

    @property
    def share(self) -> float:
        """Decoder steps the tree runs, as a share of the flat pass's B·K·T."""
        lists_per_request = self.slots[0].shape[1]
        return sum(rep.shape[1] for rep in self.representatives) / (lists_per_request * len(self.slots))


def prefix_tree(lists: torch.Tensor, n_candidates: int) -> PrefixTree:
    """``PrefixTree`` of lists (B, K, T) of positions in [0, n_candidates).

    A length-t prefix is keyed by its parent's node id and its last item (parent · N + item), so
    keys stay below B·K·N at every depth; ``torch.unique`` sorts them, and as parents are numbered
    in request order, so are their children.
    """
    batch, lists_per_request, steps = lists.shape
    device = lists.device
    order = torch.arange(lists_per_request, device=device).expand(batch, -1)  # (B, K)
    key = torch.arange(batch, device=device)[:, None].expand(-1, lists_per_request)  # the empty prefix: the request
    slots, representatives = [], []
    parent_request = torch.arange(batch, device=device)
    node = key
    for t in range(steps):
        if t > 0:
            key = node * n_candidates + lists[..., t - 1]
        distinct, node = torch.unique(key, return_inverse=True)  # node: (B, K) global node ids
        request = distinct if t == 0 else parent_request[distinct // n_candidates]
        counts = torch.bincount(request, minlength=batch)  # (B,)
        first = counts.cumsum(0) - counts
        slot = (torch.arange(len(distinct), device=device) - first[request])[node]  # (B, K)
        slots.append(slot)
        representatives.append(lists.new_zeros(batch, int(counts.max())).scatter_(1, slot, order))
        parent_request = request
    return PrefixTree(slots, representatives)


@dataclass
class Encoding:
    """One request batch encoded once, reused by every list and every decoding step.

    memory:       (B, N, D) candidate representations from the lower block.
    user:         (B, D) user vector.
    cross_kv:     per decoder layer, the memory's cross-attention keys/values (B, h, N, dh).
    pointer_keys: (B, N, D) the pointer head's candidate keys.
    """

    memory: torch.Tensor
    user: torch.Tensor
    cross_kv: list[KeyValues]
    pointer_keys: torch.Tensor


class GoalRankGenerator(Ranker):
    """Implements the ``ListGenerator`` protocol (models/base.py) and the ``Ranker`` interface."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.items, self.user_encoder, self.user_ids, self.cross = user_modules(
            config, config.user_embedding, config.cold_start_rate
        )
        self.candidate_encoder = TransformerEncoder(
            width, config.n_heads, config.encoder_layers, config.ffn_mult, config.dropout
        )
        self.start = nn.Parameter(torch.randn(width))
        self.positions = nn.Embedding(config.list_len, width)
        self.decoder = nn.ModuleList(
            DecoderLayer(width, config.n_heads, config.ffn_mult, config.dropout)
            for _ in range(config.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(width)
        self.pointer = PointerHead(width)

    def encode(self, batch: RankingBatch) -> Encoding:
        """Cross every candidate with the user context; no positional encoding (App. D.2).

        Candidates arrive in a random, meaningless order, so the candidate encoder is
        permutation-equivariant: permuting the candidates permutes ``memory`` the same way.
        """
        context = self.user_encoder(batch.history, batch.history_labels)
        user = with_user_id(context.user, self.user_ids, batch.users)  # (B, D)
        tokens = self.cross(self.items(batch.candidates), user)  # (B, N, D)
        memory = self.candidate_encoder(tokens)  # (B, N, D)
        return Encoding(
            memory=memory,
            user=user,
            cross_kv=[cast(DecoderLayer, layer).cross_attention.project_kv(memory) for layer in self.decoder],
            pointer_keys=self.pointer.project_keys(memory),
        )

    def _inputs(self, encoding: Encoding, fed: torch.Tensor, start: int) -> torch.Tensor:
        """Decoder inputs (B, K, T, D) of steps start, start+1, … given the items ``fed`` (B, K, F).

        Step 0's input is the learned start token plus the user vector (so T = 1 + F when
        ``start`` is 0, else T = F); the input of step t > 0 is the memory of the item chosen at
        step t − 1. Every step adds its position embedding.
        """
        batch, lists_per_request, fed_len = fed.shape
        width = encoding.memory.shape[-1]
        index = fed.reshape(batch, lists_per_request * fed_len, 1).expand(-1, -1, width)  # (B, K*F, D)
        inputs = encoding.memory.gather(1, index)  # (B, K*F, D)
        inputs = inputs.view(batch, lists_per_request, fed_len, width)  # (B, K, F, D)
        if start == 0:
            first = (self.start + encoding.user)[:, None, None]  # (B, 1, 1, D)
            first = first.expand(-1, lists_per_request, -1, -1)  # (B, K, 1, D)
            inputs = torch.cat([first, inputs], dim=2)  # (B, K, 1+F, D)
        steps = torch.arange(start, start + inputs.shape[2], device=fed.device)
        return inputs + self.positions(steps)  # (B, K, T, D)

    def _decode(self, encoding: Encoding, inputs: torch.Tensor, caches: list[KVCache] | None) -> torch.Tensor:
        """Decoder inputs (B, K, S, D) -> next-item logits (B, K, S, N); ``caches`` continue earlier steps."""
        batch, lists_per_request, steps, width = inputs.shape
        x = inputs.reshape(batch * lists_per_request, steps, width)  # (B*K, S, D)
        for index, layer in enumerate(self.decoder):
            x = layer(x, encoding.cross_kv[index], None if caches is None else caches[index])
        hidden = self.decoder_norm(x).view(batch, lists_per_request, steps, width)  # (B, K, S, D)
        return self.pointer.scores(hidden, encoding.pointer_keys)  # (B, K, S, N)

    def step_logits(self, encoding: Encoding, lists: torch.Tensor) -> torch.Tensor:
        """(B, K, T, N) logits of every step by teacher forcing lists (B, K, T), in one pass.

        Step t's logits depend on lists[..., :t] only (causal self-attention); the last item
        of each list is never an input. Logits are raw: chosen items are not yet excluded.
        """
        inputs = self._inputs(encoding, lists[..., :-1], start=0)  # (B, K, T, D)
        return self._decode(encoding, inputs, caches=None)

    def step_log_probs(self, encoding: Encoding, lists: torch.Tensor) -> torch.Tensor:
        """(B, K, T) log masked-softmax_t(l_t) of every step of lists (B, K, T), T ≤ L.

        Lists must hold distinct positions. Step t excludes the items chosen before it. On the
        CPU, once at most ``PREFIX_TREE_MAX_SHARE`` of the steps are distinct, each distinct
        prefix is computed once (``tree_step_log_probs``; the same values up to float rounding);
        otherwise, on a GPU (launch-bound: the tree adds T sequential passes), and while training
        with dropout (lists sharing a prefix would share its dropout mask), in one flat pass. One
        list per request shares nothing, so its tree (3.7 ms at B = 128) is not even built.
        """
        if lists.device.type == "cpu" and lists.shape[1] > 1 and not (self.training and self.config.dropout > 0):
            tree = prefix_tree(lists, encoding.memory.shape[1])
            if tree.share <= PREFIX_TREE_MAX_SHARE:
                return self.tree_step_log_probs(encoding, lists, tree)
        return self.flat_step_log_probs(encoding, lists)

    def flat_step_log_probs(self, encoding: Encoding, lists: torch.Tensor) -> torch.Tensor:
        """``step_log_probs`` in one teacher-forced pass over every step of every list."""
        n_candidates = encoding.memory.shape[1]
        logits = self.step_logits(encoding, lists)  # (B, K, T, N)
        picked = F.one_hot(lists, n_candidates)  # (B, K, T, N)
        chosen_before = (picked.cumsum(dim=2) - picked).bool()  # (B, K, T, N)
        log_probs = masked_log_softmax(logits, chosen_before)  # (B, K, T, N)
        return log_probs.gather(-1, lists[..., None]).squeeze(-1)  # (B, K, T)

    def tree_step_log_probs(self, encoding: Encoding, lists: torch.Tensor, tree: PrefixTree) -> torch.Tensor:
        """``step_log_probs`` once per distinct prefix: depth by depth, each prefix's decoder step
        attends to its parent's cached keys/values, so a prefix shared by many lists is computed,
        and back-propagated through, once."""
        batch, _, steps = lists.shape
        n_candidates = encoding.memory.shape[1]
        rows = torch.arange(batch, device=lists.device)[:, None]  # (B, 1)
        caches: list[KeyValues | None] = [None] * len(self.decoder)  # per layer, (B*M, h, t, dh) of the last depth
        step_log_probs = []
        for t, (slot, representative) in enumerate(zip(tree.slots, tree.representatives, strict=True)):
            width = representative.shape[1]
            prefixes = lists.gather(1, representative[..., None].expand(-1, -1, steps))[..., :t]  # (B, M, t)
            inputs = self._inputs(encoding, prefixes[..., max(t - 1, 0):], start=t)  # (B, M, 1, D)
            x = inputs.reshape(batch * width, 1, -1)
            if t > 0:  # each node's parent: its row in the previous depth's (B*M_{t-1}) caches
                parent_width = tree.representatives[t - 1].shape[1]
                parents = (rows * parent_width + tree.slots[t - 1].gather(1, representative)).flatten()  # (B*M,)
                caches = [KeyValues(kv.keys.index_select(0, parents), kv.values.index_select(0, parents))
                          for kv in cast(list[KeyValues], caches)]
            for index, layer in enumerate(self.decoder):
                cache = KVCache(caches[index])
                x = layer(x, encoding.cross_kv[index], cache)
                caches[index] = cache.cached
            hidden = self.decoder_norm(x).view(batch, width, 1, -1)  # (B, M, 1, D)
            logits = self.pointer.scores(hidden, encoding.pointer_keys)[:, :, 0]  # (B, M, N)
            chosen = torch.zeros_like(logits, dtype=torch.bool).scatter_(2, prefixes, True)
            log_probs = masked_log_softmax(logits, chosen).flatten(1)  # (B, M*N)
            step_log_probs.append(log_probs.gather(1, slot * n_candidates + lists[..., t]))  # (B, K)
        return torch.stack(step_log_probs, dim=2)

    def log_prob(self, encoding: Encoding, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) exact log π_θ(l) = Σ_t log masked-softmax_t(l_t) (Eq. 6) of lists (B, K, T), T ≤ L."""
        return self.step_log_probs(encoding, lists).sum(dim=-1)

    def next_log_probs(self, encoding: Encoding, prefixes: torch.Tensor) -> torch.Tensor:
        """(B, P, N) log-probabilities of the next item after prefixes (B, P, t), t < L, in one pass.

        One decoder pass per prefix instead of one per (prefix, next item) pair: what
        tree-structured group construction needs to branch cheaply.
        """
        batch, num_prefixes, length = prefixes.shape
        placeholder = prefixes.new_zeros(batch, num_prefixes, 1)  # never an input (see step_logits)
        logits = self.step_logits(encoding, torch.cat([prefixes, placeholder], dim=2))[:, :, -1]  # (B, P, N)
        chosen = torch.zeros_like(logits, dtype=torch.bool).scatter_(2, prefixes, True)
        return masked_log_softmax(logits, chosen)

    def first_step_logits(self, encoding: Encoding) -> torch.Tensor:
        """(B, N) logits of the first position: an item-wise score of every candidate."""
        batch = encoding.memory.shape[0]
        empty = encoding.memory.new_zeros(batch, 1, 0, dtype=torch.long)  # (B, 1, 0)
        return self._decode(encoding, self._inputs(encoding, empty, start=0), caches=None)[:, 0, 0]

    def generate(
        self,
        encoding: Encoding,
        num_lists: int,
        greedy: bool = False,
        temperature: float = 1.0,
        rng: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lists (B, K, L) and the log-probability (B, K) of their generated part under the sampler.

        The prefix (B, K, t0) is fed in one teacher-forced chunk, then the remaining L − t0
        items are chosen step by step; each step feeds only its new token, attending to
        earlier steps through a key/value cache, and the encoder never re-runs. Sampling is
        Gumbel-max over the masked log-softmax of logits / temperature: exact softmax sampling
        whose noise comes from ``rng`` (on any device), so equal seeds give equal lists.
        The returned log-probability sums log softmax(logits / temperature) over generated steps.
        """
        lists, total, _ = self._generate(encoding, num_lists, greedy, temperature, rng, prefix)
        return lists, total

    def _generate(
        self,
        encoding: Encoding,
        num_lists: int,
        greedy: bool,
        temperature: float,
        rng: torch.Generator | None,
        prefix: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``generate``'s lists and log-probabilities, and the first generated step's logits / temperature (B, K, N).

        With an empty prefix those logits are ``first_step_logits`` / temperature, computed by the
        same operations, so ``rank`` reads them here instead of running a separate decoder pass.
        """
        check(temperature > 0, "temperature", "> 0", temperature)
        batch, n_candidates, _ = encoding.memory.shape
        if prefix is None:
            prefix = encoding.memory.new_zeros(batch, num_lists, 0, dtype=torch.long)
        if prefix.shape[:2] != (batch, num_lists) or prefix.shape[2] > self.list_len:
            raise ValueError(
                f"prefix: shape {tuple(prefix.shape)},"
                f" expected (B={batch}, K={num_lists}, t0<={self.list_len})"
            )
        lists = prefix
        total = encoding.memory.new_zeros(batch, num_lists)  # (B, K)
        # scatter, not one_hot: one_hot's class count would fix N in an exported graph (serve/export.py)
        excluded = total.new_zeros(batch, num_lists, n_candidates, dtype=torch.bool).scatter(2, prefix, True)
        caches = [KVCache() for _ in self.decoder]
        fed, start = prefix, 0
        first_logits = None
        for step in range(prefix.shape[2], self.list_len):
            inputs = self._inputs(encoding, fed, start)  # (B, K, 1+t0, D) first, then (B, K, 1, D)
            logits = self._decode(encoding, inputs, caches)[:, :, -1] / temperature  # (B, K, N)
            if first_logits is None:
                first_logits = logits
            log_probs = masked_log_softmax(logits, excluded)  # (B, K, N)
            scores = log_probs if greedy else log_probs + gumbel_noise(log_probs.shape, rng, log_probs.device)
            choice = scores.argmax(dim=-1, keepdim=True)  # (B, K, 1)
            total = total + log_probs.gather(-1, choice).squeeze(-1)
            lists = torch.cat([lists, choice], dim=2)  # (B, K, step+1)
            excluded = excluded.scatter(-1, choice, True)
            fed, start = choice, step + 1
        if first_logits is None:  # the prefix was a whole list: nothing generated
            first_logits = encoding.memory.new_zeros(batch, num_lists, n_candidates)
        return lists, total, first_logits

    def decode(
        self,
        encoding: Encoding,
        num_lists: int,
        greedy: bool = False,
        temperature: float = 1.0,
        rng: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, K, L) lists: K per request, sampled (or greedy), continuing ``prefix`` (B, K, t0) if given."""
        return self._generate(encoding, num_lists, greedy, temperature, rng, prefix)[0]

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        """The greedy list; candidate scores rank the rest by their first-step logit.

        The first-step logits are those of the decode's own first step (no second decoder pass).
        """
        encoding = self.encode(batch)
        lists, _, first_logits = self._generate(encoding, 1, greedy=True, temperature=1.0, rng=None, prefix=None)
        return RankOutput(lists=lists[:, 0], scores=scores_from_lists(lists[:, 0], first_logits[:, 0]))
