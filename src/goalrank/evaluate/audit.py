"""`goalrank audit`: a fixed panel of reference rankers that need no training, scored by the protocol.

An offline protocol is only worth its comparisons if it tells a good ranker from a bad one. The
panel shows where a dataset's floor and ceiling lie and whether a shortcut that knows nothing of
the user's taste can reach the top:

- ``random``: a seeded uniform order of the candidates (the floor);
- ``popularity``: the item's positives in the training split (a non-personalised baseline);
- ``exposure_rate``: the share of the item's training appearances as a candidate in which it was
  the exposed item — a shortcut: it scores how the candidate set was built, not preference;
- ``not_in_history``: 1 when the candidate is not among the user's history items — a shortcut;
- ``exposed_first``: the exposed items first, in slot order (an exposure oracle, for scale: it
  reads the exposed positions, which no ranker may);
- ``logged``: the logged list itself, in the order it was shown (what the logging policy earned);
- on simulator data, ``itemwise_oracle`` (the true affinity a(u, i) of each candidate) and
  ``list_oracle`` (the beam-search best list under the exact list reward).

Beside the panel, ``RewardBeam`` ranks by a trained reward model's own beam search (the
benchmark's ``reward_beam`` row): not an audit ranker, as it needs a trained model, but a
reference of the same kind — the best of the lists the reward model puts into GoalRank's groups,
i.e. how good the reward model's own preferences are.

Each is a ``Ranker`` evaluated by ``evaluate_ranker``, the code every trained method goes
through, so the figures are directly comparable with Table 1. A ranker's list is its top L
candidates by score, ties broken by candidate slot (candidates are shuffled per sample at
``prepare``); AUC counts tied scores one half.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from goalrank.config import check
from goalrank.data.storage import PreparedDataset, RankingBatch, Split, SplitName
from goalrank.evaluate.metrics import AUC
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.groups.auxiliary import RewardBeamPolicy, reward_beam_search, single_item_rewards
from goalrank.io import write_rows_json
from goalrank.models.base import ListEvaluator, Ranker, RankOutput, bound_evaluator, scores_from_lists
from goalrank.simulate.simulator import MAX_BEAM_WIDTH, ORACLE_BEAM_WIDTH

SHORTCUTS = ("exposure_rate", "not_in_history")  # non-personalised rankers that must not rank well
SHORTCUT_AUC_LIMIT = 0.55  # `prepare` warns when a shortcut's validation AUC exceeds it, or 1 minus it
SHORTCUT_LISTS = 200_000  # lists of each split `prepare`'s check reads, evenly spaced: seconds at any size
STATS_CHUNK = 65536  # training samples counted at a time


@dataclass
class AuditConfig:
    """`goalrank audit`: the dataset, the split, where to write the table as JSON ("": nowhere), the
    random ranker's seed, the batch size and the list oracle's beam width (simulator data)."""

    data: str
    split: SplitName = "test"
    json: str = ""
    seed: int = 0
    batch_size: int = 512
    beam_width: int = ORACLE_BEAM_WIDTH

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        check(1 <= self.beam_width <= MAX_BEAM_WIDTH, "beam_width", f"in [1, {MAX_BEAM_WIDTH}]", self.beam_width)


class ScoreRanker(Ranker):
    """A ranker defined by one score per candidate: its list is the top L, ties to the earlier slot."""

    def __init__(self, list_len: int, score: Callable[[RankingBatch], torch.Tensor]) -> None:
        super().__init__(list_len)
        self.score = score

    def rank(self, batch: RankingBatch) -> RankOutput:
        scores = self.score(batch).float()  # (B, N)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return RankOutput(lists=order[:, : self.list_len], scores=scores)


class LoggedList(Ranker):
    """The exposed list in its logged order; the other candidates tie below it."""

    def rank(self, batch: RankingBatch) -> RankOutput:
        base = torch.zeros(batch.candidates.shape, device=batch.labels.device)
        return RankOutput(lists=batch.exposed, scores=scores_from_lists(batch.exposed, base))


class ListOracle(Ranker):
    """The beam-search best list under the simulator's exact reward; the rest ordered by true affinity."""

    def __init__(self, list_len: int, true_reward: TrueReward) -> None:
        super().__init__(list_len)
        self.true_reward = true_reward

    def rank(self, batch: RankingBatch) -> RankOutput:
        users, candidates = self.true_reward.raw(batch)
        positions, _ = self.true_reward.simulator.best_lists(users, candidates, self.list_len,
                                                              beam_width=self.true_reward.beam_width)
        affinity = self.true_reward.simulator.affinity(users, candidates)
        return RankOutput(lists=positions, scores=scores_from_lists(positions, affinity))


class RewardBeam(Ranker):
    """The best list of the reward model's own beam search (``RewardBeamPolicy``'s, the group's
    ``reward_beam`` policy); the other candidates ordered by their one-item reward (for AUC)."""

    def __init__(self, list_len: int, evaluator: ListEvaluator, beam: RewardBeamPolicy) -> None:
        super().__init__(list_len)
        self.evaluator = evaluator
        self.beam = beam

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> RankOutput:
        evaluator = bound_evaluator(self.evaluator, batch)  # the user side once for the search's calls
        lists = reward_beam_search(evaluator, batch, self.list_len, self.beam.beam_width, self.beam.top, 1)[:, 0]
        one_item = single_item_rewards(evaluator, batch).float()  # (B, N)
        return RankOutput(lists=lists, scores=scores_from_lists(lists, one_item))


@dataclass(frozen=True)
class ItemStats:
    """Per item of the catalogue (index 0 is padding): training positives, exposures, candidate appearances."""

    positives: np.ndarray
    exposures: np.ndarray
    appearances: np.ndarray

    @classmethod
    def of(cls, split: Split, n_items: int) -> ItemStats:
        positives, exposures, appearances = (np.zeros(n_items + 1, dtype=np.int64) for _ in range(3))
        candidates_all, labels_all, exposed_all = (split.arrays[key] for key in ("candidates", "labels", "exposed"))
        for lo in range(0, len(split), STATS_CHUNK):
            candidates = np.asarray(candidates_all[lo : lo + STATS_CHUNK], dtype=np.int64)  # (C, N)
            labels = np.asarray(labels_all[lo : lo + STATS_CHUNK])
            shown = np.take_along_axis(candidates, np.asarray(exposed_all[lo : lo + STATS_CHUNK], dtype=np.int64), 1)
            appearances += np.bincount(candidates.ravel(), minlength=n_items + 1)
            exposures += np.bincount(shown.ravel(), minlength=n_items + 1)
            positives += np.bincount(candidates.ravel(), weights=labels.ravel(), minlength=n_items + 1).astype(np.int64)
        return cls(positives, exposures, appearances)

    @property
    def exposure_rate(self) -> np.ndarray:
        return self.exposures / np.maximum(self.appearances, 1)


def reference_rankers(dataset: PreparedDataset, true_reward: TrueReward | None, seed: int = 0,
                      train_lists: int | None = None) -> dict[str, Ranker]:
    """The panel, in report order; the two oracles only on simulator data. The item statistics
    come from the training split (``train_lists`` evenly spaced lists of it when given)."""
    train = dataset.split("train")
    stats = ItemStats.of(train if train_lists is None else train.spread(train_lists), dataset.n_items)
    list_len = dataset.list_len
    generator = torch.Generator().manual_seed(seed)

    def lookup(values: np.ndarray) -> Callable[[RankingBatch], torch.Tensor]:
        table = torch.from_numpy(values.astype(np.float64))
        return lambda batch: table[batch.candidates.cpu()].to(batch.labels.device)

    def random_scores(batch: RankingBatch) -> torch.Tensor:
        return torch.rand(batch.candidates.shape, generator=generator).to(batch.labels.device)

    def not_in_history(batch: RankingBatch) -> torch.Tensor:
        seen = (batch.candidates[:, :, None] == batch.history[:, None, :]).any(dim=2)  # (B, N); history pads are 0
        return (~seen).float()

    def exposed_first(batch: RankingBatch) -> torch.Tensor:
        return torch.zeros(batch.candidates.shape, device=batch.labels.device).scatter(1, batch.exposed, 1.0)

    panel: dict[str, Ranker] = {
        "random": ScoreRanker(list_len, random_scores),
        "popularity": ScoreRanker(list_len, lookup(stats.positives)),
        "exposure_rate": ScoreRanker(list_len, lookup(stats.exposure_rate)),
        "not_in_history": ScoreRanker(list_len, not_in_history),
        "exposed_first": ScoreRanker(list_len, exposed_first),
        "logged": LoggedList(list_len),
    }
    if true_reward is not None:
        oracle = true_reward

        def affinity(batch: RankingBatch) -> torch.Tensor:
            users, candidates = oracle.raw(batch)
            return oracle.simulator.affinity(users, candidates).to(batch.labels.device)

        panel["itemwise_oracle"] = ScoreRanker(list_len, affinity)
        panel["list_oracle"] = ListOracle(list_len, true_reward)
    return panel


def audit(config: AuditConfig) -> list[dict[str, float | str]]:
    """Every panel ranker's metrics on ``config.split``: one row each, keys as `goalrank evaluate` names them."""
    dataset = PreparedDataset(config.data)
    simulator = simulator_for(dataset)
    true_reward = TrueReward(simulator, dataset, config.beam_width) if simulator is not None else None
    split = dataset.split(config.split)
    rows: list[dict[str, float | str]] = []
    for name, ranker in reference_rankers(dataset, true_reward, config.seed).items():
        metrics = evaluate_ranker(ranker, split, config.batch_size, torch.device("cpu"), true_reward, progress=False)
        rows.append({"ranker": name, **metrics})
    if config.json:  # strict JSON: an undefined metric (no list had a positive) is null, not NaN
        strict = [{key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}
                  for row in rows]
        write_rows_json(Path(config.json), strict)
    return rows


def shortcut_aucs(dataset: PreparedDataset, split: SplitName = "valid") -> dict[str, float]:
    """Logged-label AUC of each non-personalised shortcut on ``split`` (`prepare`'s warning), from
    ``SHORTCUT_LISTS`` evenly spaced lists of the training split and of ``split``."""
    panel = reference_rankers(dataset, None, train_lists=SHORTCUT_LISTS)
    lists = dataset.split(split).spread(SHORTCUT_LISTS)
    return {name: evaluate_ranker(panel[name], lists, AuditConfig.batch_size, torch.device("cpu"), progress=False)[AUC]
            for name in SHORTCUTS}


def format_audit(rows: list[dict[str, float | str]]) -> str:
    """Markdown table: one row per reference ranker, the metric columns `goalrank evaluate` prints."""
    keys = [key for key in rows[0] if key != "ranker" and "n_lists" not in key]
    lines = ["| ranker | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {row['ranker']} | " + " | ".join(f"{float(row[key]):.4f}" for key in keys) + " |" for row in rows]
    return "\n".join(lines)


def shortcut_warning(dataset: PreparedDataset) -> str | None:
    """One warning line when a non-personalised shortcut separates validation positives from
    negatives beyond ``SHORTCUT_AUC_LIMIT`` either way (a score far below 0.5 is a shortcut too:
    its reverse ranks well); None otherwise. `prepare` and the benchmark print it."""
    leaks = {name: auc for name, auc in shortcut_aucs(dataset).items() if max(auc, 1 - auc) > SHORTCUT_AUC_LIMIT}
    if not leaks:
        return None
    found = ", ".join(f"{name} {auc:.3f}" for name, auc in leaks.items())
    return (f"warning: non-personalised shortcuts reach validation AUC above {SHORTCUT_AUC_LIMIT} or below "
            f"{1 - SHORTCUT_AUC_LIMIT:.2f} ({found}): the labels leak through how candidates were built; see "
            f"`goalrank audit {dataset.root}`")
