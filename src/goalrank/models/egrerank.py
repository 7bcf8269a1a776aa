"""EGRerank (Huzhang et al., 2021): a generator trained by RL to please the evaluator (paper §4.1.2).

The generator is GoalRank's autoregressive network (models/goalrank.py), so the two differ only in
how they learn: EGRerank samples K lists per request from its own policy, scores them with the
shared frozen evaluator and follows the policy gradient (REINFORCE) of the expected evaluator
reward, with advantages normalised per request (the K samples' rewards minus their mean, divided
by their standard deviation); a supervised term on the logged list keeps the policy near the lists
the evaluator was fitted on. Ranking is greedy.

Why normalised: the reward gaps among one request's samples are small (measured on the default
simulator world: raw advantages of mean size 0.05), so with raw advantages the REINFORCE term was
3 % of the gradient against the supervised term and EGRerank was behaviour cloning of the logged
list. Dividing by the per-request spread gives every request's samples unit-scale advantages, as
GoalRank's group-relative normalisation does (Eq. 4), so the comparison is between the two ways of
using the same rewards.

Out of scope: the original's discriminator, trained to tell logged from generated lists so that
the evaluator's estimates stay honest away from the logs. Here the supervised term is the only
pull towards logged lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.models.base import ListEvaluator, attach_evaluator, group_standardised
from goalrank.models.goalrank import Encoding, GeneratorConfig, GoalRankGenerator


@dataclass
class EGRerankConfig(GeneratorConfig):
    """GoalRank's generator fields plus the policy-gradient knobs.

    num_samples: K lists sampled per request for REINFORCE (≥ 2: the baseline is their mean).
    temperature: sampling temperature of those lists; 1 samples from π_θ itself (exact REINFORCE),
        other values explore more or less at the price of a biased gradient.
    supervised_weight: weight of −log π_θ(logged list), as in GoalRank's ReferenceConfig; 3 on a
        real log (``train.run.REAL_LOG_DEFAULTS``, the tuning study's pick on ML-100K).
    user_embedding: off, unlike GoalRank's default: the tuning study chose it for GoalRank alone,
        and EGRerank's own study kept its earlier defaults (docs/results.md).
    """

    user_embedding: bool = False
    num_samples: int = 8
    temperature: float = 1.0
    supervised_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_samples >= 2, "model.num_samples", ">= 2 (the baseline is their mean)",
              self.num_samples)
        check(self.temperature > 0, "model.temperature", "> 0", self.temperature)
        check(self.supervised_weight >= 0, "model.supervised_weight", ">= 0", self.supervised_weight)


class EGRerank(GoalRankGenerator):
    """GoalRank's generator with a REINFORCE ``training_loss`` against the frozen evaluator.

    The evaluator is attached with ``attach_evaluator``: not in the state dict, never trained.
    ``rank`` is the inherited greedy decoding.
    """

    evaluator: ListEvaluator  # set by attach_evaluator

    def __init__(self, config: EGRerankConfig, evaluator: ListEvaluator) -> None:
        super().__init__(config)
        self.config: EGRerankConfig = config
        attach_evaluator(self, evaluator)

    def policy_gradient_loss(
        self, batch: RankingBatch, encoding: Encoding, rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """REINFORCE surrogate −mean A(l) log π_θ(l) over K sampled lists (``group_standardised`` rewards);
        their rewards (B, K).

        Lists are sampled without gradients and re-scored by teacher forcing in one pass, so the
        gradient is that of the exact log π_θ(l) (Eq. 6) of each sampled list.
        """
        with torch.no_grad():
            lists = self.decode(encoding, self.config.num_samples, temperature=self.config.temperature,
                                rng=rng)  # (B, K, L)
            rewards = self.evaluator.list_reward(batch, lists)  # (B, K)
        advantages = group_standardised(rewards)  # (B, K)
        log_probs = self.log_prob(encoding, lists)  # (B, K)
        return -(advantages * log_probs).mean(), rewards

    def training_loss(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy-gradient loss plus the weighted logged-list likelihood (objective "self_trained").

        Sampling draws from torch's global generator, which the run seeds from ``train.seed``.
        """
        encoding = self.encode(batch)
        loss, rewards = self.policy_gradient_loss(batch, encoding)
        stats = {"sampled_reward": rewards.mean().item()}
        if self.config.supervised_weight > 0:
            logged = -self.log_prob(encoding, batch.exposed[:, None])[:, 0].mean()  # −mean log π_θ(logged list)
            loss = loss + self.config.supervised_weight * logged
            stats["supervised"] = logged.item()
        return loss, stats

