"""Turn the unruly MQTT stream of one sensor into an ordered, duplicate-free sample stream.

QoS 1 means a batch can arrive twice (redelivery after a reconnect); a collector draining its
on-disk queue can deliver batches late and out of order. The scorer, however, needs samples in time
order exactly once. ``SensorInbox`` holds batches for a short reorder window (in *data* time, so a
replay at 1000x speed behaves exactly like real time) and releases them in order; anything that
arrives after its slot was released is counted as late and dropped, never half-used.

**Seq holes.** Each batch carries the sensor stream's ``seq`` (plm/wire.py), and the collector keeps
every batch until the detector's end-to-end ack covers it (detector/live/acks.py), republishing it after a
reconnect, a new owner announcement, or an ack that stalls (collector/publisher.py). So a *missing seq*
is data in transit that will come: a broker that redelivers an unacknowledged QoS 1 message only after
its own timeout, behind newer ones (NATS: ``mqtt { ack_wait }``, 30 s by default), or a collector's
resend. The inbox does not release past a seq hole until the sensor's newest data is ``hole_wait_s``
beyond the batch after it; then it gives up (counted ``holes_given_up``: the collector's queue dropped
its oldest, or a sender that is not ours) and the hole stays a gap. A BLE dropout on the sensor is a
time gap with *contiguous* seq -- a real gap, released at once like any other data. A sender that does
not number its batches (seq always 0) never makes a hole; a seq that goes backwards is a new stream (a
restarted collector numbers from 0 again). The wait is in data time, like the window: the release
decisions depend only on the order of the batches, so a journal replay after a crash releases exactly
what the live run released (wall time would make them depend on the replay's speed).

Counts: ``accepted``; ``duplicate`` (a redelivery of a batch held or already released: nothing lost);
``late`` (data whose slot was released before it came, never scored: lost); ``overlap`` (two batches
claiming one time span); ``holes_given_up``.

Pure and picklable: the live service checkpoints it together with the scorer.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass, field

from plm.wire import SampleBatch

RECENT_STARTS_KEPT = 300  # five minutes of 1-s batches
HOLE_WAIT_S = 60.0
"""Data seconds a seq hole is waited for. Longer than the redelivery delays it covers: NATS's default MQTT
``ack_wait`` (30 s, after which it sends an unacknowledged QoS 1 message again) and the collector's resend of
batches the detector's ack has not covered for ``collector.publisher.ACK_STALL_S`` (20 s) plus the ack cadence
(``ACK_EVERY_S``, 5 s). Costs latency only while a hole is open (mosquitto: never, it redelivers in order)."""
SEQ_MOD = 2**32
GIVEN_UP_KEPT = 100  # seq ranges given up on, to tell late data from redeliveries


def seq_step(previous: int, seq: int) -> int:
    """How far ``seq`` is ahead of ``previous`` in one stream: 1 = next, 0 = not numbered (or the same batch),
    > 1 = a hole of ``step - 1`` batches; negative = went backwards (a new stream, or an older batch)."""
    step = (seq - previous) % SEQ_MOD
    return step - SEQ_MOD if step > SEQ_MOD // 2 else step


@dataclass
class SensorInbox:
    """Reorder buffer for one sensor; ``window_s`` of data time is held back before release, and
    ``hole_wait_s`` more past a seq hole."""

    window_s: float = 5.0
    hole_wait_s: float = HOLE_WAIT_S
    _pending: list[tuple[int, int, SampleBatch]] = field(default_factory=list)
    _pending_starts: set[int] = field(default_factory=set)
    _released_until_ns: int | None = None
    _newest_end_ns: int | None = None
    _last_seq: int | None = None  # seq of the last batch released
    _tiebreak: int = 0
    # start times recently released, to tell a QoS 1 redelivery ("duplicate") from data that came
    # too late to place ("late"); bounded so a sensor's state does not grow over the night
    _recent_starts: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_STARTS_KEPT))
    # seq ranges (first, last) released past after the wait: a batch in one is late data, not a redelivery
    _given_up: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=GIVEN_UP_KEPT))
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, batch: SampleBatch) -> list[SampleBatch]:
        """Accept one batch; return the batches that are now due, in time order."""
        half_sample_ns = int(5e8 / batch.rate_hz)
        if batch.start_ns in self._pending_starts:
            self.counts["duplicate"] += 1
            return []
        if self._released_until_ns is not None and batch.start_ns < self._released_until_ns - half_sample_ns:
            # Either a redelivery of something already scored or data too late to place.
            self.counts["duplicate" if self._released_before(batch) else "late"] += 1
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

    @property
    def waiting_for_hole(self) -> bool:
        """The oldest batch held waits for a seq hole before it to fill."""
        return bool(self._pending) and self._hole_before(self._pending[0][2]) > 0

    def _hole_before(self, batch: SampleBatch) -> int:
        """Batches missing between the last one released and ``batch`` (0: none, or nothing to tell by)."""
        if self._last_seq is None:
            return 0
        return max(0, seq_step(self._last_seq, batch.seq) - 1)

    def _released_before(self, batch: SampleBatch) -> bool:
        """A batch behind the released stream: was it released (a redelivery) rather than missed (late)?"""
        if batch.start_ns in self._recent_starts:
            return True
        if self._last_seq is None or batch.seq == self._last_seq == 0:
            return False  # nothing to tell by
        for first, last in self._given_up:
            if 0 <= seq_step(first, batch.seq) <= seq_step(first, last):
                return False  # in a hole given up on: late data
        return seq_step(self._last_seq, batch.seq) <= 0  # numbered at or before the last released

    def _release(self, before_ns: int | None) -> list[SampleBatch]:
        due: list[SampleBatch] = []
        hole_before_ns = None if before_ns is None else before_ns - int(self.hole_wait_s * 1e9)
        while self._pending and (before_ns is None or self._pending[0][0] <= before_ns):
            start_ns, _, batch = self._pending[0]
            missing = self._hole_before(batch)
            if missing and hole_before_ns is not None and start_ns > hole_before_ns:
                break  # a seq hole: the missing batches are in transit (see the module docstring)
            heapq.heappop(self._pending)
            self._pending_starts.discard(batch.start_ns)
            if self._released_until_ns is not None and batch.start_ns < self._released_until_ns - int(
                5e8 / batch.rate_hz
            ):
                # overlaps what was released just before it (two batches claiming one time span)
                self.counts["overlap"] += 1
                continue
            if missing:
                assert self._last_seq is not None
                self.counts["holes_given_up"] += 1
                self._given_up.append(((self._last_seq + 1) % SEQ_MOD, (batch.seq - 1) % SEQ_MOD))
            due.append(batch)
            self._recent_starts.append(batch.start_ns)
            self._last_seq = batch.seq
            self._released_until_ns = max(self._released_until_ns or batch.end_ns, batch.end_ns)
        return due
