"""Durable on-disk outbox of line-protocol lines (SQLite in WAL mode).

Why: the database may be down for hours while a night is being recorded, and the detector may be
restarted or lose power meanwhile. A line is committed here (synchronous=FULL, so it survives a
power cut) before :meth:`Outbox.put` returns, and deleted only after the database accepted it.
Delivery is therefore at-least-once; because every point of the schema is idempotent (same
measurement, tag set and timestamp overwrite each other), a re-sent point stores exactly once.

Coalescing: a pending line with the same identity (series key, field-key set, timestamp) as a new
one is deleted when the new one is added at the end of the queue. The newer line overwrites every
field of the older one, so sending the older one first would change nothing -- skipping it saves
rewrites when a movement's PLM flag flips several times while the database is away.

Lines that the database refuses as malformed go to a ``dead_letter`` table with the error, so one
bad point cannot block a night; an operator can inspect and re-queue them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from detector.storage.schema import series_key
from plm.durable import open_durable_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox(key);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """One queued line and its row id (the order it was put in)."""

    id: int
    line: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    line: str
    error: str
    failed_at: float


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written (disk full, permissions, corrupt file)."""


class Outbox:
    """A FIFO of lines on disk, safe to use from several threads of one process."""

    def __init__(self, path: Path, coalesce: bool = True) -> None:
        self.path = Path(path)
        self.coalesce = coalesce
        self._lock = threading.Lock()
        self._db = open_durable_db(self.path, _SCHEMA, OutboxError, "outbox")

    def put(self, lines: Iterable[str]) -> int:
        """Queue lines in one transaction; durable once this returns. Returns how many were queued.

        Every line is checked to be one line with a timestamp first, so a malformed line is refused
        here (ValueError) and nothing of the call is queued, instead of failing at the database.
        """
        rows = []
        for text in lines:
            if "\n" in text or "\r" in text:
                raise ValueError(f"a line-protocol line may not contain a line break: {text[:200]!r}")
            rows.append((series_key(text), text))
        order = {key: i for i, (key, _) in enumerate(rows)}
        if not rows:
            return 0
        if self.coalesce:  # within one call too: only the last line of an identity is kept
            rows = list({key: (key, text) for key, text in rows}.values())
            rows.sort(key=lambda row: order[row[0]])
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if self.coalesce:
                    self._db.executemany("DELETE FROM outbox WHERE key = ?", [(key,) for key, _ in rows])
                self._db.executemany("INSERT INTO outbox(key, line) VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot write outbox {self.path}: {exc}") from None
        return len(rows)

    def peek(self, max_lines: int, max_bytes: int = 4_000_000) -> list[Pending]:
        """The oldest pending lines (at least one, when any), up to ``max_lines`` and about ``max_bytes``."""
        with self._lock:
            cur = self._db.execute("SELECT id, line FROM outbox ORDER BY id LIMIT ?", (max_lines,))
            out: list[Pending] = []
            size = 0
            for row_id, text in cur:
                size += len(text) + 1
                if out and size > max_bytes:
                    break
                out.append(Pending(row_id, text))
            return out

    def ack(self, items: Sequence[Pending]) -> None:
        """The database accepted these: delete them (rows already replaced by coalescing are gone)."""
        if not items:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(p.id,) for p in items])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot update outbox {self.path}: {exc}") from None

    def dead_letter(self, items: Sequence[Pending], error: str) -> None:
        """Move lines the database refused as malformed to the dead-letter table, atomically."""
        if not items:
            return
        now = time.time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for item in items:
                    gone = self._db.execute("DELETE FROM outbox WHERE id = ?", (item.id,)).rowcount
                    if gone:
                        self._db.execute(
                            "INSERT INTO dead_letter(line, error, failed_at) VALUES (?, ?, ?)",
                            (item.line, error[:2000], now),
                        )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot update outbox {self.path}: {exc}") from None

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute("SELECT id, line, error, failed_at FROM dead_letter ORDER BY id").fetchall()
        return [DeadLetter(*row) for row in rows]

    def requeue_dead_letters(self) -> int:
        """Put every dead letter back in the outbox (after fixing the cause, e.g. a field type)."""
        letters = self.dead_letters()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO outbox(key, line) VALUES (?, ?)", [(series_key(d.line), d.line) for d in letters]
            )
            self._db.executemany("DELETE FROM dead_letter WHERE id = ?", [(d.id,) for d in letters])
            self._db.execute("COMMIT")
        return len(letters)

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dead_letter_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
