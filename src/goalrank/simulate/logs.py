"""Exposure logs of the simulated world: what a noisy, biased production ranker showed, and the feedback.

Each user has ``sessions_per_user`` sessions. A session shows L items drawn by a logging policy,
the Plackett-Luce (Gumbel-top-L) sample over the whole catalogue with logits

    s(u, i) = (a(u, i) + logging_popularity · b_i) / logging_temperature,

kept in sampled order: informative (it prefers items the user likes) yet biased towards popular
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
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from goalrank.simulate.simulator import SimConfig, Simulator

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
    n_sessions, length, n_items = config.sessions_per_user, config.list_len, config.n_items
    uniforms = _user_uniforms(log_seed, int(users[0]), users.shape[0], n_sessions * (n_items + length + 1))
    gumbel_u, label_u, time_u = np.split(uniforms, [n_sessions * n_items, n_sessions * (n_items + length)], 1)
    gumbel = -torch.log(-torch.log(torch.from_numpy(gumbel_u.reshape(-1, n_sessions, n_items))))  # (B, S, I)
    catalogue = torch.arange(n_items).expand(users.shape[0], -1)  # (B, I)
    popularity = config.logging_popularity * simulator.world.item_bias  # (I,)
    logits = (simulator.affinity(users, catalogue) + popularity) / config.logging_temperature  # (B, I)
    lists = (logits[:, None, :] + gumbel).topk(length, dim=2).indices  # (B, S, L) in sampled order
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


def _user_uniforms(seed: np.random.SeedSequence, first: int, n_users: int, per_user: int) -> np.ndarray:
    """(n_users, per_user) uniforms in [0, 1): user u's block starts at counter u · stride."""
    stride = -(-per_user // PHILOX_OUTPUTS_PER_STEP)
    bit_generator = np.random.Philox(seed)
    bit_generator.advance(first * stride)
    block = np.random.Generator(bit_generator).random((n_users, stride * PHILOX_OUTPUTS_PER_STEP))
    return block[:, :per_user]
