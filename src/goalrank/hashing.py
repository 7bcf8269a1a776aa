"""Counter-based random draws: splitmix64's finaliser, shared by every draw that must be a fixed
function of its key (a user, an item, a list) rather than of how many draws came before it.

Two consumers need that: the simulator's held-out labels (``evaluate.protocol``), which must not
depend on batch order, and the bias study's ``fixed`` noise (``objectives.losses.fixed_list_noise``),
which must give a list the same draw at every step and on every rank. A generator's stream cannot
do either; a hash of the key can, without storing a draw per key.
"""

from __future__ import annotations

import numpy as np

# splitmix64's two multipliers (Steele, Lea & Flood 2014): the finaliser below mixes with both
SPLITMIX_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array: a bijection in which every input bit moves every
    output bit. Array arithmetic in numpy wraps modulo 2**64 silently, as the hash requires."""
    z = (z ^ (z >> np.uint64(30))) * SPLITMIX_MULTIPLIERS[0]
    z = (z ^ (z >> np.uint64(27))) * SPLITMIX_MULTIPLIERS[1]
    return z ^ (z >> np.uint64(31))
