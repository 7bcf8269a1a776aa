"""Exposure logs of the simulated world: what a noisy, biased production ranker showed, and the feedback.

Each user has ``sessions_per_user`` sessions. A session shows L items drawn by a logging policy,
the Plackett-Luce (Gumbel-top-L) sample over the whole catalogue with logits

    s(u, i) = (a(u, i) + logging_popularity · b_i) / logging_temperature,

kept in sampled order (over a per-user pool of ``logging_pool`` uniformly drawn items
instead of the whole catalogue when that is set, for catalogues too large to score per session):
informative (it prefers items the user likes) yet biased towards popular
items and blind to position and category effects, like a real logging policy. Labels are drawn
from the true model, label_k ~ Bernoulli(p_k) (see ``simulator``). A session starting at time t
occupies timestamps t, t+1, ..., t+L-1; session starts are spread uniformly over
[0, time_span) with gaps of at least L, so each user's timestamps strictly increase and a global
time cut splits users' sessions between train and test.

Randomness is counter-based: user u reads a fixed block of uniforms at offset u of one Philox
stream, so the logs are identical whatever ``chunk_users`` is, and chunks can be generated
independently with bounded memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from goalrank.config import to_dict
from goalrank.io import atomic_dir, sha256_file, write_json
from goalrank.simulate.folder import SimulatorFolder
from goalrank.simulate.simulator import FORMAT_VERSION, SimConfig, Simulator

SCHEMA = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64()),
                    ("label", pa.int8())])
PHILOX_OUTPUTS_PER_STEP = 4  # one Philox counter step yields four 64-bit outputs (four doubles)


def write_logs(simulator: Simulator, config: SimConfig, path: Path) -> dict[str, int]:
    """Write ``interactions.parquet`` chunk by chunk of users; return counts for the manifest."""
    _, log_seed = np.random.SeedSequence(config.seed).spawn(2)
    exposures = np.zeros(config.n_items, dtype=np.int64)
    positives = 0
    firsts = range(0, config.n_users, config.chunk_users)
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for first in tqdm(firsts, desc="simulate", unit="chunk", leave=False):
            users = torch.arange(first, min(first + config.chunk_users, config.n_users))
            table = session_table(simulator, config, users, log_seed)
            writer.write_table(table)
            exposures += np.bincount(table["item"].to_numpy(), minlength=config.n_items)
            positives += int(table["label"].to_numpy().sum())
    sessions = config.n_users * config.sessions_per_user
    return {
        "users": config.n_users,
        "items": config.n_items,
        "sessions": sessions,
        "interactions": sessions * config.list_len,
        "positives": positives,
        "min_item_exposures": int(exposures.min()),
    }


def session_table(
    simulator: Simulator, config: SimConfig, users: torch.Tensor, log_seed: np.random.SeedSequence
) -> pa.Table:
    """All sessions of consecutive ``users`` (B,) as rows ordered by user, session, position."""
    n_sessions, length = config.sessions_per_user, config.list_len
    pool_size = config.logging_pool or config.n_items
    pool_draws = config.logging_pool  # uniforms that pick the pool; none for the whole catalogue
    uniforms = _user_uniforms(log_seed, int(users[0]), users.shape[0],
                              n_sessions * (pool_size + length + 1) + pool_draws)
    gumbel_u, label_u, time_u, pool_u = np.split(uniforms, np.cumsum(
        [n_sessions * pool_size, n_sessions * length, n_sessions]), 1)
    gumbel = -torch.log(-torch.log(torch.from_numpy(gumbel_u.reshape(-1, n_sessions, pool_size))))
    pool, duplicate = _logging_pool(config, users.shape[0], torch.from_numpy(pool_u))  # (B, P)
    popularity = config.logging_popularity * simulator.world.item_bias[pool]  # (B, P)
    logits = (simulator.affinity(users, pool) + popularity) / config.logging_temperature  # (B, P)
    logits = logits.masked_fill(duplicate, -torch.inf)
    picks = (logits[:, None, :] + gumbel).topk(length, dim=2).indices  # (B, S, L) in sampled order
    lists = pool.gather(1, picks.flatten(1)).view_as(picks)
    probs = simulator.click_probs(users, lists)  # (B, S, L)
    labels = torch.from_numpy(label_u.reshape(-1, n_sessions, length)) < probs  # (B, S, L)
    room = config.time_span - n_sessions * length + 1
    offsets = np.sort(np.floor(time_u * room).astype(np.int64), axis=1)  # (B, S)
    starts = offsets + np.arange(n_sessions) * length  # consecutive starts at least L apart
    timestamps = starts[..., None] + np.arange(length)  # (B, S, L)
    return pa.table({
        "user": np.repeat(users.numpy(), n_sessions * length),
        "item": lists.flatten().numpy(),
        "timestamp": timestamps.reshape(-1),
        "label": labels.flatten().numpy().astype(np.int8),
    }, schema=SCHEMA)


def _logging_pool(config: SimConfig, n_users: int, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) items the logging policy draws from and (B, P) True where an item repeats in its row.

    The whole catalogue when ``logging_pool`` is 0; else P items drawn uniformly with replacement
    per user, sorted, with repeats masked (a list can repeat an item only if the pool holds fewer
    than L distinct items, and `prepare` drops such lists).
    """
    if not config.logging_pool:
        return torch.arange(config.n_items).expand(n_users, -1), torch.zeros(n_users, config.n_items, dtype=torch.bool)
    pool = (uniforms * config.n_items).long().clamp_(max=config.n_items - 1).sort(dim=1).values
    duplicate = torch.zeros_like(pool, dtype=torch.bool)
    duplicate[:, 1:] = pool[:, 1:] == pool[:, :-1]
    return pool, duplicate


def _user_uniforms(seed: np.random.SeedSequence, first: int, n_users: int, per_user: int) -> np.ndarray:
    """(n_users, per_user) uniforms in [0, 1): user u's block starts at counter u · stride."""
    stride = -(-per_user // PHILOX_OUTPUTS_PER_STEP)
    bit_generator = np.random.Philox(seed)
    bit_generator.advance(first * stride)
    block = np.random.Generator(bit_generator).random((n_users, stride * PHILOX_OUTPUTS_PER_STEP))
    return block[:, :per_user]


def simulate(config: SimConfig, out_dir: Path | str, overwrite: bool = False) -> Path:
    """Draw the world and its logs; write world.npz, interactions.parquet, manifest.json atomically.

    Output is a pure function of ``config``: byte-identical files for the same config, and the
    same rows whatever ``chunk_users`` (only the parquet row groups differ), so a dataset prepared
    from it can always be traced back to its world.
    """
    simulator = Simulator.from_config(config)
    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        files = SimulatorFolder(tmp)
        simulator.world.save(files.world)
        counts = write_logs(simulator, config, files.interactions)
        checksums = {path.name: sha256_file(path) for path in (files.interactions, files.world)}
        write_json(files.manifest, {
            "format_version": FORMAT_VERSION,
            "config": to_dict(config),
            "seed": config.seed,
            "counts": counts,
            "checksums": checksums,
        })
    return out
