"""The evaluation protocol: run any Ranker over a split and report the paper's five metrics.

On a simulator-backed dataset it also reports the ground truth the paper cannot observe: the
exact expected reward of each ranker's list under the known user-response model, the reward of
the best list found by a wide beam search over the same candidates, and their ratio.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
import torch
from tqdm.auto import tqdm

from goalrank.data.storage import PreparedDataset, RankingBatch, Split
from goalrank.evaluate.metrics import MetricAccumulator
from goalrank.models.base import Ranker
from goalrank.simulate.simulator import Simulator

TRUE_REWARD = "true_reward"  # the exact expected reward of the ranker's lists (simulator data only)
ORACLE_RATIO = "oracle_ratio"  # its ratio to the beam-search oracle's


def simulator_for(dataset: PreparedDataset) -> Simulator | None:
    """The Simulator behind a dataset prepared from `goalrank simulate` logs, else None."""
    folder = dataset.manifest.get("simulator")
    return Simulator.load(Path(folder)) if folder else None


class TrueReward:
    """Exact expected list reward of ranked lists under the simulator, in raw-id space.

    The oracle's total reward over a split does not depend on the ranker, so it is computed once
    per (split, list length) and kept: a benchmark that evaluates many rankers on one dataset
    reuses one TrueReward and pays for the beam search once, not once per ranker.
    """

    def __init__(self, simulator: Simulator, dataset: PreparedDataset, beam_width: int) -> None:
        self.simulator = simulator
        self.user_raw = torch.from_numpy(np.array(dataset.user_raw_ids))
        self.item_raw = torch.from_numpy(np.array(dataset.item_raw_ids))
        self.beam_width = beam_width
        self._oracle_totals: dict[tuple[str, int], float] = {}

    def raw(self, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw user ids (B,) and raw candidate item ids (B, N) of a batch."""
        return self.user_raw[batch.users.cpu()], self.item_raw[batch.candidates.cpu()]

    def of_lists(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) true reward of lists (B, K, L) of candidate positions."""
        users, candidates = self.raw(batch)
        items = torch.gather(candidates, 1, lists.cpu().flatten(1)).view(lists.shape)
        return self.simulator.list_reward(users, items)

    def best(self, batch: RankingBatch, list_len: int) -> torch.Tensor:
        """(B,) reward of the best list found by beam search."""
        users, candidates = self.raw(batch)
        return self.simulator.best_lists(users, candidates, list_len, beam_width=self.beam_width)[1]

    def oracle_total(self, split: Split, list_len: int, batch_size: int) -> float:
        """Sum over ``split``'s lists of the best list's reward (``best``), computed once per split."""
        key = (split.name, list_len)
        if key not in self._oracle_totals:
            self._oracle_totals[key] = sum(self.best(batch, list_len).sum().item()
                                           for batch in split.batches(batch_size))
        return self._oracle_totals[key]


@torch.no_grad()
def evaluate_ranker(
    ranker: Ranker,
    split: Split,
    batch_size: int,
    device: torch.device,
    true_reward: TrueReward | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Five metrics over every list of ``split`` (and true/oracle reward when ``true_reward`` given)."""
    ranker.eval()
    metrics = MetricAccumulator()
    reward_sum = logged_sum = 0.0
    batches = split.batches(batch_size)
    total = -(-len(split) // batch_size)
    for batch in tqdm(batches, total=total, desc=f"evaluate {split.name}", leave=False, disable=not progress):
        batch = batch.to(device)
        output = ranker.rank(batch)
        metrics.update(output.lists, output.scores, batch.labels)
        if true_reward is not None:
            reward_sum += true_reward.of_lists(batch, output.lists[:, None]).sum().item()
            logged_sum += true_reward.of_lists(batch, batch.exposed[:, None]).sum().item()
    result = metrics.compute()
    if true_reward is not None:
        n = len(split)
        oracle_sum = true_reward.oracle_total(split, output.lists.shape[1], batch_size)
        result.update({TRUE_REWARD: reward_sum / n, "logged_true_reward": logged_sum / n,
                       "oracle_reward": oracle_sum / n, ORACLE_RATIO: reward_sum / oracle_sum})
    return result
