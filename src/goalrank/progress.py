"""Progress of the long stages: a tqdm bar on a terminal, plain stage lines in a log file.

tqdm redraws its bar with carriage returns, which a log file turns into one endless line, so the
stages used to hide it when stderr is not a terminal, and a 100M-interaction ``prepare`` writing to
a log printed nothing for 90 minutes. Off a terminal, ``progress`` prints whole lines instead:
``<stage>: <n>/<total> <unit> (<pct>%), <elapsed> s`` when the stage starts, then at most every
``LINE_INTERVAL_S`` seconds (when a step ends), and when it ends. While steps remain, a line also
says ``<left> s left``: the remaining steps at the mean pace of this stage's steps so far (a
resumed stage's earlier steps are not timed, so they do not count), what tqdm's bar shows as ETA.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
LINE_INTERVAL_S = 10.0


class Progress(Protocol[T_co]):
    """What the stages use of a progress display: iterate, and show a few values beside it."""

    def __iter__(self) -> Iterator[T_co]: ...

    def set_postfix(self, **values: Any) -> None: ...


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it", initial: int = 0,
             enabled: bool = True) -> Progress[T]:
    """``iterable`` with its progress on stderr: a bar on a terminal, stage lines otherwise (module doc).

    ``total`` defaults to ``len(iterable)`` where it has one; ``initial`` steps were done before
    (a resumed epoch). ``enabled=False`` shows nothing (e.g. on every rank but the first).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if enabled and sys.stderr.isatty():
        bar: Progress[T] = tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial, leave=False)
        return bar
    return StageLines(iterable, desc, total, unit, initial, enabled)


class StageLines(Generic[T]):
    """``iterable`` that prints a progress line to stderr at its start, every LINE_INTERVAL_S and its end."""

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None, unit: str, initial: int,
                 enabled: bool) -> None:
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.done, self.initial, self.enabled = initial, initial, enabled
        self.postfix = ""
        self.printed = -1  # the step count of the last line printed

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())

    def __iter__(self) -> Iterator[T]:
        start = last = time.monotonic()
        self._line(0.0)
        try:
            for item in self.iterable:
                yield item
                self.done += 1
                now = time.monotonic()
                if now - last >= LINE_INTERVAL_S:
                    self._line(now - start)
                    last = now
        finally:  # also when the consumer stops early (a capped epoch breaks on the batch after its last)
            if self.printed != self.done:
                self._line(time.monotonic() - start)

    def _line(self, elapsed: float) -> None:
        if not self.enabled:
            return
        self.printed = self.done
        count = f"{self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%)" \
            if self.total is not None else f"{self.done} {self.unit}"
        timed = self.done - self.initial
        left = f", {elapsed / timed * (self.total - self.done):.0f} s left" \
            if self.total is not None and timed > 0 and self.done < self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count}, {elapsed:.0f} s{left}{postfix}", file=sys.stderr, flush=True)
