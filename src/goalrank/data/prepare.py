"""`goalrank prepare`: a raw interaction log becomes a prepared dataset (paper §4.1.1, App. D.1).

load (``loaders``) → k-core filter (``filtering``) → dense ids → cut each user's history into
exposed lists of L items with their context (``lists``) → global temporal split (``split``) →
train the MF retriever on interactions before the validation cut (``goalrank.retrieval.mf``) →
N candidates per list → stream the samples into the folder, written atomically (``storage.write_prepared``).

User indices are 0..U-1 and item indices 1..I, both in sorted order of the raw ids (0 pads).
The output is a pure function of the config and the input bytes: one seed drives the retriever
and the candidate shuffles, so preparing twice gives bit-identical arrays.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from goalrank.config import PAPER_LIST_LEN, check, to_dict
from goalrank.data.filtering import kcore
from goalrank.data.lists import (
    ConsumedBefore,
    Lists,
    MatchedNegatives,
    NegativeSampler,
    RetrievedNegatives,
    UserLog,
    cut_lists,
    sample_chunks,
)
from goalrank.data.loaders import KuaiRandLabel, Source, load_log, source_files
from goalrank.data.split import TemporalSplit, temporal_split
from goalrank.data.storage import SPLITS, PreparedDataset, SplitSource, write_prepared
from goalrank.errors import ArtifactError, DataError
from goalrank.io import check_target, read_json, sha256_file, target_lock
from goalrank.retrieval.mf import RetrieverConfig, train_bpr
from goalrank.retrieval.search import retrieve
from goalrank.simulate.folder import SimulatorFolder

STATS_COLUMNS = ("users", "items", "interactions", "lists")


@dataclass
class PrepareConfig:
    """How a log becomes ranking samples.

    Label rule: ``min_positive_rating`` makes a rated interaction (MovieLens, Amazon) positive
    when rating >= it; ``kuairand_positive`` picks KuaiRand's positive column (long_view, the
    paper's signal, or is_click). Generic and simulator logs carry their own 0/1 label.
    ``chunk_size`` lists are built and written at a time, which bounds the working memory.
    ``list_len`` (L) 0, the default, takes a simulator folder's session length for simulator logs
    and the paper's L = 6 for other logs; a simulator log's lists are its sessions, so any other
    value for one is rejected (cutting 6-item lists across 8-item sessions would mix sessions).

    candidates: how the N - L non-exposed candidates of a list are chosen. ``retrieved`` is the
    paper's construction (§4.1.1): the user's best items of the MF retriever. It lets a
    non-personalised shortcut reach the metrics' top: an item's training share of appearances in
    which it was exposed predicts exposure (on ML-100K it ties GoalRank). ``matched`` draws them
    like exposures instead (``data.lists.MatchedNegatives``: ∝ each item's exposures in the list's
    time window, ``match_windows`` windows), so that exposure propensity carries no label.
    ``auto``: ``retrieved`` for simulator logs (whose complete labels and true reward measure
    preference directly), ``matched`` for every other source.
    exclude_consumed: never offer as a non-exposed candidate an item the user had before the list
    (``matched`` only). ``auto``: yes with ``matched`` candidates for sources where an item is
    consumed once (movielens, amazon), no otherwise.
    """

    source: Source
    input: str
    min_positive_rating: float = 4.0
    kuairand_positive: KuaiRandLabel = "long_view"
    kcore: int = 20
    list_len: int = 0
    n_candidates: int = 50
    history_len: int = 50
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    seed: int = 0
    chunk_size: int = 65536
    candidates: Literal["auto", "matched", "retrieved"] = "auto"
    exclude_consumed: Literal["auto", "yes", "no"] = "auto"
    match_windows: int = 20
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)

    def __post_init__(self) -> None:
        sources = typing.get_args(Source)
        check(self.source in sources, "source", f"one of {list(sources)}", self.source)
        labels = typing.get_args(KuaiRandLabel)
        check(self.kuairand_positive in labels, "kuairand_positive", f"one of {list(labels)}",
              self.kuairand_positive)
        check(bool(str(self.input)), "input", "a log file or folder", self.input)
        check(np.isfinite(self.min_positive_rating), "min_positive_rating", "a finite number",
              self.min_positive_rating)
        check(self.kcore >= 1, "kcore", "an integer >= 1", self.kcore)
        check(self.list_len >= 0, "list_len", "an integer >= 1, or 0 for the default", self.list_len)
        self.list_len = _resolve_list_len(self.source, self.input, self.list_len)
        check(self.n_candidates > self.list_len, "n_candidates", f"more than list_len={self.list_len}",
              self.n_candidates)
        check(self.history_len >= 1, "history_len", "an integer >= 1", self.history_len)
        check(0 < self.test_fraction < 1, "test_fraction", "a number in (0, 1)", self.test_fraction)
        check(0 < self.valid_fraction < 1, "valid_fraction", "a number in (0, 1)", self.valid_fraction)
        check(self.chunk_size >= 1, "chunk_size", "an integer >= 1", self.chunk_size)
        check(self.match_windows >= 1, "match_windows", "an integer >= 1", self.match_windows)
        if self.candidates == "auto":
            self.candidates = "retrieved" if self.source == "simulator" else "matched"
        if self.exclude_consumed == "auto":
            self.exclude_consumed = "yes" if self.candidates == "matched" and self.source in CONSUMED_ONCE else "no"
        check(self.candidates == "matched" or self.exclude_consumed == "no", "exclude_consumed",
              "no with candidates=retrieved (the paper's construction is kept as it is)", self.exclude_consumed)


CONSUMED_ONCE = ("movielens", "amazon")  # sources where a user rates or reviews an item once


def _resolve_list_len(source: str, log: str, list_len: int) -> int:
    """The list length L of a log: a simulator folder's own session length, else ``list_len`` or the paper's."""
    if source != "simulator":
        return list_len or PAPER_LIST_LEN
    manifest = SimulatorFolder(Path(log)).manifest
    if not manifest.is_file():
        raise DataError(f"{manifest}: not found; expected a `goalrank simulate` folder as input")
    sessions = int(read_json(manifest)["config"]["list_len"])
    check(list_len in (0, sessions), "list_len", f"0 or {sessions}, the session length of the simulator "
          f"folder {log} (its lists are its sessions)", list_len)
    return sessions


def prepare(config: PrepareConfig, out_dir: Path | str, overwrite: bool = False) -> PreparedDataset:
    """Prepare the dataset of ``config`` into ``out_dir``; nothing is left there if any step fails.

    The output is checked and its lock taken before any work, so a second ``prepare`` of the same
    folder fails at its start rather than after hours of work.
    """
    out = Path(out_dir)
    check_target(out, overwrite)  # before the work: write_prepared checks again under the folder's lock
    if Path(config.input).resolve().is_relative_to(out.resolve()):
        raise ArtifactError(f"{out}: holds the input {config.input}; write the prepared dataset elsewhere")
    with target_lock(out):
        return _prepare(config, out, overwrite)


def _prepare(config: PrepareConfig, out: Path, overwrite: bool) -> PreparedDataset:
    log = load_log(config.source, config.input, config.min_positive_rating, config.kuairand_positive)
    sessions = None
    if config.source == "simulator":  # its lists are its sessions: the filter keeps or drops them whole
        log = log.sort(["user", "timestamp"], maintain_order=True).with_columns(
            session=pl.int_range(pl.len()).over("user") // config.list_len)
        sessions = ["user", "session"]
    log, core = kcore(log, config.kcore, whole=sessions)
    if log.height == 0:
        raise DataError(f"{config.input}: no interactions left after {config.kcore}-core filtering "
                        f"(of {core.interactions_before}); lower kcore")
    user_raw_ids, item_raw_ids, log = _dense_ids(log)
    n_users, n_items = user_raw_ids.shape[0], item_raw_ids.shape[0] - 1
    if n_items < config.n_candidates:
        raise DataError(f"{config.input}: {n_items} distinct items after {config.kcore}-core filtering, "
                        f"fewer than n_candidates={config.n_candidates}")
    user_log = UserLog.from_frame(log)
    del log
    lists = cut_lists(user_log, config.list_len)
    if len(lists) == 0:
        raise DataError(f"{config.input}: no user has {config.list_len} interactions to form a list")
    split = temporal_split(user_log.timestamps[lists.starts],
                           user_log.timestamps[lists.starts + config.list_len - 1],
                           config.test_fraction, config.valid_fraction)

    retriever_seed, shuffle_seed = np.random.SeedSequence(config.seed).generate_state(2)
    negatives: NegativeSampler
    if config.candidates == "retrieved":
        known = (user_log.timestamps < split.t_valid) & (user_log.labels == 1)
        model, loss = train_bpr(user_log.users[known], user_log.items[known], n_users, n_items,
                                config.retriever, int(retriever_seed))
        retrieved, search = retrieve(model, config.n_candidates, config.retriever, int(retriever_seed))  # (U, N)
        negatives = RetrievedNegatives(retrieved)
        retriever: dict[str, Any] | None = {"train_positives": int(known.sum()), "final_loss": loss, **search}
    else:
        consumed = ConsumedBefore(user_log, n_items) if config.exclude_consumed == "yes" else None
        matched = MatchedNegatives(user_log, n_items, config.match_windows, consumed)
        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for lo in range(0, len(lists), config.chunk_size):
                rows = lists.rows(slice(lo, lo + config.chunk_size))  # (C, L)
                yield user_log.users[rows[:, 0]], user_log.timestamps[rows[:, 0]], user_log.items[rows]

        calibration_seed = np.random.SeedSequence(config.seed).generate_state(3)[2]
        matched.calibrate(chunks, config.n_candidates - config.list_len, np.random.default_rng(calibration_seed))
        negatives, retriever = matched, None
    rng = np.random.default_rng(shuffle_seed)
    splits = {  # lazy: the chunks are built while write_prepared streams them to disk, in this order
        name: SplitSource(split.index[name].shape[0], sample_chunks(
            user_log, lists, split.index[name], negatives, config.history_len, config.n_candidates, rng,
            config.chunk_size, desc=name))
        for name in SPLITS
    }
    manifest = {
        "config": to_dict(config),
        "seed": config.seed,
        "source": config.source,
        "source_checksums": {str(p): sha256_file(p) for p in source_files(config.source, config.input)},
        "n_users": n_users,
        "n_items": n_items,
        "list_len": config.list_len,
        "n_candidates": config.n_candidates,
        "history_len": config.history_len,
        "kcore": core.to_dict(),
        "lists": {"cut": lists.cut, "repeated_item_dropped": lists.repeats_dropped,
                  "straddling_dropped": split.straddling},
        "cuts": {"t_valid": split.t_valid, "t_test": split.t_test},
        "retriever": retriever,
        "stats": split_stats(user_log, lists, split),
    }
    if config.source == "simulator":
        manifest["simulator"] = str(Path(config.input).resolve())
        manifest["simulator_sha256"] = sha256_file(SimulatorFolder(Path(config.input)).manifest)
    write_prepared(out, splits, user_raw_ids, item_raw_ids, manifest, overwrite=overwrite, locked=True)
    return PreparedDataset(out)


def split_stats(log: UserLog, lists: Lists, split: TemporalSplit) -> dict[str, dict[str, int]]:
    """App. D.1's table per split and in total: users, items and interactions of the log within
    the split's time window, and the number of lists (samples) in the split."""
    windows = {"train": (None, split.t_valid), "valid": (split.t_valid, split.t_test),
               "test": (split.t_test, None)}
    stats = {}
    for name, (lo, hi) in windows.items():
        inside = np.ones(len(log), dtype=bool)
        if lo is not None:
            inside &= log.timestamps >= lo
        if hi is not None:
            inside &= log.timestamps < hi
        stats[name] = _counts(log.users[inside], log.items[inside], split.index[name].shape[0])
    stats["total"] = _counts(log.users, log.items, sum(stats[name]["lists"] for name in windows))
    return stats


@dataclass
class StatsConfig:
    """`goalrank stats`: the dataset folder, and whether to check its array checksums first."""

    dataset: str
    verify: bool = True


def format_stats(manifest: dict[str, Any]) -> str:
    """The statistics table of a prepared dataset (paper App. D.1) and what preparation dropped."""
    missing = [key for key in ("stats", "kcore", "lists", "cuts") if key not in manifest]
    if missing:
        raise ArtifactError(f"manifest lacks {missing} (not written by `goalrank prepare`?)")
    lines = ["| split | " + " | ".join(STATS_COLUMNS) + " |", "|---" + "|---:" * len(STATS_COLUMNS) + "|"]
    for name in (*SPLITS, "total"):
        row = manifest["stats"][name]
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:,}" for c in STATS_COLUMNS) + " |")
    core, lists, cuts = manifest["kcore"], manifest["lists"], manifest["cuts"]
    lines += [
        "",
        f"{core['k']}-core filtering: {core['rounds']} round(s), dropped {core['users_dropped']:,} users, "
        f"{core['items_dropped']:,} items, {core['interactions_dropped']:,} interactions",
        f"lists: {lists['cut']:,} cut, {lists['repeated_item_dropped']:,} with a repeated item dropped, "
        f"{lists['straddling_dropped']:,} straddling a time cut dropped",
        f"time cuts: valid from t={cuts['t_valid']}, test from t={cuts['t_test']} "
        "(users/items/interactions: the log inside each split's time window)",
    ]
    candidates = manifest.get("config", {}).get("candidates", "retrieved")
    lines.append(f"non-exposed candidates: {candidates}" + (
        ", exposure-matched in time windows" if candidates == "matched" else ", the retriever's best items"))
    retriever = manifest.get("retriever") or {}
    if retriever.get("search") == "hnsw":
        lines.append(f"candidates: HNSW search, recall@{manifest['n_candidates']} "
                     f"{retriever['recall_at_k']:.4f} against exact search on {retriever['recall_users']:,} users")
    return "\n".join(lines)


def _counts(users: np.ndarray, items: np.ndarray, n_lists: int) -> dict[str, int]:
    return {"users": int(np.count_nonzero(np.bincount(users))),
            "items": int(np.count_nonzero(np.bincount(items))),
            "interactions": int(users.shape[0]), "lists": int(n_lists)}


def _dense_ids(log: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """Raw ids → user indices 0..U-1 and item indices 1..I (sorted raw order); the raw-id arrays."""
    user_raw_ids = log["user"].unique().sort().to_numpy()
    item_raw_ids = np.r_[-1, log["item"].unique().sort().to_numpy()]
    log = log.with_columns(
        (pl.col("user").rank("dense") - 1).cast(pl.Int64),
        pl.col("item").rank("dense").cast(pl.Int64),
    )
    return user_raw_ids, item_raw_ids, log
