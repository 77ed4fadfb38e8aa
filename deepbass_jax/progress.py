"""Progress of long loops: a one-line bar on an interactive terminal, throttled log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

from absl import logging

T = TypeVar("T")
_REDRAW_SECONDS = 0.1  # terminal: redraw the bar at most this often
_HEARTBEAT_SECONDS = 60.0  # log: a line at least this often, even when less than 10% more is done


class Progress:
    """Counts work done out of `total` (None: unknown); a context manager with `update(n)`.

    On a terminal it redraws one line on stderr. Otherwise it logs (absl.logging) once another 10% is done
    or a minute has passed, but at most every `log_every_seconds`, and once at the end.
    """

    def __init__(self, total: Optional[int], description: str, initial: int = 0, unit: str = "",
                 log_every_seconds: float = 5.0):
        self.total, self.description, self.count, self.unit = total, description, initial, unit
        self._interactive = sys.stderr.isatty()
        self._log_every = log_every_seconds
        self._started = self._last_time = time.monotonic()
        self._last_count = initial

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._interactive:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()
        elif self.count != self._last_count:
            self._log()

    def update(self, amount: int = 1) -> None:
        """Records `amount` more units of work done."""
        self.count += amount
        since = time.monotonic() - self._last_time
        if self._interactive:
            if since >= _REDRAW_SECONDS:
                self._draw()
        elif since >= self._log_every and (
            not self.total or since >= _HEARTBEAT_SECONDS or self.count - self._last_count >= self.total / 10
        ):
            self._log()

    def _text(self) -> str:
        elapsed = time.monotonic() - self._started
        if not self.total:
            return f"{self.count}{self.unit} in {elapsed:.0f}s"
        return f"{self.count}/{self.total}{self.unit} ({100 * self.count / self.total:.0f}%) in {elapsed:.0f}s"

    def _log(self) -> None:
        logging.info("%s: %s", self.description, self._text())
        self._last_time, self._last_count = time.monotonic(), self.count

    def _draw(self) -> None:
        filled = int(30 * min(self.count / self.total, 1.0)) if self.total else 0
        bar = f" [{'#' * filled}{'-' * (30 - filled)}]" if self.total else ""
        sys.stderr.write(f"\r{self.description}{bar} {self._text()}")
        sys.stderr.flush()
        self._last_time = time.monotonic()


def progress(iterable: Iterable[T], description: str, total: Optional[int] = None) -> Iterator[T]:
    """Yields the items of `iterable` while reporting them; `total` defaults to `len(iterable)` if it has one."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total, description) as bar:
        for item in iterable:
            yield item
            bar.update(1)


class PhaseClock:
    """Wall seconds of the phases of one iteration (all seeds together); each lap ends once the host has the
    phase's results, which every phase but the epoch copies to the host anyway."""

    def __init__(self):
        self.seconds = {}
        self.started = self._last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now
