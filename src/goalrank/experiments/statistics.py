"""Spread and significance: mean ± std over seeds, the paired bootstrap over test lists, the best baseline."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from goalrank.errors import DataError

BOOTSTRAP_CHUNK = 1 << 22  # resampled list indices held in memory at once by paired_bootstrap


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std over seeds (std 0 for one seed)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap result: mean per-list difference, its percentile CI, two-sided p-value."""

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_lists: int


def paired_bootstrap(treatment: np.ndarray, control: np.ndarray, samples: int, seed: int,
                     confidence: float = 0.95) -> PairedTest:
    """Two-sided paired bootstrap test of "mean per-list difference = 0" over test lists.

    ``treatment`` and ``control`` are (S, n): a per-list metric of two methods trained with the
    same S seeds and evaluated on the same n test lists. Each list's difference is averaged over
    the seeds, the n differences are resampled with replacement ``samples`` times, and the
    p-value is the share of resampled means at least as far from the observed mean as the
    observed mean is from 0 (the shift method, Efron & Tibshirani 1993 §16.4), with the +1
    correction so it is never 0. Identical inputs give p = 1. Lists where the metric is undefined
    (NaN: no positive) are dropped. The test covers list-to-list noise on this test set; the
    ± std columns of the tables show the seed-to-seed spread.
    """
    treatment, control = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if treatment.shape != control.shape or treatment.ndim != 2:
        raise DataError(f"paired_bootstrap: treatment {treatment.shape} and control {control.shape}: "
                        "expected the same (seeds, lists) shape")
    differences = (treatment - control).mean(axis=0)  # (n,)
    differences = differences[~np.isnan(differences)]
    n = differences.size
    if n == 0:
        raise DataError("paired_bootstrap: no list has the metric defined for both methods")
    observed = differences.mean()
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, BOOTSTRAP_CHUNK // n)
    for lo in range(0, samples, chunk):
        index = rng.integers(0, n, size=(min(chunk, samples - lo), n))  # (chunk, n)
        means[lo : lo + len(index)] = differences[index].mean(axis=1)
    extreme = np.count_nonzero(np.abs(means - observed) >= abs(observed))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedTest(float(observed), float(low), float(high), (extreme + 1) / (samples + 1), n)


def best_baseline(means: dict[str, float], treatment: str) -> tuple[str, float]:
    """The baseline with the highest mean, and ``treatment``'s relative improvement over it.

    Per metric, as the paper's "Improv." row of Table 1: (treatment − best) / |best|.
    """
    baselines = {label: value for label, value in means.items() if label != treatment}
    if not baselines:
        raise DataError(f"best_baseline: no method other than {treatment!r}")
    label = max(baselines, key=baselines.__getitem__)
    return label, (means[treatment] - baselines[label]) / abs(baselines[label])
