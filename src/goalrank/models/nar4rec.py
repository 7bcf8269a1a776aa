"""NAR4Rec (Ren et al., 2024b): a non-autoregressive generator plus the shared evaluator (paper §4.1.2).

One Transformer pass over L position tokens and the N candidates gives a position-item matrix:
row t is a softmax over the candidates for position t. No position depends on the items chosen
for the others, so the whole matrix costs one forward pass. At ranking time K lists are decoded
from it (one greedy, K − 1 sampled; positions filled in order, each item used once) and the
evaluator keeps the best one.

Training (our simplification of the original): the likelihood of the logged list, i.e. the
cross-entropy of row t against the logged item at position t, plus ``unlikelihood_weight`` · w
times the unlikelihood −log(1 − p_t(item)) of every logged item that got *no* positive feedback.
The original applies likelihood to whole lists with positive feedback and unlikelihood to
whole lists without; we make that choice per item, where our labels live. For a negative logged
item the two terms balance at p = 1 / (1 + w), so w sets how far below positives it is pushed.
The original's contrastive decoding and its learned candidate/position matching are omitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ListEvaluator, Ranker, RankOutput, attach_evaluator, select_best_list
from goalrank.models.blocks import (
    PointerHead,
    RerankerConfig,
    TransformerEncoder,
    UserContextEncoder,
    item_embedding,
    masked_log_softmax,
)

SEED_RANGE = 2**62


@dataclass
class NAR4RecConfig(RerankerConfig):
    """Network size, loss weight and decoding.

    layers: Transformer layers over the L position tokens and N candidates together.
    unlikelihood_weight: w of the unlikelihood term on logged items without positive feedback.
    num_decoded: K lists decoded per request at ranking time (the first greedy, the rest sampled).
    temperature: sampling temperature of the K − 1 sampled lists.
    """

    unlikelihood_weight: float = 1.0
    num_decoded: int = 8
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.unlikelihood_weight >= 0, "model.unlikelihood_weight", ">= 0", self.unlikelihood_weight)
        check(self.num_decoded >= 1, "model.num_decoded", ">= 1", self.num_decoded)
        check(self.temperature > 0, "model.temperature", "> 0", self.temperature)


class NAR4Rec(Ranker):
    """Position-item matrix generator; ``rank`` returns the evaluator's best decoded list.

    Sampled decoding draws from a generator seeded by ``decode_seed``, a buffer drawn from the
    run's seed at construction and saved with the weights, so ``rank`` is a pure function of the
    checkpoint and the batch.
    """

    decode_seed: torch.Tensor  # () a buffer, saved with the weights
    evaluator: ListEvaluator  # set by attach_evaluator

    def __init__(self, config: NAR4RecConfig, evaluator: ListEvaluator) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.items = item_embedding(config.n_items, width)
        self.user_encoder = UserContextEncoder(
            self.items, config.n_heads, config.history_layers, config.ffn_mult, config.dropout
        )
        self.user_to_tokens = nn.Linear(width, width)
        self.positions = nn.Embedding(config.list_len, width)
        self.encoder = TransformerEncoder(
            width, config.n_heads, config.layers, config.ffn_mult, config.dropout
        )
        self.pointer = PointerHead(width)
        self.register_buffer("decode_seed", torch.randint(SEED_RANGE, ()))
        attach_evaluator(self, evaluator)

    def position_logits(self, batch: RankingBatch) -> torch.Tensor:
        """(B, L, N) logits of the position-item matrix; row t's softmax is position t's distribution.

        Candidates get no positional encoding (their order is random), so permuting them permutes
        the columns the same way.
        """
        size = batch.candidates.shape[0]
        user = self.user_encoder(batch.history, batch.history_labels).user  # (B, D)
        context = self.user_to_tokens(user)[:, None]  # (B, 1, D)
        positions = self.positions.weight.expand(size, -1, -1) + context  # (B, L, D)
        candidates = self.items(batch.candidates) + context  # (B, N, D)
        hidden = self.encoder(torch.cat([positions, candidates], dim=1))  # (B, L+N, D)
        return self.pointer(hidden[:, : self.list_len], hidden[:, self.list_len :])  # (B, L, N)

    def training_loss(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-position likelihood of the logged list + w · unlikelihood of its negative items."""
        log_probs = self.position_logits(batch).log_softmax(dim=-1)  # (B, L, N)
        logged = log_probs.gather(2, batch.exposed[..., None]).squeeze(-1)  # (B, L)
        negative = 1.0 - batch.labels.gather(1, batch.exposed)  # (B, L)
        likelihood = -logged.mean()
        unlikelihood = -(negative * log1m_exp(logged)).mean()
        loss = likelihood + self.config.unlikelihood_weight * unlikelihood
        return loss, {"likelihood": likelihood.item(), "unlikelihood": unlikelihood.item()}

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        """The evaluator's best of ``num_decoded`` lists; unlisted candidates ranked by row 0."""
        logits = self.position_logits(batch)  # (B, L, N)
        rng = torch.Generator(device=logits.device).manual_seed(int(self.decode_seed))
        lists = decode_position_matrix(logits, self.config.num_decoded, self.config.temperature, rng)
        return select_best_list(self.evaluator, batch, lists, logits[:, 0])


def log1m_exp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 − p) from log p; p is clamped to 1 − 1e-6 so that a certain negative gives a finite loss."""
    return torch.log1p(-log_p.exp().clamp(max=1.0 - 1e-6))


def decode_position_matrix(
    logits: torch.Tensor, num_lists: int, temperature: float, rng: torch.Generator | None = None
) -> torch.Tensor:
    """(B, K, L) lists from the matrix ``logits`` (B, L, N): list 0 greedy, lists 1.. sampled.

    Positions are filled in order; position t draws from row t's softmax (at ``temperature``
    for sampled lists) over the candidates not yet placed in that list.
    """
    size, length, n_candidates = logits.shape
    placed = torch.zeros(size, num_lists, n_candidates, dtype=torch.bool, device=logits.device)
    picks = []
    for t in range(length):
        row = logits[:, None, t].expand(-1, num_lists, -1)  # (B, K, N)
        greedy = row[:, :1].masked_fill(placed[:, :1], float("-inf")).argmax(dim=-1)  # (B, 1)
        probabilities = masked_log_softmax(row[:, 1:] / temperature, placed[:, 1:]).exp()  # (B, K-1, N)
        sampled = torch.multinomial(probabilities.reshape(-1, n_candidates), 1, generator=rng)
        pick = torch.cat([greedy, sampled.view(size, num_lists - 1)], dim=1)  # (B, K)
        placed.scatter_(2, pick[..., None], True)
        picks.append(pick)
    return torch.stack(picks, dim=2)  # (B, K, L)
