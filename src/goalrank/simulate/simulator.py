"""The ground-truth user-response simulator: a world whose list-wise reward is known exactly.

Real logs only reveal feedback on the lists that were shown, so the paper can never measure how
far a ranker is from the best list, nor its KL to the oracle policy π*(l|u) = exp(r(u,l)/α)/Z
(paper §3.2, Eq. 1-2). This simulator draws users, items and a list-wise response model from one
seed; every quantity the paper cannot observe is then exact.

The world (U users, I items, C categories, embedding size D):

    e_u ~ N(0, D^-1/2 · I_D)                                      user embedding
    v_i = √ρ · z_{c_i} + √(1-ρ) · n_i,   z_c, n_i ~ N(0, D^-1/2 · I_D)   item embedding
    c_i ~ Uniform{0..C-1}                                          item category
    b_i ~ N(popularity_mean, popularity_std²)                       item bias (popularity)
    M[c, c] = -saturation;  M[c, c'] = complement_strength with probability complement_fraction,
    else 0 (c ≠ c')                                                  category interaction

so e_u·v_i has unit variance and ρ = ``category_cohesion`` makes items of a category alike.

The response to a list l = (i_1, ..., i_T) shown to user u (positions k = 0..T-1):

    a(u, i)   = affinity_scale · e_u·v_i + b_i
    pos_k     = -position_decay · k                       (attention falls down the list)
    ctx_k     = Σ_{j<k} M[c_{i_j}, c_{i_k}]               (saturation / complementarity)
    p_k       = sigmoid(a(u, i_k) + pos_k + ctx_k)        chance of a positive at position k
    r(u, l)   = Σ_k w_k · p_k,   w_k = reward_discount^k  (default 1: expected number of positives)

p_k depends only on the items at positions ≤ k, so r is exact, and the reward of a prefix is
final: appending items never changes it. That makes beam search over prefix rewards sound
(``best_lists``) and lets small cases be solved by enumerating all N!/(N-L)! lists.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, fields
from itertools import permutations
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from goalrank.config import PAPER_LIST_LEN, check, check_finite
from goalrank.errors import ArtifactError, ConfigError, DataError
from goalrank.io import read_json, sha256_file
from goalrank.simulate.folder import SimulatorFolder

FORMAT_VERSION = 1
ORACLE_BEAM_WIDTH = 64  # default beam of the best-list search (exact on small N, tested)
MAX_INTERACTIONS = 10**10  # a simulated log's rows: beyond, the parquet file alone outgrows a disk
MAX_BEAM_WIDTH = 4096  # a beam holds B x W x N scores: 64 requests x 4,096 x 50 candidates is ~100 MB

LoggingPolicy = Literal["production", "popularity"]  # see goalrank.simulate.logs


@dataclass
class SimConfig:
    """World, response-model strengths, log sizes and the logging policy of ``goalrank simulate``.

    The defaults generate ~120k interactions (1,000 users x 20 sessions x L=6) in seconds, with
    every item shown often enough to survive a 20-core filter. Log size is
    n_users · sessions_per_user · list_len; ``chunk_users`` bounds memory
    (≈ 3 · chunk_users · sessions_per_user · pool float64 values, pool = ``logging_pool`` or
    n_items) and does not change the output. ``logging_pool`` > 0 makes the logging policy draw
    from a per-user pool of that many catalogue items instead of the whole catalogue: a large
    catalogue (the paper's industrial 0.3M items) then costs O(pool), not O(n_items), per session.

    logging_policy (formulas in ``goalrank.simulate.logs``): ``production`` (default), an
    item-wise ranker scoring s(u, i) = affinity_scale · ê_u·v_i + b_i with a noisy view
    ê_u = ρ·e_u + √(1-ρ²)·ξ_u of each user; a session is its Plackett-Luce sample at
    ``production_temperature`` (T), each slot replaced with probability ``production_exploration``
    (ε) by a uniformly random item, never re-showing the items of the user's previous
    ``production_dedup_sessions`` (K) sessions. ρ = ``production_correlation`` in [0, 1]: 1
    knows the user exactly, 0 only the item bias. The defaults (ρ = 0.85, T = 0.3, ε = 0.15,
    K = 0) put the logged lists' true reward on the default world's test split at about 1.2 x
    that of random lists of the candidates and 0.72 x the oracle's, with every item exposed at
    least 20 times (ε keeps unpopular items shown). ``popularity`` is the earlier default,
    softmax((a + logging_popularity · b) / logging_temperature), kept so that old figures
    reproduce bit for bit; its lists are worse than random ones.
    """

    seed: int = 0
    n_users: int = 1000
    n_items: int = 500
    n_categories: int = 10
    embedding_dim: int = 16
    category_cohesion: float = 0.5
    affinity_scale: float = 1.5
    popularity_mean: float = -1.0
    popularity_std: float = 0.5
    position_decay: float = 0.15
    saturation: float = 0.8
    complement_strength: float = 0.6
    complement_fraction: float = 0.2
    reward_discount: float = 1.0
    sessions_per_user: int = 20
    list_len: int = PAPER_LIST_LEN
    time_span: int = 10_000_000
    logging_policy: LoggingPolicy = "production"
    production_correlation: float = 0.85
    production_temperature: float = 0.3
    production_exploration: float = 0.15
    production_dedup_sessions: int = 0
    logging_temperature: float = 2.0
    logging_popularity: float = 1.0
    logging_pool: int = 0
    chunk_users: int = 1000

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "embedding_dim", "sessions_per_user",
                     "list_len", "chunk_users"):
            check(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        for name in ("seed", "production_dedup_sessions"):
            check(getattr(self, name) >= 0, name, "an integer >= 0", getattr(self, name))
        check(self.list_len <= self.n_items, "list_len", f"<= n_items={self.n_items}", self.list_len)
        check(self.logging_pool == 0 or self.list_len <= self.logging_pool <= self.n_items, "logging_pool",
              f"0 (whole catalogue) or in [list_len={self.list_len}, n_items={self.n_items}]",
              self.logging_pool)
        for name in ("category_cohesion", "complement_fraction"):
            check(0.0 <= getattr(self, name) <= 1.0, name, "a value in [0, 1]", getattr(self, name))
        for name in ("affinity_scale", "popularity_std", "position_decay", "saturation",
                     "complement_strength"):
            check(getattr(self, name) >= 0.0, name, "a value >= 0", getattr(self, name))
        for name in ("reward_discount", "logging_temperature", "production_temperature"):
            check(getattr(self, name) > 0.0, name, "a value > 0", getattr(self, name))
        policies = get_args(LoggingPolicy)
        check(self.logging_policy in policies, "logging_policy", f"one of {list(policies)}", self.logging_policy)
        for name in ("production_correlation", "production_temperature", "production_exploration"):
            check_finite(name, getattr(self, name))
        for name in ("production_correlation", "production_exploration"):
            check(0.0 <= getattr(self, name) <= 1.0, name, "a value in [0, 1]", getattr(self, name))
        interactions = self.n_users * self.sessions_per_user * self.list_len
        check(interactions <= MAX_INTERACTIONS, "n_users", f"at most {MAX_INTERACTIONS:.0e} interactions in all "
              f"(n_users · sessions_per_user · list_len = {interactions:.2e}; one parquet log of ~16 bytes a row)",
              self.n_users)
        sessions_len = self.sessions_per_user * self.list_len
        check(self.time_span >= sessions_len, "time_span",
              f">= sessions_per_user * list_len = {sessions_len} (room for strictly increasing times)",
              self.time_span)


@dataclass(frozen=True)
class World:
    """Every parameter of the response model; saved as ``world.npz`` (one array per field)."""

    user_embedding: torch.Tensor  # (U, D) float64
    item_embedding: torch.Tensor  # (I, D) float64
    item_bias: torch.Tensor  # (I,) float64
    item_category: torch.Tensor  # (I,) int64 in [0, C)
    interaction: torch.Tensor  # (C, C) float64: M[previous category, current category]
    affinity_scale: torch.Tensor  # () float64
    position_decay: torch.Tensor  # () float64
    reward_discount: torch.Tensor  # () float64

    @classmethod
    def sample(cls, config: SimConfig, rng: np.random.Generator) -> World:
        """Draw a world from ``rng`` following the formulas of the module docstring."""
        scale = config.embedding_dim ** -0.25  # e·v then has unit variance
        dim, n_cat = config.embedding_dim, config.n_categories
        users = rng.normal(0.0, scale, (config.n_users, dim))
        centres = rng.normal(0.0, scale, (n_cat, dim))
        category = rng.integers(0, n_cat, config.n_items)
        noise = rng.normal(0.0, scale, (config.n_items, dim))
        rho = config.category_cohesion
        items = math.sqrt(rho) * centres[category] + math.sqrt(1.0 - rho) * noise
        bias = rng.normal(config.popularity_mean, config.popularity_std, config.n_items)
        complementary = rng.random((n_cat, n_cat)) < config.complement_fraction
        interaction = np.where(complementary, config.complement_strength, 0.0)
        np.fill_diagonal(interaction, -config.saturation)
        return cls(
            user_embedding=torch.from_numpy(users),
            item_embedding=torch.from_numpy(items),
            item_bias=torch.from_numpy(bias),
            item_category=torch.from_numpy(category.astype(np.int64)),
            interaction=torch.from_numpy(interaction),
            affinity_scale=torch.tensor(config.affinity_scale, dtype=torch.float64),
            position_decay=torch.tensor(config.position_decay, dtype=torch.float64),
            reward_discount=torch.tensor(config.reward_discount, dtype=torch.float64),
        )

    def to(self, device: torch.device) -> World:
        return World(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def save(self, path: Path) -> None:
        """Write ``world.npz`` byte-for-byte reproducibly (fixed zip timestamps, no compression)."""
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for f in fields(self):
                info = zipfile.ZipInfo(f"{f.name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, getattr(self, f.name).numpy(), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> World:
        """Read and validate ``world.npz``; any defect is an ArtifactError naming the file."""
        names = [f.name for f in fields(cls)]
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = sorted(set(names) - set(archive.files))
                if missing:
                    raise ArtifactError(f"{path}: missing array(s) {missing}")
                arrays = {name: archive[name] for name in names}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"{path}: unreadable world archive ({exc})") from exc
        world = cls(**{name: torch.from_numpy(np.array(array)) for name, array in arrays.items()})
        world._validate(path)
        return world

    def _validate(self, path: Path) -> None:
        """Check dtypes, ranks and that the sizes U, I, D, C agree across arrays."""
        for f in fields(self):
            tensor = getattr(self, f.name)
            dtype = torch.int64 if f.name == "item_category" else torch.float64
            if tensor.dtype != dtype or tensor.dim() != _WORLD_RANKS[f.name]:
                raise ArtifactError(f"{path}: array {f.name!r} is {tensor.dim()}-d {tensor.dtype},"
                                    f" expected {_WORLD_RANKS[f.name]}-d {dtype}")
        n_items, dim = self.item_embedding.shape
        n_categories = self.interaction.shape[0]
        expected = {
            "user_embedding": (self.user_embedding.shape[0], dim),
            "item_bias": (n_items,),
            "item_category": (n_items,),
            "interaction": (n_categories, n_categories),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ArtifactError(f"{path}: array {name!r} has shape {tuple(getattr(self, name).shape)},"
                                    f" expected {shape}")
        category = self.item_category
        if n_items == 0 or category.min() < 0 or category.max() >= n_categories:
            raise ArtifactError(
                f"{path}: item_category must hold values in [0, {n_categories}) for >= 1 item"
            )


_WORLD_RANKS = {
    "user_embedding": 2, "item_embedding": 2, "item_bias": 1, "item_category": 1, "interaction": 2,
    "affinity_scale": 0, "position_decay": 0, "reward_discount": 0,
}


class Simulator:
    """The known list-wise user-response model: exact click chances, list rewards and oracles.

    Every method is batched and runs on the device of its ``users`` argument; item ids are raw
    simulator ids in [0, I), the ids written to ``interactions.parquet``.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self._by_device: dict[torch.device, World] = {world.user_embedding.device: world}

    @classmethod
    def from_config(cls, config: SimConfig) -> Simulator:
        """The world drawn from ``config.seed`` (logs draw from an independent child stream)."""
        world_seed, _ = np.random.SeedSequence(config.seed).spawn(2)
        return cls(World.sample(config, np.random.default_rng(world_seed)))

    @classmethod
    def load(cls, folder: Path | str, verify: bool = True) -> Simulator:
        """Open a ``goalrank simulate`` folder; ``verify`` checks world.npz against the manifest."""
        files = SimulatorFolder(Path(folder))
        if not files.root.is_dir():
            raise ArtifactError(f"{files.root}: simulator folder not found")
        manifest = read_json(files.manifest)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{files.manifest}: format_version"
                                f" {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
        path = files.world
        if not path.is_file():
            raise ArtifactError(f"{path}: missing from simulator folder")
        if verify and sha256_file(path) != manifest.get("checksums", {}).get(path.name):
            raise ArtifactError(f"{path}: checksum mismatch (file truncated or corrupted)")
        return cls(World.load(path))

    @property
    def n_users(self) -> int:
        return self.world.user_embedding.shape[0]

    @property
    def n_items(self) -> int:
        return self.world.item_bias.shape[0]

    def _on(self, device: torch.device) -> World:
        if device not in self._by_device:
            self._by_device[device] = self.world.to(device)
        return self._by_device[device]

    def affinity(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """a(u, i) = affinity_scale · e_u·v_i + b_i for users (B,) and raw item ids (B, ...)."""
        _check_ids(users, self.n_users, "users")
        _check_ids(items, self.n_items, "items")
        if items.shape[:1] != users.shape:
            raise DataError(f"items: shape {tuple(items.shape)} must start with users' {tuple(users.shape)}")
        world = self._on(users.device)
        user = world.user_embedding[users].view(users.shape[0], *[1] * (items.dim() - 1), -1)  # (B, 1.., D)
        dot = (world.item_embedding[items] * user).sum(-1)  # (B, ...)
        return world.affinity_scale * dot + world.item_bias[items]

    def click_probs(self, users: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """(B, K, T) exact chance of a positive at each position of lists (B, K, T) of raw item ids."""
        _check_lists(lists)
        world = self._on(users.device)
        return self._probs(self.affinity(users, lists), world.item_category[lists])

    def list_reward(self, users: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """(B, K) exact expected reward r(u, l) = Σ_k w_k p_k of lists (B, K, T) of raw item ids."""
        return self._weighted(self.click_probs(users, lists))

    def best_lists(
        self,
        users: torch.Tensor,
        candidates: torch.Tensor,
        list_len: int,
        beam_width: int = ORACLE_BEAM_WIDTH,
        exhaustive: bool = False,
        max_lists: int = 1_000_000,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best list of ``list_len`` distinct candidates: positions (B, L) and rewards (B,).

        Beam search keeps the ``beam_width`` best prefixes at each step; prefix rewards are exact
        (later items never change earlier p_k), so the search is exact once ``beam_width`` covers
        every prefix of length L-1. ``exhaustive`` scores all N!/(N-L)! lists instead (at most
        ``max_lists``, else ConfigError), the reference for small N.
        """
        affinity, categories = self._candidate_terms(users, candidates, list_len)
        if exhaustive:
            lists = _all_lists(candidates.shape[1], list_len, max_lists, candidates.device)  # (P, L)
            rewards = self._position_rewards(affinity, categories, lists)  # (B, P)
            best = rewards.argmax(1)
            return lists[best], rewards.gather(1, best[:, None]).squeeze(1)
        check(beam_width >= 1, "beam_width", "an integer >= 1", beam_width)
        return self._beam_search(affinity, categories, list_len, beam_width)

    def oracle_log_policy(
        self,
        users: torch.Tensor,
        candidates: torch.Tensor,
        list_len: int,
        alpha: float,
        max_lists: int = 100_000,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The oracle policy π*(l) = exp(r(u,l)/α) / Z over ALL lists (paper Eq. 2), by enumeration.

        Returns lists (B, P, L) of candidate positions (the same P = N!/(N-L)! lists for every
        request) and log π* (B, P), so KL(π*||π) = Σ_l π*(l)(log π*(l) - log π(l)) is exact for
        tiny cases. Raises ConfigError when P exceeds ``max_lists``.
        """
        check(alpha > 0, "alpha", "a temperature > 0", alpha)
        affinity, categories = self._candidate_terms(users, candidates, list_len)
        lists = _all_lists(candidates.shape[1], list_len, max_lists, candidates.device)  # (P, L)
        rewards = self._position_rewards(affinity, categories, lists)  # (B, P)
        log_probs = torch.log_softmax(rewards / alpha, dim=1)
        return lists.expand(users.shape[0], -1, -1), log_probs

    def _candidate_terms(
        self, users: torch.Tensor, candidates: torch.Tensor, list_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Affinity (B, N) and category (B, N) of every candidate, computed once per request."""
        if candidates.dim() != 2:
            raise DataError(f"candidates: expected shape (B, N), got {tuple(candidates.shape)}")
        check(1 <= list_len <= candidates.shape[1], "list_len",
              f"an integer in [1, N={candidates.shape[1]}]", list_len)
        return self.affinity(users, candidates), self._on(users.device).item_category[candidates]

    def _position_rewards(
        self, affinity: torch.Tensor, categories: torch.Tensor, lists: torch.Tensor
    ) -> torch.Tensor:
        """(B, P) reward of lists (P, T) of candidate positions, shared by every request."""
        batch, (n_lists, length) = affinity.shape[0], lists.shape
        index = lists.reshape(1, -1).expand(batch, -1)  # (B, P*T)
        gathered_affinity = affinity.gather(1, index).view(batch, n_lists, length)  # (B, P, T)
        gathered_categories = categories.gather(1, index).view(batch, n_lists, length)
        return self._weighted(self._probs(gathered_affinity, gathered_categories))

    def _probs(self, affinity: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """p_k = sigmoid(a + pos_k + ctx_k) for (..., T) affinities and categories of lists."""
        world = self._on(affinity.device)
        length = affinity.shape[-1]
        context = torch.zeros_like(affinity)
        for k in range(1, length):
            context[..., k] = world.interaction[categories[..., :k], categories[..., k, None]].sum(-1)
        return torch.sigmoid(affinity + self._position_bias(length, affinity.device) + context)

    def _weighted(self, probs: torch.Tensor) -> torch.Tensor:
        return (probs * self._position_weights(probs.shape[-1], probs.device)).sum(-1)

    def _position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(T,) pos_k = -position_decay · k."""
        return -self._on(device).position_decay * torch.arange(length, device=device, dtype=torch.float64)

    def _position_weights(self, length: int, device: torch.device) -> torch.Tensor:
        """(T,) w_k = reward_discount^k."""
        return self._on(device).reward_discount ** torch.arange(length, device=device, dtype=torch.float64)

    def _beam_search(
        self, affinity: torch.Tensor, categories: torch.Tensor, list_len: int, beam_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the ``beam_width`` best prefixes by exact prefix reward; return the best full list.

        Per beam, ``context[n]`` holds Σ_{j in prefix} M[c_j, c_n] for every candidate n, so one
        step scores all (beam, candidate) extensions at once and updates it by one row of M.
        """
        world = self._on(affinity.device)
        batch, n_candidates = affinity.shape
        bias = self._position_bias(list_len, affinity.device)
        weights = self._position_weights(list_len, affinity.device)
        beams = affinity.new_zeros(batch, 1, 0, dtype=torch.long)  # (B, W, t)
        scores = affinity.new_zeros(batch, 1)  # (B, W)
        context = affinity.new_zeros(batch, 1, n_candidates)  # (B, W, N)
        used = torch.zeros(batch, 1, n_candidates, dtype=torch.bool, device=affinity.device)
        for t in range(list_len):
            probs = torch.sigmoid(affinity[:, None, :] + bias[t] + context)  # (B, W, N)
            extended = (scores[..., None] + weights[t] * probs).masked_fill(used, -math.inf)
            width = min(beam_width, beams.shape[1] * (n_candidates - t))
            scores, flat = extended.flatten(1).topk(width, dim=1)  # (B, W')
            parent, item = flat // n_candidates, flat % n_candidates
            beams = torch.cat([beams.gather(1, parent[..., None].expand(-1, -1, t)), item[..., None]], 2)
            row = parent[..., None].expand(-1, -1, n_candidates)  # (B, W', N)
            chosen_category = categories.gather(1, item)  # (B, W')
            added = world.interaction[chosen_category[..., None], categories[:, None, :]]  # (B, W', N)
            context = context.gather(1, row) + added
            used = used.gather(1, row).scatter(2, item[..., None], True)
        return beams[:, 0], scores[:, 0]


def _all_lists(n_candidates: int, list_len: int, max_lists: int, device: torch.device) -> torch.Tensor:
    """(P, L) every ordered list of ``list_len`` distinct positions, P = N!/(N-L)!."""
    count = math.perm(n_candidates, list_len)
    if count > max_lists:
        raise ConfigError(f"max_lists={max_lists}: enumerating all {count} lists of {list_len} out of"
                          f" {n_candidates} candidates exceeds it; use beam search or fewer candidates")
    return torch.tensor(list(permutations(range(n_candidates), list_len)), dtype=torch.long, device=device)


def _check_ids(ids: torch.Tensor, upper: int, name: str) -> None:
    if ids.dtype != torch.long:
        raise DataError(f"{name}: expected int64 ids, got {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= upper):
        raise DataError(f"{name}: ids must lie in [0, {upper}), got [{ids.min()}, {ids.max()}]")


def _check_lists(lists: torch.Tensor) -> None:
    if lists.dim() != 3:
        raise DataError(f"lists: expected shape (B, K, T), got {tuple(lists.shape)}")
