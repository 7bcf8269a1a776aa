"""The tiny end-to-end benchmark that the experiment tests share (one run per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import run_tiny_benchmark


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of ``goalrank benchmark --profile quick`` on a simulator of 60 users, 2 steps per model, d_model 8."""
    out = tmp_path_factory.mktemp("bench")
    assert run_tiny_benchmark(out) == 0
    return out
