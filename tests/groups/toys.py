"""Group-building helpers for the groups/ tests, on the exact toy models of ``builders``.

``make_context``: a GroupContext over a toy batch (``builders.make_batch(logged=False)``) with a
``PlackettLuce`` generator, a ``PairwiseReward`` evaluator and random item popularities (the
popularity policy's input); ``assert_valid_lists`` checks what
every group policy must return.
"""

from __future__ import annotations

import torch

from builders import PairwiseReward, PlackettLuce, make_batch
from goalrank.groups import GroupContext


def make_context(
    size: int = 3, n_cand: int = 10, list_len: int = 4, seed: int = 0, existing: torch.Tensor | None = None,
    generator: PlackettLuce | None = None, evaluator: PairwiseReward | None = None, num_items: int = 40,
) -> GroupContext:
    batch = make_batch(size, n_cand, list_len, n_items=num_items, history_len=2, seed=seed, logged=False)
    generator = generator or PlackettLuce(num_items, list_len, seed)
    return GroupContext(
        batch=batch, generator=generator, encoding=generator.encode(batch).detach(),
        evaluator=evaluator or PairwiseReward(num_items, seed), list_len=list_len,
        rng=torch.Generator().manual_seed(seed),
        existing=existing if existing is not None else torch.zeros(size, 0, list_len, dtype=torch.long),
        popularity=torch.rand(num_items + 1, generator=torch.Generator().manual_seed(seed)),
    )


def assert_valid_lists(lists: torch.Tensor, size: int, num_lists: int, list_len: int, n_cand: int) -> None:
    """(B, n, L) shape, positions in [0, N), no repeats within a list."""
    assert lists.shape == (size, num_lists, list_len)
    assert lists.dtype == torch.long
    assert bool(((lists >= 0) & (lists < n_cand)).all())
    ordered = lists.sort(dim=2).values
    assert bool((ordered[..., 1:] != ordered[..., :-1]).all())
