"""Small prepared datasets written by tests, in the exact on-disk format of goalrank.data.storage."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from goalrank.data.storage import SPLITS, SplitSource, write_prepared


def random_split(rng: np.random.Generator, size: int, n_items: int, n_candidates: int,
                 list_len: int, history_len: int) -> dict[str, np.ndarray]:
    """Random but valid samples: distinct candidates, exposed positions, labels only on exposed."""
    candidates = np.stack([rng.choice(np.arange(1, n_items + 1), n_candidates, replace=False) for _ in range(size)])
    exposed = np.stack([rng.choice(n_candidates, list_len, replace=False) for _ in range(size)])
    labels = np.zeros((size, n_candidates), dtype=np.int8)
    np.put_along_axis(labels, exposed, rng.integers(0, 2, (size, list_len)), axis=1)
    history = rng.integers(0, n_items + 1, (size, history_len))
    return {
        "users": rng.integers(0, 10, size),
        "timestamps": np.arange(size),
        "history": history,
        "history_labels": (history > 0) * rng.integers(0, 2, (size, history_len)),
        "candidates": candidates,
        "labels": labels,
        "exposed": exposed,
    }


def tiny_dataset(root: Path, n_items: int = 30, n_candidates: int = 8, list_len: int = 3,
                 history_len: int = 5, sizes: tuple[int, int, int] = (64, 16, 16), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    splits = {name: SplitSource(size, [random_split(rng, size, n_items, n_candidates, list_len, history_len)])
              for name, size in zip(SPLITS, sizes)}
    manifest = {"n_users": 10, "n_items": n_items, "list_len": list_len,
                "n_candidates": n_candidates, "history_len": history_len}
    return write_prepared(root, splits, np.arange(10), np.arange(-1, n_items), manifest)


def collect(chunks: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate the chunks of ``goalrank.data.lists.sample_chunks`` into whole arrays."""
    chunks = list(chunks)
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
