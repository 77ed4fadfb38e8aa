"""A small progress reporter: a one-line bar on an interactive terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Optional

from absl import logging


class Progress:
    """Counts work done out of `total`; use as a context manager and call `update(n)`."""

    def __init__(self, total: Optional[int], description: str, initial: int = 0, unit: str = "",
                 log_every_seconds: float = 30.0):
        self.total = total
        self.description = description
        self.count = initial
        self.unit = unit
        self._interactive = sys.stderr.isatty()
        self._log_every = log_every_seconds
        self._started = self._last_report = time.monotonic()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._interactive:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def update(self, amount: int = 1) -> None:
        self.count += amount
        now = time.monotonic()
        if self._interactive and now - self._last_report > 0.1:
            self._draw()
            self._last_report = now
        elif not self._interactive and now - self._last_report > self._log_every:
            logging.info("%s: %s", self.description, self._text())
            self._last_report = now

    def _text(self) -> str:
        elapsed = time.monotonic() - self._started
        if not self.total:
            return f"{self.count}{self.unit} in {elapsed:.0f}s"
        return f"{self.count}/{self.total}{self.unit} ({100 * self.count / self.total:.0f}%) in {elapsed:.0f}s"

    def _draw(self) -> None:
        width = 30
        filled = int(width * self.count / self.total) if self.total else 0
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.description} [{bar}] {self._text()}")
        sys.stderr.flush()
