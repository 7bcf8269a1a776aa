"""k-core filtering (App. D.1: "users/items with fewer than 20 interactions are filtered out").

Dropping a sparse item can push a user below k and vice versa, so filtering repeats until no
user and no item has fewer than k interactions. Each round drops every user and every item
below k at once; the result is the k-core, the unique largest sub-log with that property, so it
does not depend on the order in which rows are dropped. Counts are interactions (rows), all
labels included: the core is about how much is known of a user or item, not how much is liked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class KCoreReport:
    """What filtering removed: for the manifest and the statistics table."""

    k: int
    rounds: int
    users_before: int
    items_before: int
    interactions_before: int
    users_after: int
    items_after: int
    interactions_after: int

    @property
    def users_dropped(self) -> int:
        return self.users_before - self.users_after

    @property
    def items_dropped(self) -> int:
        return self.items_before - self.items_after

    @property
    def interactions_dropped(self) -> int:
        return self.interactions_before - self.interactions_after

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "users_dropped": self.users_dropped,
                "items_dropped": self.items_dropped, "interactions_dropped": self.interactions_dropped}


def kcore(log: pl.DataFrame, k: int, whole: list[str] | None = None) -> tuple[pl.DataFrame, KCoreReport]:
    """Keep the rows of ``log`` whose user and item both have >= ``k`` interactions, iterated to a fixpoint.

    ``whole`` names columns that group rows which stand or fall together (a simulator session:
    dropping one of its items would cut every later list of the user across sessions). Row order
    is preserved, so the file order still breaks timestamp ties downstream.
    """
    before = _sizes(log)
    rounds = 0
    while True:
        dense = (pl.len().over("user") >= k) & (pl.len().over("item") >= k)
        if whole:  # two steps: polars does not nest one window expression inside another
            kept = log.with_columns(_dense=dense).filter(pl.col("_dense").all().over(whole)).drop("_dense")
        else:
            kept = log.filter(dense)
        if kept.height == log.height:
            break
        log, rounds = kept, rounds + 1
    return log, KCoreReport(k, rounds, *before, *_sizes(log))


def _sizes(log: pl.DataFrame) -> tuple[int, int, int]:
    return log["user"].n_unique(), log["item"].n_unique(), log.height
