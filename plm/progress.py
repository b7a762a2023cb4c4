"""A one-line progress bar on stderr for the offline commands (`plm score`, `plm import`).

Only on a terminal (a pipe or a log gets no carriage returns) and only once the work has taken half a second:
a short run prints nothing."""

from __future__ import annotations

import sys
import time

WIDTH = 30
SHOW_AFTER_S = 0.5


class ProgressBar:
    def __init__(self, total: float, label: str) -> None:
        self.total = max(float(total), 1.0)
        self.label = label
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def update(self, done: float) -> None:
        if not self.enabled or time.monotonic() - self.start < SHOW_AFTER_S:
            return
        share = min(max(done / self.total, 0.0), 1.0)
        filled = int(WIDTH * share)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {100 * share:3.0f}%")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the bar (before printing a result or an error on the same terminal)."""
        if self.shown:
            sys.stderr.write("\r" + " " * (len(self.label) + WIDTH + 10) + "\r")
            sys.stderr.flush()
            self.shown = False
