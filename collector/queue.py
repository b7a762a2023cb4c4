"""A bounded, durable FIFO of encoded batches: SQLite in WAL mode, one file per sensor.

Why SQLite: it is in the standard library, survives power cuts (WAL + synchronous=FULL: a batch
is on disk once ``put`` returns; the file never corrupts), and a FIFO is one indexed table. A batch leaves the
queue only after the detector acknowledged it (the retained ``.../ack`` topic: committed to the detector's
journal; or, in ``broker`` ack mode, the broker's PUBACK), so a crash of the collector, the broker or the
detector loses nothing up to the bound; beyond the bound the oldest batch is dropped and counted.

One connection, used from one thread (the sensor's publisher thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plm.durable import open_durable_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER);
INSERT OR IGNORE INTO meta VALUES ('dropped', 0);
INSERT OR IGNORE INTO meta VALUES ('ack_seen', 0);
"""


class QueueError(RuntimeError):
    """The queue file cannot be opened (disk full, permissions, corrupt file)."""


class DurableQueue:
    def __init__(self, path: Path | str, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"queue bound must be at least 1, got {max_items}")
        self.path = Path(path)
        self.max_items = max_items
        self._db = open_durable_db(self.path, _SCHEMA, QueueError, "collector queue")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(q)")}
        for column in ("start_ns", "end_ns"):  # queue files from before the detector's acks lack them (NULL)
            if column not in columns:
                self._db.execute(f"ALTER TABLE q ADD COLUMN {column} INTEGER")
        self._len = self._db.execute("SELECT COUNT(*) FROM q").fetchone()[0]
        self.dropped = self._db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0]

    def __len__(self) -> int:
        return self._len

    def put_many(self, items: Sequence[tuple[str, bytes] | tuple[str, bytes, int | None, int | None]]) -> int:
        """Append ``(topic, payload[, start_ns, end_ns])`` in order; returns how many old items were dropped
        to stay within the bound. Items without times can only be removed by id (:meth:`delete`)."""
        if not items:
            return 0
        rows = [tuple(item) if len(item) == 4 else (*item, None, None) for item in items]
        with self._tx():
            self._db.executemany("INSERT INTO q (topic, payload, start_ns, end_ns) VALUES (?, ?, ?, ?)", rows)
            self._len += len(items)
            over = self._len - self.max_items
            if over > 0:
                self._db.execute("DELETE FROM q WHERE id IN (SELECT id FROM q ORDER BY id LIMIT ?)", (over,))
                self._len -= over
                self.dropped += over
                self._db.execute("UPDATE meta SET value=? WHERE key='dropped'", (self.dropped,))
        return max(0, over)

    def put(self, topic: str, payload: bytes) -> int:
        return self.put_many([(topic, payload)])

    def peek(self, limit: int, after_id: int = 0) -> list[tuple[int, str, bytes]]:
        """The oldest ``limit`` items with id > ``after_id``, oldest first."""
        return self._db.execute(
            "SELECT id, topic, payload FROM q WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()

    def times(self, ids: list[int]) -> dict[int, tuple[int | None, int | None]]:
        """``id -> (start_ns, end_ns)`` of the given items still queued."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f"SELECT id, start_ns, end_ns FROM q WHERE id IN ({marks})", ids).fetchall()
        return {int(i): (s, e) for i, s, e in rows}

    def delete_until(self, until_ns: int) -> int:
        """Forget every item whose samples end at or before ``until_ns`` (the detector's ack); returns how many."""
        with self._tx():
            cur = self._db.execute("DELETE FROM q WHERE end_ns IS NOT NULL AND end_ns <= ?", (until_ns,))
            removed = max(0, cur.rowcount)
            self._len -= removed
        return removed

    @property
    def ack_seen(self) -> bool:
        """Whether a detector ever acknowledged this sensor (``auto`` ack mode then waits for acks)."""
        return bool(self._db.execute("SELECT value FROM meta WHERE key='ack_seen'").fetchone()[0])

    def set_ack_seen(self) -> None:
        with self._tx():
            self._db.execute("UPDATE meta SET value=1 WHERE key='ack_seen'")

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._tx():
            cur = self._db.executemany("DELETE FROM q WHERE id = ?", [(i,) for i in ids])
            self._len -= cur.rowcount if cur.rowcount >= 0 else len(ids)

    def close(self) -> None:
        self._db.close()

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *_):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()
