"""Sample timestamps: device clock -> wall clock, and gap detection. Pure, clock-free logic.

Why a running minimum: a notification arrives ``latency`` after its last sample was taken, and
latency is always positive and varies (connection interval, retries, the host's scheduler). The
smallest ``arrival - device_time`` seen is the best estimate of the true clock offset plus the
floor latency; averaging would bake the jitter in. The device crystal drifts (tens of ppm) against
the host, so the offset is fitted as a line through per-window minima rather than held constant.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

NS = 1_000_000_000


@dataclass
class OffsetTracker:
    """Maps a local timeline ``x`` (ns) to wall ns: ``wall = x + offset(x)``.

    ``offset`` is a line through the minima of ``arrival - x`` in windows of ``window_ns`` over the
    last ``history`` windows. A jump larger than ``reset_ns`` (device reboot, clock set) restarts it.
    """

    window_ns: int = 30 * NS
    history: int = 120  # 1 h of 30-s windows
    reset_ns: int = 5 * NS
    _minima: deque[tuple[int, int]] = field(default_factory=deque)  # (x, offset) of each closed window
    _cur: tuple[int, int] | None = None  # (x, offset) minimum of the open window
    _cur_start: int = 0
    _slope: float = 0.0
    _intercept: float = 0.0
    _x0: int = 0
    _y0: int = 0
    resets: int = 0

    def observe(self, x_ns: int, arrival_ns: int) -> None:
        off = arrival_ns - x_ns
        if self._cur is not None and abs(off - self.offset_at(x_ns)) > self.reset_ns:
            self.reset()
            self.resets += 1
        if self._cur is None:
            self._cur, self._cur_start = (x_ns, off), x_ns
            self._refit()
            return
        if x_ns - self._cur_start >= self.window_ns:
            self._minima.append(self._cur)
            if len(self._minima) > self.history:
                self._minima.popleft()
            self._cur, self._cur_start = (x_ns, off), x_ns
            self._refit()
        elif off < self._cur[1]:
            self._cur = (x_ns, off)
            if len(self._minima) < 2:
                self._refit()

    def _refit(self) -> None:
        points = list(self._minima)
        if len(points) < 2:
            # too early for a slope: the lowest offset seen so far
            best = min([*points, self._cur], key=lambda p: p[1]) if self._cur else points[0]
            self._slope, self._x0, self._y0, self._intercept = 0.0, best[0], best[1], 0.0
            return
        # fit relative to the newest minimum: offsets are ~1e18 ns, beyond float64's exact integers
        self._x0, self._y0 = points[-1]
        xs = np.array([p[0] - self._x0 for p in points], dtype=np.float64)
        ys = np.array([p[1] - self._y0 for p in points], dtype=np.float64)
        slope, intercept = np.polyfit(xs, ys, 1)
        self._slope, self._intercept = float(slope), float(intercept)

    def offset_at(self, x_ns: int) -> int:
        return self._y0 + round(self._intercept + self._slope * (x_ns - self._x0))

    def to_wall(self, x_ns: int) -> int:
        return x_ns + self.offset_at(x_ns)

    @property
    def drift_ppm(self) -> float:
        return self._slope * 1e6

    @property
    def ready(self) -> bool:
        return self._cur is not None

    @property
    def warmed_up(self) -> bool:
        """At least one full window of minima seen: the estimate no longer jumps by the jitter."""
        return len(self._minima) >= 1

    def reset(self) -> None:
        self._minima.clear()
        self._cur = None
        self._slope = self._intercept = 0.0


@dataclass(frozen=True, slots=True)
class TimedChunk:
    """Consecutive samples with their wall times; ``lost_before`` samples are missing before them."""

    t_ns: np.ndarray  # int64 wall ns per sample
    xyz_g: np.ndarray  # float (n, 3) in g
    lost_before: int = 0  # samples known to be missing just before this chunk
    gap: bool = False  # True when a new stream segment starts here (first chunk, loss, reconnect)


@dataclass
class DeviceClockTimeline:
    """Polar: each frame carries the device time of its last sample.

    Samples of a frame are spaced by the device's own step since the previous frame (so a device
    running 0.1 % fast is not squeezed onto the nominal grid); a step that disagrees with
    ``n / rate`` by more than ``tolerance`` is a loss and opens a new segment.
    """

    rate_hz: float
    tolerance: float = 0.25  # fraction of the frame duration
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    max_slew_ns: int = 1_000_000
    jump_ns: int = 100_000_000
    _offset: int | None = None
    _last_device_ns: int | None = None
    frames: int = 0
    lost_samples: int = 0
    gaps: int = 0

    def frame(self, device_ns: int, xyz_g: np.ndarray, arrival_ns: int) -> TimedChunk:
        n = len(xyz_g)
        nominal = NS / self.rate_hz
        self.frames += 1
        prev = self._last_device_ns
        lost, gap = 0, prev is None
        if prev is not None:
            step = device_ns - prev
            expected = n * nominal
            if step <= 0 or abs(step - expected) > max(self.tolerance * expected, 1.5 * nominal):
                gap = True
                lost = max(0, round(step / nominal) - n) if step > 0 else 0
                self.gaps += 1
                self.lost_samples += lost
        period = nominal if gap or prev is None else (device_ns - prev) / n
        self.tracker.observe(device_ns, arrival_ns)
        self._last_device_ns = device_ns
        rel = device_ns - np.round((n - 1 - np.arange(n)) * period).astype(np.int64)
        return TimedChunk(rel + self._slewed_offset(device_ns), xyz_g, lost, gap)

    def _slewed_offset(self, device_ns: int) -> int:
        """Once warmed up, move the offset by at most ``max_slew_ns`` a frame, so consecutive
        batches join up on the wire; 1 ms a frame still follows 500 ppm of drift."""
        estimate = self.tracker.offset_at(device_ns)
        if self._offset is None or not self.tracker.warmed_up or abs(estimate - self._offset) > self.jump_ns:
            self._offset = estimate
        else:
            self._offset += max(-self.max_slew_ns, min(self.max_slew_ns, estimate - self._offset))
        return self._offset

    def link_lost(self) -> None:
        """After a reconnect the next frame starts a new segment, whatever its timestamp says."""
        self._last_device_ns = None


@dataclass
class CounterTimeline:
    """WitMotion: no device clock, so sample k of a segment is at ``anchor + k/rate``.

    The anchor is the running minimum of ``arrival - k/rate`` (with a drift fit, as for Polar);
    when arrivals run later than the counter predicts by more than ``gap_s``, packets were lost:
    the counter skips ahead by the missing count and a new segment starts.
    """

    rate_hz: float
    gap_s: float = 0.25
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    _k: int = 0
    _started: bool = False
    _usual_late: float = 0.0
    lost_samples: int = 0
    gaps: int = 0

    def packets(self, xyz_g: np.ndarray, arrival_ns: int) -> TimedChunk:
        n = len(xyz_g)
        nominal = NS / self.rate_hz
        gap = not self._started
        lost = 0
        if self._started:
            last_x = round((self._k + n - 1) * nominal)
            late = arrival_ns - self.tracker.to_wall(last_x)
            if late > self.gap_s * NS:
                # the packet's own latency above the floor is not loss: subtract the usual excess
                lost = max(1, round((late - self._usual_late) / nominal))
                self._k += lost
                gap = True
                self.gaps += 1
                self.lost_samples += lost
            else:
                self._usual_late += 0.05 * (max(late, 0) - self._usual_late)
        self._started = True
        ks = self._k + np.arange(n)
        x = np.round(ks * nominal).astype(np.int64)
        self.tracker.observe(int(x[-1]), arrival_ns)
        self._k += n
        t = x + self.tracker.offset_at(int(x[-1]))
        return TimedChunk(t, xyz_g, lost, gap)

    def link_lost(self) -> None:
        """The device restarts its stream on reconnect; unknown how much was missed."""
        self._started = False
        self._k = 0
        self.tracker.reset()
