"""The per-leg 30-s epoch table: integer sums per epoch, in two growing arrays instead of a dict of rows.

Why not a dict: a night has ~1,000 epochs per leg; as dict entries holding small numpy rows each costs
~250 bytes, as array rows 56 (the key and six int64 sums), and consumers (posture, sleep estimate,
per-minute activity) read the whole table as one array instead of stacking a thousand rows. Sample
times of a leg only increase, so an epoch is either the last one or a new one after it: adding is O(1).
It reads like a ``Mapping[int, row]`` so code written for a dict of rows works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

COLUMNS = 6
"""Columns of a row: samples, sum x, sum y, sum z, active samples, sum envelope (0.1 mg units)."""

STAT_SCALE = 10_000
"""Epoch sums are kept in integer 0.1 mg so that they are exact in any chunking."""


class EpochTable(Mapping[int, np.ndarray]):
    """Epoch index -> int64 row of sums, epochs in increasing order."""

    def __init__(self, capacity: int = 64) -> None:
        self._keys = np.zeros(max(1, capacity), dtype=np.int64)
        self._rows = np.zeros((max(1, capacity), COLUMNS), dtype=np.int64)
        self._n = 0
        self._checked = 0  # rows before this index were kept by retain_completed

    def add(self, keys: np.ndarray, sums: np.ndarray) -> None:
        """Add per-epoch sums (keys increasing, none before the table's last epoch)."""
        if keys.shape[0] == 0:
            return
        start = 0
        if self._n and keys[0] == self._keys[self._n - 1]:
            self._rows[self._n - 1] += sums[0]
            start = 1
        elif self._n and keys[0] < self._keys[self._n - 1]:
            raise ValueError(f"epoch {int(keys[0])} is before the table's last epoch {int(self._keys[self._n - 1])}")
        m = keys.shape[0] - start
        if self._n + m > self._keys.shape[0]:
            capacity = max(2 * self._keys.shape[0], self._n + m)
            self._keys = np.resize(self._keys, capacity)
            self._rows = np.resize(self._rows, (capacity, COLUMNS))
        self._keys[self._n : self._n + m] = keys[start:]
        self._rows[self._n : self._n + m] = sums[start:]
        self._n += m

    def retain_completed(self, keep: Callable[[np.ndarray], np.ndarray]) -> None:
        """Drop the complete rows (all but the last, which later samples may still add to) not yet checked for
        which ``keep(rows)`` is False. Each row is checked once, when complete, so the rows kept do not depend
        on the chunking; a table of rare rows (walking blocks) stays small."""
        done = self._n - 1
        if done <= self._checked:
            return
        rows = self._rows[self._checked : done]
        kept = np.flatnonzero(keep(rows)) + self._checked
        m = kept.shape[0]
        self._keys[self._checked : self._checked + m] = self._keys[kept]
        self._rows[self._checked : self._checked + m] = self._rows[kept]
        self._keys[self._checked + m] = self._keys[done]
        self._rows[self._checked + m] = self._rows[done]
        self._checked += m
        self._n = self._checked + 1

    @property
    def epochs(self) -> np.ndarray:
        """Epoch indices, increasing (a read-only view)."""
        view = self._keys[: self._n]
        view.flags.writeable = False
        return view

    @property
    def rows(self) -> np.ndarray:
        """The sums, one row per epoch in :attr:`epochs` order (a read-only view)."""
        view = self._rows[: self._n]
        view.flags.writeable = False
        return view

    def _index(self, key: int) -> int:
        i = int(np.searchsorted(self._keys[: self._n], key))
        return i if i < self._n and self._keys[i] == key else -1

    def __getitem__(self, key: int) -> np.ndarray:
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        return self.rows[i]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int | np.integer) and self._index(int(key)) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys[: self._n].tolist())

    def __len__(self) -> int:
        return self._n


def table_rows(table: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(epoch indices, float64 rows) of an :class:`EpochTable` or any mapping of epoch -> row."""
    if isinstance(table, EpochTable):
        return table.epochs, table.rows.astype(np.float64)
    keys = np.array(list(table.keys()), dtype=np.int64)
    rows = np.array(list(table.values()), dtype=np.float64).reshape(-1, COLUMNS)
    return keys, rows
