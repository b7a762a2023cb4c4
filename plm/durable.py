"""Open an SQLite file the way every durable buffer of this project needs it.

The collector's batch queue, the detector's journal and its database outbox all promise that what
they accepted survives a crash or a power cut: WAL mode (readers never block the writer),
``synchronous=FULL`` (a commit is on disk when it returns), autocommit off (each caller groups its
writes in explicit transactions) and one connection shared by the threads of one process.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable_db(path: Path, schema: str, error: type[Exception], what: str) -> sqlite3.Connection:
    """Create the parent folder, open ``path`` and apply ``schema``; SQLite failures become ``error``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        # one real write now: a read-only file or folder otherwise opens fine and fails only at the first commit,
        # in the middle of the stream (rewriting the header's user_version with its own value changes nothing)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute(f"PRAGMA user_version = {version}")
    except (sqlite3.Error, OSError) as exc:
        raise error(f"cannot open {what} {path}: {exc}") from None
    return db
