"""DNN (Covington et al., 2016): the item-wise generator-only baseline (paper §4.1.2, App. D.2).

Each candidate is scored independently from its embedding and the user vector by an MLP, and the
list is the top-L by score. It sees no other candidate, so it cannot model list context: the
baseline that shows what list-wise modelling adds. Choice left open by the paper: the user
vector comes from the shared history encoder (blocks.UserContextEncoder), crossed with each item
by the shared blocks.FeatureCross, then an MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ItemwiseRanker
from goalrank.models.blocks import FeatureCross, ModelConfig, UserContextEncoder, item_embedding


@dataclass
class DNNConfig(ModelConfig):
    """hidden_layers: depth of the per-item MLP."""

    hidden_layers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden_layers >= 1, "model.hidden_layers", ">= 1", self.hidden_layers)


class DNNRanker(ItemwiseRanker):
    """Item-wise MLP scorer; ``rank`` sorts candidates by score."""

    def __init__(self, config: DNNConfig) -> None:
        super().__init__(config.list_len)
        self.config = config
        width = config.d_model
        self.items = item_embedding(config.n_items, width)
        self.context = UserContextEncoder(self.items, config.n_heads, config.history_layers, config.ffn_mult,
                                          config.dropout)
        self.cross = FeatureCross(width)
        layers: list[nn.Module] = []
        inputs = width
        for _ in range(config.hidden_layers):
            layers += [nn.Linear(inputs, width * config.ffn_mult // 2), nn.GELU(), nn.Dropout(config.dropout)]
            inputs = width * config.ffn_mult // 2
        self.mlp = nn.Sequential(*layers, nn.Linear(inputs, 1))

    def score(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) logits of each candidate being a positive."""
        user = self.context(batch.history, batch.history_labels).user  # (B, D)
        features = self.cross(self.items(batch.candidates), user)  # (B, N, D)
        return self.mlp(features).squeeze(-1)  # (B, N)
