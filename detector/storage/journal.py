"""Write-ahead journal of received sample batches plus a checkpoint of the scoring state.

Why: a batch is acknowledged to the broker (QoS 1 PUBACK) only after it is committed here, and the
scorer state is checkpointed with the id of the last journal row it has seen. After a crash --
even SIGKILL mid-series -- the service loads the checkpoint and replays the journal rows after it,
so no accepted sample is lost and none is scored twice (the ingest layer also drops redeliveries).
Checkpoint and journal truncation happen in one SQLite transaction, so they cannot disagree.

The same file holds the dead-letter table: messages (or one subject's scoring step) that raised while being
applied. A message is journaled before it is applied, so without it one poison message would raise again in
every replay and no restart could get past it; set aside, it is kept for a developer, and the rest goes on.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from plm.durable import open_durable_db

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    slot INTEGER PRIMARY KEY CHECK (slot = 0),
    applied_id INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT UNIQUE,
    at_s REAL NOT NULL,
    stage TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    traceback TEXT NOT NULL
);
"""
DEAD_LETTERS_KEPT = 10_000  # rows; older ones are dropped (the total stays counted): a flood cannot fill the disk
DEAD_LETTER_PAYLOAD_BYTES = 128 * 1024  # the broker's packet limit (plm.ops.broker.MAX_PACKET_BYTES)
DEAD_LETTER_TEXT_CHARS = 8_000


class JournalError(RuntimeError):
    """The journal file cannot be opened or written (disk full, permissions, corruption)."""


class Journal:
    """SQLite (WAL, synchronous=FULL) journal; safe to call from several threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_durable_db(self.path, _SCHEMA, JournalError, "journal")
        self.dead_letter_total = self._dead_letter_sequence()

    def dead_letter(
        self, topic: str, payload: bytes, error: str, trace: str, *, stage: str = "message", key: str | None = None
    ) -> bool:
        """File what raised while being applied; False if ``key`` was filed before (a replay of the same row)."""
        row = (key, time.time(), stage, topic, bytes(payload[:DEAD_LETTER_PAYLOAD_BYTES]), error[:DEAD_LETTER_TEXT_CHARS],
               trace[-DEAD_LETTER_TEXT_CHARS:])  # fmt: skip
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                # not INSERT OR IGNORE: an ignored insert still advances AUTOINCREMENT, which is our total
                seen = (
                    key is not None and self._db.execute("SELECT 1 FROM dead_letter WHERE key = ?", (key,)).fetchone()
                )
                added = 0 if seen else 1
                if added:
                    self._db.execute(
                        "INSERT INTO dead_letter (key, at_s, stage, topic, payload, error, traceback) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                self._db.execute(
                    "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?", (DEAD_LETTERS_KEPT,)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise JournalError(f"cannot write the dead-letter table of {self.path}: {exc}") from None
            self.dead_letter_total = self._dead_letter_sequence()
        return added > 0

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters, newest first (``plm detect --dead-letters``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at_s, stage, topic, payload, error, traceback FROM dead_letter ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        names = ("id", "at_s", "stage", "topic", "payload", "error", "traceback")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _dead_letter_sequence(self) -> int:
        """Every dead letter ever filed here (AUTOINCREMENT never reuses an id, so dropped rows still count)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'dead_letter'").fetchone()
        return int(row[0]) if row else 0

    def append(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Commit ``(topic, payload)`` pairs in one transaction (group commit); return their row ids."""
        if not messages:
            return []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO journal (topic, payload) VALUES (?, ?)", messages)
                last = int(self._db.execute("SELECT last_insert_rowid()").fetchone()[0])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise JournalError(f"cannot write journal {self.path}: {exc}") from None
        # one writer inside one transaction: AUTOINCREMENT hands out consecutive ids
        return list(range(last - len(messages) + 1, last + 1))

    def replay(self, after_id: int) -> Iterator[tuple[int, str, bytes]]:
        """Rows after ``after_id`` in order, read in pages so a long outage does not load at once."""
        last = after_id
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, topic, payload FROM journal WHERE id > ? ORDER BY id LIMIT 2000", (last,)
                ).fetchall()
            if not rows:
                return
            for row_id, topic, payload in rows:
                yield int(row_id), str(topic), bytes(payload)
            last = int(rows[-1][0])

    def checkpoint(self, applied_id: int, state: Any) -> None:
        """Store the state that includes every row up to ``applied_id`` and drop those rows."""
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR REPLACE INTO checkpoint (slot, applied_id, state) VALUES (0, ?, ?)", (applied_id, blob)
                )
                self._db.execute("DELETE FROM journal WHERE id <= ?", (applied_id,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise JournalError(f"cannot write checkpoint to {self.path}: {exc}") from None

    def load_checkpoint(self) -> tuple[int, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT applied_id, state FROM checkpoint WHERE slot = 0").fetchone()
        if row is None:
            return None
        try:
            return int(row[0]), pickle.loads(row[1])  # our own file, written by checkpoint() above
        except Exception as exc:  # classes of another version of the code: any unpickling error
            log.warning("checkpoint in %s cannot be read (%s: %s)", self.path, type(exc).__name__, exc)
            return int(row[0]), None

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM journal").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
