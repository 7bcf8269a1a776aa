"""splitmix64's finaliser against the reference generator's published outputs."""

from __future__ import annotations

import numpy as np

from goalrank.hashing import splitmix64

GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # the reference generator's state increment


def test_splitmix64_reproduces_the_reference_generators_outputs():
    """The reference generator (Vigna's splitmix64.c) adds the golden gamma to its state and returns
    the finaliser of the new state; from seed 1234567 its first outputs are the values below."""
    states = np.array([(1234567 + step * GOLDEN_GAMMA) % 2**64 for step in range(1, 6)], dtype=np.uint64)
    assert splitmix64(states).tolist() == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                                           4593380528125082431, 16408922859458223821]
    assert int(splitmix64(np.array([GOLDEN_GAMMA], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF  # seed 0
