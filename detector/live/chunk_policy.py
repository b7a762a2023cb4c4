"""How much of each leg the live detector holds before scoring it: latency while it keeps up, throughput
when it falls behind. A pure class: the service passes the clocks in (monotonic seconds, the worker thread's
CPU seconds), so every rule is tested step by step without waiting (tests/test_live_scale.py).

Why chunks at all: a scorer call costs about the same for 1 s of a leg as for 4 s (its cost is mostly fixed
filter set-up), so under load the service holds each leg's batches for ``chunk_s`` of data (1, 2, 4, ...
``max_chunk_s``) before scoring them. Results are the same for any chunking; only the latency changes.
"""

from __future__ import annotations

import math

BEHIND_AFTER_S = 1.0  # the socket has not run dry for this long: a backlog, score in longer chunks
# a backlog lengthens the chunk at most this often: doubling, and fourfold once it has lasted twice
# BEHIND_AFTER_S (0, 1, 4, 16 s). The policy acts once per group, and at 2000 sensors a group scored in 1-s
# chunks takes over a second, so doubling alone took 4-6 s of a short backlog (half of a 20-s one) to reach
# 16 s; a short spell of full reads in real time (a burst, a pause) takes a doubling or two
DOUBLE_EVERY_S = 0.25
BACKLOG_STEP = 4
BUSY_WINDOW_S = 2.0  # the worker thread's CPU share is measured over windows this long
BUSY_HIGH = 0.7  # above this share of a core the service is about to fall behind: longer chunks (cheaper)
# below it, shorter chunks again (lower latency); in between the chunk stays. The band is narrow because a
# chunk half as long costs less than 1.5 x as much (a scorer call's cost is mostly fixed)
BUSY_LOW = 0.5
BUSY_SHORTER_BELOW = 0.65  # in the band, try the half chunk below this share, unless it was measured above
BUSY_MEMORY_S = 60.0  # how long the CPU share measured at a chunk length is trusted for going back to it


class ChunkPolicy:
    """The chunk length (``chunk_s``) and what it is decided from.

    It doubles the chunk at most every ``DOUBLE_EVERY_S`` while the socket has not run dry for
    ``BEHIND_AFTER_S`` (a backlog at the broker; fourfold once that has lasted twice as long), and doubles it
    once per ``BUSY_WINDOW_S`` in which the worker thread used more than ``BUSY_HIGH`` of a core (a load that
    comes in bursts -- sensors in step, each second -- lets the socket run dry between bursts even when the
    service is about to fall behind). It halves the chunk (once per window) when the worker used less than
    ``BUSY_LOW``, or less than ``BUSY_SHORTER_BELOW`` unless the half chunk was measured at or above that
    within ``BUSY_MEMORY_S``: the cost curve is flat at long chunks, so the share alone would keep 16 s where
    4 s would do, and a half that proves too dear doubles back in the next window and is not tried again for
    a minute. Checkpoints count neither as load nor as backlog (:meth:`paused`)."""

    def __init__(self, now: float, max_chunk_s: float = 16.0) -> None:
        self.chunk_s = 0.0  # 0: every batch is scored on arrival (lowest latency)
        self.max_chunk_s = max_chunk_s
        self.last_dry = now  # when the socket last had nothing more to read
        self.last_doubled = -math.inf
        self.busy_share = 0.0  # the worker thread's CPU share (of one core) over the last full window
        self.measured: dict[float, tuple[float, float]] = {}  # chunk_s -> (CPU share, when measured)
        self._mark: tuple[float, float] | None = None  # (now, cpu) at the current window's start
        self._excluded = (0.0, 0.0)  # (wall, cpu) of the current window spent in checkpoints

    def socket_dry(self, now: float) -> None:
        """The last read took all the socket held: the service keeps up with the broker."""
        self.last_dry = now

    def paused(self, wall_s: float, cpu_s: float, ended_at: float) -> None:
        """The worker checkpointed for ``wall_s`` (``cpu_s`` of CPU), ending at ``ended_at``: one pickles every
        subject at once, whatever the chunk (a 1-s pause at 1000 subjects), so counted as load it made every
        window with one look busy; and what arrived meanwhile fills the next reads: the service's own pause,
        not a backlog."""
        wall_x, cpu_x = self._excluded
        self._excluded = (wall_x + wall_s, cpu_x + cpu_s)
        self.last_dry = max(self.last_dry, ended_at)

    def measure(self, now: float, cpu: float) -> bool:
        """Update the CPU share when a ``BUSY_WINDOW_S`` window has passed; True if it did. ``cpu``: the worker
        thread's own CPU time -- waiting for the socket or the GIL does not count, nor do other threads."""
        if self._mark is None:
            self._mark = (now, cpu)
        started, cpu_then = self._mark
        if now - started < BUSY_WINDOW_S:
            return False
        wall_x, cpu_x = self._excluded
        self._excluded = (0.0, 0.0)
        self._mark = (now, cpu)
        span = now - started - wall_x
        if span < BUSY_WINDOW_S / 2:
            return False  # mostly checkpoint: too little scoring time in this window to judge by
        self.busy_share = min(1.0, max(0.0, (cpu - cpu_then - cpu_x) / span))
        self.measured[self.chunk_s] = (self.busy_share, now)
        return True

    def adapt(self, now: float, cpu: float) -> None:
        """After each group: lengthen, keep or shorten ``chunk_s`` (see the class docstring)."""
        measured = self.measure(now, cpu)
        behind = now - self.last_dry > BEHIND_AFTER_S and now - self.last_doubled >= DOUBLE_EVERY_S
        if behind or (measured and self.busy_share > BUSY_HIGH):
            step = BACKLOG_STEP if behind and now - self.last_dry > 2 * BEHIND_AFTER_S else 2
            self.chunk_s = min(self.max_chunk_s, max(1.0, step * self.chunk_s))
            self.last_doubled = now
            return
        if not measured or now - self.last_dry > BEHIND_AFTER_S or self.chunk_s == 0:
            return  # one step per measured window (a share measured at a longer chunk says little about
            # a shorter one), and never shorter during a backlog
        half = 0.0 if self.chunk_s <= 1.0 else self.chunk_s / 2
        known = self.measured.get(half)
        half_fits = known is None or now - known[1] > BUSY_MEMORY_S or known[0] < BUSY_SHORTER_BELOW
        if self.busy_share < BUSY_LOW or (self.busy_share < BUSY_SHORTER_BELOW and half_fits):
            self.chunk_s = half

    def lull(self, now: float, cpu: float) -> bool:
        """Nothing arrived for a moment: is it a real lull (score what legs hold now: latency is free when
        there is nothing else to do) or the gap between bursts of a load in step (``BUSY_LOW`` or more of a
        core: scoring the holds in them would undo the longer chunks it needs to keep up)? An idle spell
        brings the share down within one window."""
        self.measure(now, cpu)
        return self.busy_share < BUSY_LOW
