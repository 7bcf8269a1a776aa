"""A tiny synthetic interaction log in the generic format, shared by the data tests."""

from __future__ import annotations

import numpy as np
import polars as pl


def synthetic_log(n_users: int = 24, n_items: int = 40, per_user: int = 30, time_span: int = 200,
                  seed: int = 0) -> pl.DataFrame:
    """Each user sees ``per_user`` distinct items at random times in [0, time_span) (ties likely),
    rows shuffled so that file order differs from time order; labels are fair coin flips."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(100, 100 + n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)]) + 7
    frame = pl.DataFrame({
        "user": users,
        "item": items,
        "timestamp": rng.integers(0, time_span, users.shape[0]),
        "label": rng.integers(0, 2, users.shape[0]).astype(np.int8),
    })
    return frame[rng.permutation(frame.height)]
