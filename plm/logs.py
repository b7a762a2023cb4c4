"""One logging set-up for every `plm` command: level from ``--log-level`` or ``PLM_LOG_LEVEL``.

Services run unattended all night, so log lines carry a UTC timestamp and the logger name; the
``RateLimitedLog`` helper keeps a flood of bad input from filling a Raspberry Pi's SD card.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LEVEL_ENV = "PLM_LOG_LEVEL"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once; later calls only change the level."""
    chosen = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    if chosen not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"log level {chosen!r}: expected DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    if not any(getattr(h, "_plm", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        formatter = logging.Formatter(_FORMAT, "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
        handler._plm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(chosen)


class RateLimitedLog:
    """Log a message of one kind at most once per ``interval_s``, saying how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({suppressed} more of this kind suppressed)" if suppressed else ""
        self._logger.warning(message + suffix, *args)
        return True
