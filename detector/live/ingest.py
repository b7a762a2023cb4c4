"""Turn the unruly MQTT stream of one sensor into an ordered, duplicate-free sample stream.

QoS 1 means a batch can arrive twice (redelivery after a reconnect); a collector draining its
on-disk queue can deliver batches late and out of order. The scorer, however, needs samples in time
order exactly once. ``SensorInbox`` holds batches for a short reorder window (in *data* time, so a
replay at 1000x speed behaves exactly like real time) and releases them in order; anything that
arrives after its slot was released is counted as late and dropped, never half-used.

Pure and picklable: the live service checkpoints it together with the scorer.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass, field

from plm.wire import SampleBatch

RECENT_STARTS_KEPT = 300  # five minutes of 1-s batches


@dataclass
class SensorInbox:
    """Reorder buffer for one sensor; ``window_s`` of data time is held back before release."""

    window_s: float = 5.0
    _pending: list[tuple[int, int, SampleBatch]] = field(default_factory=list)
    _pending_starts: set[int] = field(default_factory=set)
    _released_until_ns: int | None = None
    _newest_end_ns: int | None = None
    _tiebreak: int = 0
    # start times recently released, to tell a QoS 1 redelivery ("duplicate") from data that came
    # too late to place ("late"); bounded so a sensor's state does not grow over the night
    _recent_starts: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_STARTS_KEPT))
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, batch: SampleBatch) -> list[SampleBatch]:
        """Accept one batch; return the batches that are now due, in time order."""
        half_sample_ns = int(5e8 / batch.rate_hz)
        if batch.start_ns in self._pending_starts:
            self.counts["duplicate"] += 1
            return []
        if self._released_until_ns is not None and batch.start_ns < self._released_until_ns - half_sample_ns:
            # Either a redelivery of something already scored or data too late to place.
            self.counts["duplicate" if batch.start_ns in self._recent_starts else "late"] += 1
            return []
        heapq.heappush(self._pending, (batch.start_ns, self._tiebreak, batch))
        self._tiebreak += 1
        self._pending_starts.add(batch.start_ns)
        self.counts["accepted"] += 1
        if self._newest_end_ns is None or batch.end_ns > self._newest_end_ns:
            self._newest_end_ns = batch.end_ns
        return self._release(self._newest_end_ns - int(self.window_s * 1e9))

    def flush(self) -> list[SampleBatch]:
        """Release everything held (the sensor went quiet, or the service is stopping)."""
        return self._release(None)

    @property
    def held(self) -> int:
        return len(self._pending)

    @property
    def released_until_ns(self) -> int | None:
        return self._released_until_ns

    def _release(self, before_ns: int | None) -> list[SampleBatch]:
        due: list[SampleBatch] = []
        while self._pending and (before_ns is None or self._pending[0][0] <= before_ns):
            _, _, batch = heapq.heappop(self._pending)
            self._pending_starts.discard(batch.start_ns)
            if self._released_until_ns is not None and batch.start_ns < self._released_until_ns - int(
                5e8 / batch.rate_hz
            ):
                # overlaps what was released just before it (two batches claiming one time span)
                self.counts["overlap"] += 1
                continue
            due.append(batch)
            self._recent_starts.append(batch.start_ns)
            self._released_until_ns = max(self._released_until_ns or batch.end_ns, batch.end_ns)
        return due
