"""The evaluation protocol: run any Ranker over a split and report the paper's five metrics.

On a simulator-backed dataset it reports three groups of figures:

- the five metrics on the logged labels (only exposed candidates can be positive: the paper's
  protocol);
- the five metrics on complete labels (``complete_`` keys): every candidate of every list gets a
  label drawn once from the simulator, Bernoulli(p₁(u, i)) with p₁ the item's own click
  probability at the first slot of a list, without list effects. The draw is keyed by (dataset
  seed, user, item), so it is the same for every ranker and every run;
- the ground truth the paper cannot observe: the exact expected reward of each ranker's list
  under the known user-response model, the reward of the best list found by a wide beam search
  over the same candidates, and their ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from goalrank.data.storage import PreparedDataset, RankingBatch, Split
from goalrank.errors import ArtifactError, ConfigError
from goalrank.evaluate.metrics import MetricAccumulator
from goalrank.hashing import SPLITMIX_MULTIPLIERS, splitmix64
from goalrank.io import sha256_file
from goalrank.models.base import Ranker
from goalrank.progress import progress as show_progress
from goalrank.simulate.folder import SimulatorFolder
from goalrank.simulate.simulator import Simulator

COMPLETE = "complete_"  # key prefix of the metrics on complete labels
TRUE_REWARD = "true_reward"  # the exact expected reward of the ranker's lists (simulator data only)
ORACLE_RATIO = "oracle_ratio"  # its ratio to the beam-search oracle's


def simulator_for(dataset: PreparedDataset) -> Simulator | None:
    """The Simulator behind a dataset prepared from `goalrank simulate` logs, else None.

    The world must be the one the dataset was prepared from: its manifest's SHA-256 is recorded at
    ``prepare``, so a world simulated again in the same folder is refused, not used silently.
    """
    folder = dataset.simulator_world
    if not folder:
        return None
    recorded, world_manifest = dataset.manifest.get("simulator_sha256"), SimulatorFolder(Path(folder)).manifest
    if recorded is not None and world_manifest.is_file() and sha256_file(world_manifest) != recorded:
        raise ArtifactError(f"{folder}: not the simulator world {dataset.root} was prepared from (its manifest "
                            "changed since); prepare the dataset again from this world")
    return Simulator.load(Path(folder))


class TrueReward:
    """Exact expected list reward of ranked lists under the simulator, in raw-id space.

    The oracle's total reward over a split does not depend on the ranker, so it is computed once
    per (split, list length) and kept: a benchmark that evaluates many rankers on one dataset
    reuses one TrueReward and pays for the beam search once, not once per ranker.
    """

    def __init__(self, simulator: Simulator, dataset: PreparedDataset, beam_width: int) -> None:
        self.simulator = simulator
        self.label_seed = int(dataset.manifest["seed"])
        self.user_raw = torch.from_numpy(np.array(dataset.user_raw_ids))
        self.item_raw = torch.from_numpy(np.array(dataset.item_raw_ids))
        self.beam_width = beam_width
        self._oracle_totals: dict[tuple[str, int, int], float] = {}

    def raw(self, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw user ids (B,) and raw candidate item ids (B, N) of a batch."""
        return self.user_raw[batch.users.cpu()], self.item_raw[batch.candidates.cpu()]

    def of_lists(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) true reward of lists (B, K, L) of candidate positions."""
        users, candidates = self.raw(batch)
        items = torch.gather(candidates, 1, lists.cpu().flatten(1)).view(lists.shape)
        return self.simulator.list_reward(users, items)

    def complete_labels(self, batch: RankingBatch) -> torch.Tensor:
        """(B, N) a 0/1 label for every candidate: Bernoulli(first-slot click probability), drawn once.

        The uniform of (user, item) is a hash of (dataset seed, raw user, raw item), so a pair has
        one label wherever it appears and the labels are reproducible for a seed.
        """
        users, candidates = self.raw(batch)
        probs = self.simulator.click_probs(users, candidates[..., None])[..., 0]  # (B, N) one-item lists
        uniform = _hash_uniform(self.label_seed, users[:, None].expand_as(candidates), candidates)
        return (uniform < probs).to(batch.labels.dtype).to(batch.labels.device)

    def best(self, batch: RankingBatch, list_len: int) -> torch.Tensor:
        """(B,) reward of the best list found by beam search."""
        users, candidates = self.raw(batch)
        return self.simulator.best_lists(users, candidates, list_len, beam_width=self.beam_width)[1]

    def oracle_total(self, split: Split, list_len: int, batch_size: int) -> float:
        """Sum over ``split``'s lists of the best list's reward (``best``), computed once per split."""
        key = (split.name, len(split), list_len)
        if key not in self._oracle_totals:
            self._oracle_totals[key] = sum(self.best(batch, list_len).sum().item()
                                           for batch in split.batches(batch_size))
        return self._oracle_totals[key]


def exact_reward(dataset: PreparedDataset, what: str) -> TrueReward:
    """The simulator's exact list reward of ``dataset`` (a beam-1 oracle, enough for ``of_lists``),
    for ``what`` (the option that needs it); ConfigError on a dataset of real logs."""
    simulator = simulator_for(dataset)
    if simulator is None:
        raise ConfigError(f"{what}: needs a dataset prepared from `goalrank simulate` logs; {dataset.root} is not")
    return TrueReward(simulator, dataset, beam_width=1)


class OracleEvaluator:
    """The simulator's exact expected list reward as the evaluator (``--reward oracle``).

    The exact-reward diagnostic: GoalRank's groups and every generator–evaluator baseline are
    scored by the truth instead of a learned reward model, which separates what a method's
    generator and objective can reach from what the reward model's errors let it reach
    (Theorem 1 assumes an exact reward). Implements ``ListEvaluator``; it has no parameters.
    """

    def __init__(self, true_reward: TrueReward) -> None:
        self.true_reward = true_reward

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) exact reward of lists (B, K, T), as float32 on the lists' device."""
        return self.true_reward.of_lists(batch, lists).to(device=lists.device, dtype=torch.float32)


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
    metrics, complete = MetricAccumulator(), MetricAccumulator()
    reward_sum = logged_sum = 0.0
    batches = split.batches(batch_size)
    total = -(-len(split) // batch_size)
    for batch in show_progress(batches, f"evaluate {split.name}", total, "batch", enabled=progress):
        batch = batch.to(device)
        output = ranker.rank(batch)
        metrics.update(output.lists, output.scores, batch.labels)
        if true_reward is not None:
            complete.update(output.lists, output.scores, true_reward.complete_labels(batch))
            reward_sum += true_reward.of_lists(batch, output.lists[:, None]).sum().item()
            logged_sum += true_reward.of_lists(batch, batch.exposed[:, None]).sum().item()
    result = metrics.compute()
    if true_reward is not None:
        n = len(split)
        oracle_sum = true_reward.oracle_total(split, output.lists.shape[1], batch_size)
        result.update({f"{COMPLETE}{key}": value for key, value in complete.compute().items()})
        result.update({TRUE_REWARD: reward_sum / n, "logged_true_reward": logged_sum / n,
                       "oracle_reward": oracle_sum / n, ORACLE_RATIO: reward_sum / oracle_sum})
    return result


def _hash_uniform(seed: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) from a splitmix64 hash of (seed, user, item): counter-based, order-free."""
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             + users.numpy().astype(np.uint64) * SPLITMIX_MULTIPLIERS[0]
             + items.numpy().astype(np.uint64) * SPLITMIX_MULTIPLIERS[1]) & mask
        x = splitmix64(x)
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / float(1 << 53))
