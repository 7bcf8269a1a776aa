"""PNG figures of the benchmark: one panel per metric, one line per method, mean ± std over seeds.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so
figures render the same on a headless server, in tests and in CI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from goalrank.io import atomic_file

PANEL_SIZE_INCHES = 3.2
PANELS_PER_ROW = 5  # thirteen metrics in one row made a 35-inch strip that no page shows legibly


@dataclass
class Curve:
    """One method's points: ``x`` (e.g. parameter count) and, per metric, mean and std over seeds."""

    label: str
    x: list[float]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]


def plot_panels(curves: Sequence[Curve], metrics: Sequence[str], x_label: str, title: str,
                path: Path, log_x: bool = True) -> Path:
    """Write ``path`` (PNG): panels, one per metric in rows of ``PANELS_PER_ROW``, each with every
    curve as error bars.

    The paper's Fig. 3 plots metric against model size on a log axis; ``log_x`` does the same.
    """
    columns = min(len(metrics), PANELS_PER_ROW)
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(PANEL_SIZE_INCHES * columns, PANEL_SIZE_INCHES * rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    axes, spare = grid[:len(metrics)], grid[len(metrics):]
    for ax in spare:
        ax.set_visible(False)
    for ax, metric in zip(axes, metrics, strict=True):
        for curve in curves:
            order = sorted(range(len(curve.x)), key=curve.x.__getitem__)
            ax.errorbar([curve.x[i] for i in order], [curve.mean[metric][i] for i in order],
                        yerr=[curve.std[metric][i] for i in order], marker="o", capsize=3, label=curve.label)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
        ax.set_xlabel(x_label)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(title)
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=100)
    return path
