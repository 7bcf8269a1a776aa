"""Exposure logs of the simulated world: what a production ranker showed, and the feedback.

Each user has ``sessions_per_user`` sessions of L items chosen by the logging policy
``SimConfig.logging_policy`` from the whole catalogue, or from a per-user pool of ``logging_pool``
items drawn uniformly with replacement (repeats masked) when that is set, for catalogues too large
to score per session. Labels are drawn from the true model, label_k ~ Bernoulli(p_k) (see
``simulator``). A session starting at time t occupies timestamps t, t+1, ..., t+L-1; session
starts are spread uniformly over [0, time_span) with gaps of at least L, so each user's
timestamps strictly increase and a global time cut splits users' sessions between train and test.

``production`` (default): an item-wise ranker that knows the user imperfectly, knows the item
bias and ignores position and category effects, plus a little exploration. With
ρ = production_correlation, T = production_temperature, ε = production_exploration and
K = production_dedup_sessions:

    ê_u       = ρ·e_u + √(1-ρ²)·ξ_u,   ξ_u ~ N(0, D^-1/2 · I_D)    its view of user u
    s(u, i)   = affinity_scale · ê_u·v_i + b_i                    its score
    A(u, t)   = items not shown to u in its K previous sessions nor earlier in this list
    slot k    = with probability ε a uniform item of A(u, t), else the next item of the
                Plackett-Luce order of softmax(s(u, ·) / T) restricted to A(u, t)

ξ_u is a fixed draw per user, so ê_u is distributed as e_u and, over users and items,
corr(ê_u·v_i, e_u·v_i) = ρ and corr(s, a) = (ρ·affinity_scale² + Var b)/(affinity_scale² + Var b).
Sessions are generated in time order. When fewer than L items remain in A(u, t) at a session's
start (a small pool), that session ignores the K previous sessions.

Re-exposure: K = 0 by default, so the ranker re-shows what it showed before, as a ranker with
fixed scores does, and an exposed item is much more often in the user's recent history than a
retriever candidate (on the default world's test split: 71 % of exposed items, 20 % of the
others, within the last 50 interactions). Never re-showing (K ≥ sessions_per_user - 1, as feeds
over a large catalogue de-duplicate) was measured and rejected for this world: 20 sessions of 6
use 24 % of its 500 items, so late sessions reach deep into the ranking and the logged test lists
fall to 0.73-0.76 x the true reward of random lists of the candidates (world seeds 0-2), and
"in history" only flips into an exact sign of non-exposure (0 % of exposed items against 24 %).
K is kept for worlds whose catalogue is large enough to de-duplicate.

``popularity`` (the earlier default, kept so old figures reproduce bit for bit): per session the
Plackett-Luce (Gumbel-top-L) sample of

    softmax((a(u, i) + logging_popularity · b_i) / logging_temperature)

kept in sampled order, re-showing items freely. It prefers items the user likes yet is biased
towards popular items and so soft that its lists are worse than random lists of the retriever's
candidates.

Randomness is counter-based: user u reads a fixed block of uniforms at offset u of one Philox
stream (and ξ_u from a block of a second one), so the logs are identical whatever
``chunk_users`` is, and chunks can be generated independently with bounded memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from goalrank.config import to_dict
from goalrank.io import atomic_dir, sha256_file, write_json
from goalrank.progress import progress
from goalrank.simulate.folder import SimulatorFolder
from goalrank.simulate.simulator import FORMAT_VERSION, SimConfig, Simulator

SCHEMA = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64()),
                    ("label", pa.int8())])
PHILOX_OUTPUTS_PER_STEP = 4  # one Philox counter step yields four 64-bit outputs (four doubles)
TINY_UNIFORM = 2.0 ** -53  # Philox doubles lie in [0, 1); Φ⁻¹(0) would be -inf


def write_logs(simulator: Simulator, config: SimConfig, path: Path) -> dict[str, int]:
    """Write ``interactions.parquet`` chunk by chunk of users; return counts for the manifest."""
    exposures = np.zeros(config.n_items, dtype=np.int64)
    positives = 0
    firsts = range(0, config.n_users, config.chunk_users)
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for first in progress(firsts, desc="simulate", unit="chunk"):
            users = torch.arange(first, min(first + config.chunk_users, config.n_users))
            table = session_table(simulator, config, users)
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


def session_table(simulator: Simulator, config: SimConfig, users: torch.Tensor) -> pa.Table:
    """All sessions of consecutive ``users`` (B,) as rows ordered by user, session, position."""
    n_users, n_sessions, length = users.shape[0], config.sessions_per_user, config.list_len
    layout = _uniform_layout(config)
    uniforms = _user_uniforms(_seeds(config)[0], int(users[0]), n_users, sum(layout.values()))
    parts = dict(zip(layout, np.split(uniforms, np.cumsum(list(layout.values()))[:-1], 1), strict=True))
    pool, duplicate = _logging_pool(config, n_users, torch.from_numpy(parts["pool"]))  # (B, P)
    gumbel = -torch.log(-torch.log(torch.from_numpy(parts["gumbel"].reshape(n_users, n_sessions, -1))))
    if config.logging_policy == "popularity":
        picks = _popularity_picks(simulator, config, users, pool, duplicate, gumbel)
    else:
        scores = production_scores(simulator, config, users, pool)  # (B, P)
        explore = torch.from_numpy(parts["explore"].reshape(n_users, n_sessions, length))
        explore_pick = torch.from_numpy(parts["explore_pick"].reshape(n_users, n_sessions, length))
        picks = _production_picks(config, scores, duplicate, gumbel, explore, explore_pick)
    lists = pool.gather(1, picks.flatten(1)).view_as(picks)  # (B, S, L) item ids in shown order
    probs = simulator.click_probs(users, lists)  # (B, S, L)
    labels = torch.from_numpy(parts["label"].reshape(n_users, n_sessions, length)) < probs  # (B, S, L)
    room = config.time_span - n_sessions * length + 1
    offsets = np.sort(np.floor(parts["time"] * room).astype(np.int64), axis=1)  # (B, S)
    starts = offsets + np.arange(n_sessions) * length  # consecutive starts at least L apart
    timestamps = starts[..., None] + np.arange(length)  # (B, S, L)
    return pa.table({
        "user": np.repeat(users.numpy(), n_sessions * length),
        "item": lists.flatten().numpy(),
        "timestamp": timestamps.reshape(-1),
        "label": labels.flatten().numpy().astype(np.int8),
    }, schema=SCHEMA)


def _seeds(config: SimConfig) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """The Philox seeds of the sessions and of the production ranker's view of users.

    Children 1 and 2 of the config seed; child 0 draws the world (``Simulator.from_config``).
    """
    _, sessions, view = np.random.SeedSequence(config.seed).spawn(3)
    return sessions, view


def _uniform_layout(config: SimConfig) -> dict[str, int]:
    """How many uniforms of a user's block each use reads, in block order.

    The popularity policy's layout is the one its logs were first written with, so they stay
    byte-identical; the production policy adds two per slot (whether to explore, which item).
    """
    n_sessions, length = config.sessions_per_user, config.list_len
    pool_size = config.logging_pool or config.n_items
    explore = {} if config.logging_policy == "popularity" else {
        "explore": n_sessions * length, "explore_pick": n_sessions * length}
    return {"gumbel": n_sessions * pool_size, **explore, "label": n_sessions * length,
            "time": n_sessions, "pool": config.logging_pool}


def _popularity_picks(
    simulator: Simulator, config: SimConfig, users: torch.Tensor, pool: torch.Tensor,
    duplicate: torch.Tensor, gumbel: torch.Tensor,
) -> torch.Tensor:
    """(B, S, L) pool positions: per session the Gumbel-top-L of (a + popularity · b) / temperature."""
    popularity = config.logging_popularity * simulator.world.item_bias[pool]  # (B, P)
    logits = (simulator.affinity(users, pool) + popularity) / config.logging_temperature  # (B, P)
    logits = logits.masked_fill(duplicate, -torch.inf)
    return (logits[:, None, :] + gumbel).topk(config.list_len, dim=2).indices  # (B, S, L) in sampled order


def ranker_view(config: SimConfig, user_embedding: torch.Tensor, first: int) -> torch.Tensor:
    """(B, D) the production ranker's ê_u of consecutive users first, first+1, ... with e_u (B, D).

    ξ_u = D^-1/4 · Φ⁻¹(uniforms of user u's block of its own Philox stream) is drawn like e_u,
    so ê_u is distributed as e_u and corr(ê_u·v_i, e_u·v_i) = ρ, whatever the chunking.
    """
    n_users, dim = user_embedding.shape
    uniforms = torch.from_numpy(_user_uniforms(_seeds(config)[1], first, n_users, dim))
    noise = dim ** -0.25 * torch.special.ndtri(uniforms.clamp(min=TINY_UNIFORM))  # (B, D) ξ_u
    rho = config.production_correlation
    return rho * user_embedding + math.sqrt(1.0 - rho * rho) * noise


def production_scores(simulator: Simulator, config: SimConfig, users: torch.Tensor,
                      items: torch.Tensor) -> torch.Tensor:
    """(B, P) s(u, i) = affinity_scale · ê_u·v_i + b_i for consecutive users (B,) and items (B, P)."""
    world = simulator.world
    view = ranker_view(config, world.user_embedding[users], int(users[0]))  # (B, D)
    dot = (world.item_embedding[items] * view[:, None, :]).sum(-1)  # (B, P)
    return world.affinity_scale * dot + world.item_bias[items]


def _production_picks(
    config: SimConfig, scores: torch.Tensor, duplicate: torch.Tensor, gumbel: torch.Tensor,
    explore: torch.Tensor, explore_pick: torch.Tensor,
) -> torch.Tensor:
    """(B, S, L) pool positions of the production ranker's sessions, generated in time order.

    ``scores`` (B, P); ``gumbel`` (B, S, P); ``explore`` and ``explore_pick`` (B, S, L) uniforms.
    Reusing a session's keys s + temperature · gumbel for every slot is the Gumbel-top-L trick:
    the best key among the items still available follows the Plackett-Luce law, whichever items
    exploration removed before.
    """
    n_users, n_sessions, length = explore.shape
    rows = torch.arange(n_users)
    never = -1 - config.production_dedup_sessions  # a "last shown" that no window reaches
    last_shown = torch.full(duplicate.shape, never)  # (B, P) session an item was last shown in
    picks = torch.empty(n_users, n_sessions, length, dtype=torch.long)
    for session in range(n_sessions):
        unavailable = duplicate | (session - last_shown <= config.production_dedup_sessions)  # (B, P)
        exhausted = (~unavailable).sum(1) < length
        unavailable[exhausted] = duplicate[exhausted]
        keys = scores + config.production_temperature * gumbel[:, session]  # (B, P)
        for slot in range(length):
            exploit = keys.masked_fill(unavailable, -torch.inf).argmax(1)  # (B,)
            available = (~unavailable).cumsum(1)  # (B, P) available items at or before each position
            rank = (explore_pick[:, session, slot] * available[:, -1]).long()  # (B,) uniform in [0, n)
            uniform = (available > rank[:, None]).long().argmax(1)  # position of the rank-th available
            explored = explore[:, session, slot] < config.production_exploration
            choice = torch.where(explored, uniform, exploit)  # (B,)
            picks[:, session, slot] = choice
            unavailable[rows, choice] = True
            last_shown[rows, choice] = session
    return picks


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
