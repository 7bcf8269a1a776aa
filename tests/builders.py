"""Builders shared by the test modules: the one place a test module imports helpers from.

No test module imports another test module; whatever two folders (or two modules) share lives
here: small prepared datasets in the exact on-disk format of goalrank.data.storage, random
ranking batches, brute-force list enumeration, exact toy generator/evaluator models, the model
families the contract tests are parametrised over, and tiny logs and settings.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from goalrank.data.storage import SPLITS, RankingBatch, Split, SplitSource, write_prepared
from goalrank.groups import GroupConfig
from goalrank.objectives.base import Objective, ObjectiveInputs
from goalrank.objectives.reference import ReferenceConfig
from goalrank.runs.registry import MODELS

if TYPE_CHECKING:
    import polars as pl

N_ITEMS = 30  # the catalogue make_batch draws item ids from unless told otherwise
N_USERS = 10  # logged batches draw users from [0, N_USERS)


def random_split(rng: np.random.Generator, size: int, n_items: int, n_candidates: int,
                 list_len: int, history_len: int) -> dict[str, np.ndarray]:
    """Random but valid samples: distinct candidates, exposed positions, labels only on exposed."""
    candidates = np.stack([rng.choice(np.arange(1, n_items + 1), n_candidates, replace=False) for _ in range(size)])
    exposed = np.stack([rng.choice(n_candidates, list_len, replace=False) for _ in range(size)])
    labels = np.zeros((size, n_candidates), dtype=np.int8)
    np.put_along_axis(labels, exposed, rng.integers(0, 2, (size, list_len)), axis=1)
    history = rng.integers(0, n_items + 1, (size, history_len))
    return {
        "users": rng.integers(0, N_USERS, size),
        "timestamps": np.arange(size),
        "history": history,
        "history_labels": (history > 0) * rng.integers(0, 2, (size, history_len)),
        "candidates": candidates,
        "labels": labels,
        "exposed": exposed,
    }


def tiny_dataset(root: Path, n_items: int = 30, n_candidates: int = 8, list_len: int = 3,
                 history_len: int = 5, sizes: tuple[int, int, int] = (64, 16, 16), seed: int = 0,
                 simulator: str | None = None) -> Path:
    """A prepared dataset of random lists; a real log unless ``simulator`` names the world folder
    its manifest records (what makes it simulator data to the code; the folder is not read)."""
    rng = np.random.default_rng(seed)
    splits = {name: SplitSource(size, [random_split(rng, size, n_items, n_candidates, list_len, history_len)])
              for name, size in zip(SPLITS, sizes)}
    manifest = {"n_users": N_USERS, "n_items": n_items, "list_len": list_len,
                "n_candidates": n_candidates, "history_len": history_len,
                **({"simulator": simulator} if simulator else {})}
    return write_prepared(root, splits, np.arange(10), np.arange(-1, n_items), manifest)


def collect(chunks: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate the chunks of ``goalrank.data.lists.sample_chunks`` into whole arrays."""
    chunks = list(chunks)
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


# --- ranking batches and lists -------------------------------------------------------------------


def make_batch(size: int, n_candidates: int, list_len: int, *, n_items: int = N_ITEMS, history_len: int = 4,
               seed: int = 0, new_user: bool = True, logged: bool = True) -> RankingBatch:
    """``size`` ranking requests, a pure function of the arguments (the same seed, the same batch).

    Every batch, B = size, N = n_candidates, L = list_len, H = history_len, L <= N <= n_items:
    candidates (B, N) are distinct item ids in [1, n_items] within each request; exposed (B, L)
    are distinct positions in [0, N); labels (B, N) are float, 0 or 1, and 0 off the exposed
    positions; history (B, H) holds item ids in [0, n_items], 0 being padding, and
    history_labels (B, H) are 0 or 1, and 0 wherever history is padding; every tensor but labels
    is int64.

    logged=True (the rankers' and the reward model's tests): ``random_split`` drawn from
    ``np.random.default_rng(seed)``: random histories and history labels, random exposed
    positions with random labels, users in [0, 10). With ``new_user``, request 0 is then made a
    new user (all-padding history, zero history labels); nothing else changes.

    logged=False (the toy generators and evaluators of groups/ and objectives/): requests with no
    logs: candidates drawn by ``torch.randperm`` from ``torch.Generator().manual_seed(seed)``, an
    all-padding history, every label 0, exposed = positions 0..L−1, users = 0..B−1; ``new_user``
    changes nothing (every request already is one).
    """
    if not logged:
        rng = torch.Generator().manual_seed(seed)
        candidates = torch.stack([torch.randperm(n_items, generator=rng)[:n_candidates] + 1 for _ in range(size)])
        return RankingBatch(
            users=torch.arange(size),
            history=torch.zeros(size, history_len, dtype=torch.long),
            history_labels=torch.zeros(size, history_len, dtype=torch.long),
            candidates=candidates,
            labels=torch.zeros(size, n_candidates),
            exposed=torch.arange(list_len).expand(size, -1).clone(),
        )
    arrays = random_split(np.random.default_rng(seed), size, n_items, n_candidates, list_len, history_len)
    if new_user:
        arrays["history"][0] = 0
        arrays["history_labels"][0] = 0
    return Split("test", arrays).batch(slice(None))


def all_lists(n_candidates: int, list_len: int, size: int | None = None) -> torch.Tensor:
    """Every ordered list of ``list_len`` distinct positions out of ``n_candidates``, by brute force.

    Enumerated by ``itertools.permutations``, independently of the code under test, in
    lexicographic order: K = N!/(N−L)! distinct rows, each of L distinct positions in [0, N).
    (K, L) when ``size`` is None; otherwise (size, K, L), the same lists for each of ``size``
    requests, as an expanded view (read it; do not write to it).
    """
    lists = torch.tensor(list(itertools.permutations(range(n_candidates), list_len)))
    return lists if size is None else lists.expand(size, -1, -1)


# --- exact toy models of the ListGenerator and ListEvaluator protocols ---------------------------


class PlackettLuce(nn.Module):
    """Each item id has one learnable logit (a linear layer on one-hot item ids).

    A list's probability is the Plackett–Luce product Π_t exp(s_{l_t}) / Σ_{j unused} exp(s_j), so
    log_prob, greedy decoding (top-L by logit) and sampling (Gumbel-top-k) are all exact.
    """

    def __init__(self, num_items: int, list_len: int, seed: int = 0) -> None:
        super().__init__()
        self.list_len = list_len
        self.item_logit = nn.Embedding(num_items + 1, 1)
        nn.init.normal_(self.item_logit.weight, generator=torch.Generator().manual_seed(seed))

    def encode(self, batch: RankingBatch) -> torch.Tensor:
        return self.item_logit(batch.candidates).squeeze(-1)  # (B, N)

    def first_step_logits(self, encoding: torch.Tensor) -> torch.Tensor:
        return encoding

    def step_log_probs(self, encoding: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        num_lists, length = lists.shape[1:]
        logits = encoding[:, None].expand(-1, num_lists, -1)  # (B, K, N)
        used = torch.zeros(logits.shape, dtype=torch.bool)
        steps = []
        for t in range(length):
            step = logits.masked_fill(used, -torch.inf).log_softmax(dim=2)
            steps.append(step.gather(2, lists[:, :, t : t + 1]).squeeze(2))
            used = used.scatter(2, lists[:, :, t : t + 1], True)
        return torch.stack(steps, dim=2)  # (B, K, T)

    def log_prob(self, encoding: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        return self.step_log_probs(encoding, lists).sum(dim=2)

    def next_log_probs(self, encoding: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
        logits = encoding[:, None].expand(-1, prefixes.shape[1], -1)  # (B, P, N)
        used = torch.zeros(logits.shape, dtype=torch.bool).scatter(2, prefixes, True)
        return logits.masked_fill(used, -torch.inf).log_softmax(dim=2)

    def decode(self, encoding, num_lists, greedy=False, temperature=1.0, rng=None, prefix=None):
        size, n_cand = encoding.shape
        if prefix is None:
            prefix = torch.zeros(size, num_lists, 0, dtype=torch.long)
        keys = (encoding[:, None] / temperature).expand(-1, num_lists, -1)  # (B, K, N)
        if not greedy:
            u = torch.rand(keys.shape, generator=rng).clamp_min(1e-30)
            keys = keys - torch.log(-torch.log(u))
        keys = keys.masked_fill(torch.zeros(keys.shape, dtype=torch.bool).scatter(2, prefix, True), -torch.inf)
        rest = keys.topk(self.list_len - prefix.shape[2], dim=2).indices
        return torch.cat([prefix, rest], dim=2)


class PairwiseReward:
    """r(l) = Σ_t value[l_t] + Σ_t interaction[l_t, l_{t+1}] over the listed item ids."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        rng = torch.Generator().manual_seed(seed)
        self.value = torch.randn(num_items + 1, generator=rng)
        self.interaction = torch.randn(num_items + 1, num_items + 1, generator=rng)

    def list_reward(self, batch: RankingBatch, lists: torch.Tensor) -> torch.Tensor:
        size, num_lists, length = lists.shape
        items = batch.candidates.gather(1, lists.reshape(size, -1)).view(size, num_lists, length)
        return self.value[items].sum(2) + self.interaction[items[:, :, :-1], items[:, :, 1:]].sum(2)


# --- the registry's model families, which the contract tests are parametrised over ---------------

# Registered models with a test module of their own instead of a family's contract tests.
OWN_TESTS = {"goalrank": "tests/models/test_goalrank.py"}
# Built around the trained reward model: tests/models/test_baselines_ge.py.
GENERATOR_EVALUATOR = [name for name, spec in MODELS.items() if spec.needs_evaluator]
# Every other registered model: tests/models/test_baselines_gonly.py.
GENERATOR_ONLY = [name for name, spec in MODELS.items() if not spec.needs_evaluator and name not in OWN_TESTS]


def objective_for(name: str, model: nn.Module) -> Objective:
    """The objective the registry trains model ``name`` with (its evaluator if it has one)."""
    evaluator = model.evaluator if MODELS[name].needs_evaluator else None
    popularity = torch.arange(model.config.n_items + 1).float()  # the popularity policy's input
    inputs = ObjectiveInputs(model, evaluator, GroupConfig(), ReferenceConfig(), torch.Generator().manual_seed(0),
                             popularity=popularity, seed=0)
    return MODELS[name].objective.build(inputs)


# --- tiny logs and settings ----------------------------------------------------------------------

TWO_TASTE_USERS, TWO_TASTE_ITEMS = 40, 30


def two_taste_log(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Even users like items 1..15, odd users items 16..30: each user has 8 positives in their half.

    TWO_TASTE_USERS users, TWO_TASTE_ITEMS items; returns the (user, item) positive pairs.
    """
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(TWO_TASTE_USERS):
        half = np.arange(1, 16) if user % 2 == 0 else np.arange(16, 31)
        users += [user] * 8
        items += rng.choice(half, 8, replace=False).tolist()
    return np.array(users), np.array(items)


def reference_lists(frame: pl.DataFrame, list_len: int, history_len: int):
    """Per user: stable sort by time, chunks of list_len, context = last H rows strictly earlier."""
    out = []
    rows = list(frame.iter_rows(named=True))
    for user in sorted({r["user"] for r in rows}):
        mine = sorted((r for r in rows if r["user"] == user), key=lambda r: r["timestamp"])
        for lo in range(0, len(mine) - list_len + 1, list_len):
            chunk = mine[lo : lo + list_len]
            before = [r for r in mine if r["timestamp"] < chunk[0]["timestamp"]][-history_len:]
            pad = [0] * (history_len - len(before))
            out.append((user, [r["item"] for r in chunk], [r["label"] for r in chunk],
                        pad + [r["item"] for r in before], pad + [r["label"] for r in before]))
    return out


# `goalrank benchmark` settings for one tiny end-to-end run (simulator of 60 users, 2 training
# steps per model, d_model 8), shared by the benchmark and --estimate tests.
BENCHMARK_TINY = [
    "simulate.n_users=60", "simulate.n_items=40", "simulate.sessions_per_user=5", "simulate.list_len=3",
    "prepare.list_len=3", "prepare.kcore=2", "prepare.n_candidates=8", "prepare.history_len=5",
    "prepare.retriever.epochs=1", "reward.model.d_model=8", "reward.train.max_steps_per_epoch=2",
    "ranker.model.d_model=8", "ranker.train.max_steps_per_epoch=2", "ranker.group.group_size=4",
    "group_sizes=2,4", "reward_noises=0,0.5", "scaling_sizes=4x1,8x2", "scaling_generators=3",
    "beam_width=2", "bootstrap_samples=200",
]


def run_tiny_benchmark(out: Path, *extra: str) -> int:
    """``goalrank benchmark --profile quick`` on the BENCHMARK_TINY world, seed 0; its exit code."""
    from goalrank.cli import main

    argv = ["benchmark", "--out", str(out), "--profile", "quick", "--seeds", "0", *extra]
    return main(argv + [arg for item in BENCHMARK_TINY for arg in ("--set", item)])
