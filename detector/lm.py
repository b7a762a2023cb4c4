"""Leg-movement detection on one sensor: timestamps, gaps, activity, hysteresis, movement kinds.

:class:`LegDetector` is incremental: it takes samples in any chunking and returns each movement once
its offset is confirmed (``offset_quiet_s`` of quiet after it). Its state is a few floats plus the
filter and floor state: bounded over a night. A movement is a twitch when it is shorter than
``min_lm_s`` or has no ``sustained_s`` window whose median is above the offset level (a jerk, not a
contraction); otherwise it goes on to the event-level rules (which call > 10 s a long movement).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

from detector.params import DetectorParams
from detector.signal import ActivityFilter, NoiseFloor

logger = logging.getLogger(__name__)

MAX_PIECE = 1 << 18
"""Samples processed at once: bounds temporary memory; results do not depend on it."""

STAT_SCALE = 10_000
"""Epoch sums are kept in integer 0.1 mg so that they are exact in any chunking."""


@dataclass(frozen=True, slots=True)
class RawMovement:
    """A movement on one leg as detected, before the event-level rules."""

    onset: float
    offset: float
    side: str
    kind: str  # "lm" (goes to the rules) or "twitch"

    @property
    def duration(self) -> float:
        return self.offset - self.onset


@dataclass(frozen=True, slots=True)
class LegGap:
    """No data on one leg from ``start`` (last sample before) to ``end`` (first sample after)."""

    start: float
    end: float
    side: str


class LegDetector:
    """Incremental detector for one sensor (see the module docstring)."""

    def __init__(self, side: str, params: DetectorParams | None = None) -> None:
        self.side = side
        self.params = params or DetectorParams()
        self.rate_hz: float | None = self.params.rate_hz
        self._buffer_t: list[np.ndarray] = []
        self._buffer_xyz: list[np.ndarray] = []
        self._buffered = 0
        self._filter: ActivityFilter | None = None
        self._floor: NoiseFloor | None = None
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.samples = 0
        self.missing_s = 0.0
        self.gaps: list[LegGap] = []  # only gaps >= series_gap_s; a few per night
        # hysteresis state
        self._active = False
        self._onset_t = 0.0
        self._onset_g = 0
        self._sustained = False
        self._quiet_t: float | None = None
        self._tail = np.zeros(0, dtype=np.int64)  # last sustained_n-1 "not below" flags
        self._sustained_n = 1
        # epoch table: epoch index -> [samples, sum x, sum y, sum z (0.1 mg), active samples]
        self.epochs: dict[int, np.ndarray] = {}
        self.twitch_count = 0

    # ----------------------------------------------------------------- public
    @property
    def watermark(self) -> float:
        """No movement starting before this time can still be reported by this leg."""
        if self._buffered:
            return float(self._buffer_t[0][0])
        if self.last_t is None:
            return -math.inf
        return self._onset_t if self._active else self.last_t

    def feed(self, t: np.ndarray, xyz: np.ndarray) -> tuple[list[RawMovement], list[LegGap]]:
        """Consume samples (t strictly increasing, after any earlier sample); return closed movements and gaps."""
        t, xyz = self._validated(t, xyz)
        if t.shape[0] == 0:
            return [], []
        if self.first_t is None and not self._buffered:
            self.first_t = float(t[0])
        if self.rate_hz is None:
            self._buffer_t.append(t)
            self._buffer_xyz.append(xyz)
            self._buffered += t.shape[0]
            if self._buffered < self.params.rate_estimate_samples:
                return [], []
            t, xyz = self._take_buffer()
            n = self.params.rate_estimate_samples
            self.rate_hz = float(1.0 / np.median(np.diff(t[:n])))
            logger.debug("%s: estimated sample rate %.3f Hz", self.side, self.rate_hz)
        return self._process(t, xyz)

    def skip_to(self, until: float) -> tuple[list[RawMovement], list[LegGap]]:
        """Declare that this leg has no data up to ``until`` (sensor lost): closes any movement, adds a gap."""
        out: list[RawMovement] = []
        gaps: list[LegGap] = []
        if self._buffered:
            out, gaps = self.flush()
        if self.last_t is None or until <= self.last_t:
            return out, gaps
        self._close_gap(self.last_t, until, out, gaps)
        self.last_t = until
        if self._filter is not None:
            self._filter.reset()
        return out, gaps

    def flush(self) -> tuple[list[RawMovement], list[LegGap]]:
        """End of data: process buffered samples and close a movement still in progress."""
        out: list[RawMovement] = []
        gaps: list[LegGap] = []
        if self._buffered:
            t, xyz = self._take_buffer()
            if t.shape[0] < 2:
                logger.warning("%s: only %d sample(s); nothing to score", self.side, t.shape[0])
                return out, gaps
            self.rate_hz = float(1.0 / np.median(np.diff(t)))
            out, gaps = self._process(t, xyz)
        if self._active and self.last_t is not None:
            self._close_movement(self.last_t, out, lagged=False)
        return out, gaps

    # ----------------------------------------------------------------- internals
    def _validated(self, t: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] != t.shape[0]:
            raise ValueError(f"{self.side}: expected t (n,) and xyz (n, 3), got {t.shape} and {xyz.shape}")
        if t.shape[0] == 0:
            return t, xyz
        if not (np.isfinite(t).all() and np.isfinite(xyz).all()):
            raise ValueError(f"{self.side}: samples contain NaN or infinity")
        previous = self._buffer_t[-1][-1] if self._buffered else self.last_t
        if previous is not None and t[0] <= previous:
            raise ValueError(f"{self.side}: sample time {t[0]!r} is not after the previous sample {previous!r}")
        if t.shape[0] > 1:
            steps = np.diff(t)
            bad = np.flatnonzero(steps <= 0)
            if bad.size:
                i = int(bad[0]) + 1
                raise ValueError(f"{self.side}: sample {i} time {t[i]!r} is not after sample {i - 1} ({t[i - 1]!r})")
        return t, xyz

    def _take_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        t = np.concatenate(self._buffer_t)
        xyz = np.concatenate(self._buffer_xyz)
        self._buffer_t, self._buffer_xyz, self._buffered = [], [], 0
        return t, xyz

    def _ensure_filters(self) -> None:
        if self._filter is None:
            assert self.rate_hz is not None
            p = self.params
            self._filter = ActivityFilter(self.rate_hz, p)
            self._floor = NoiseFloor(round(p.floor_block_s * self.rate_hz), p.floor_window_blocks, p.floor_quantile)
            self._sustained_n = max(1, round(p.sustained_s * self.rate_hz))
            self._tail = np.zeros(self._sustained_n - 1, dtype=np.int64)

    def _process(self, t: np.ndarray, xyz: np.ndarray) -> tuple[list[RawMovement], list[LegGap]]:
        self._ensure_filters()
        p = self.params
        assert self.rate_hz is not None and self._filter is not None
        period = 1.0 / self.rate_hz
        prev = self.last_t
        steps = np.diff(t, prepend=t[0] if prev is None else prev)
        holes = steps > p.missing_dt_periods * period
        if holes.any():
            self.missing_s += float((steps[holes] - period).sum())
        cuts = np.flatnonzero(steps >= p.filter_reset_s)
        out: list[RawMovement] = []
        gaps: list[LegGap] = []
        cut_set = set(cuts.tolist())
        bounds = [0, *cuts.tolist(), t.shape[0]]
        for a, b in itertools.pairwise(bounds):
            if a == b:
                continue
            if a in cut_set:
                hole_start = float(t[a - 1]) if a > 0 else float(prev)  # type: ignore[arg-type]
                if t[a] - hole_start >= p.series_gap_s:
                    self._close_gap(hole_start, float(t[a]), out, gaps)
                self._filter.reset()
            for start in range(a, b, MAX_PIECE):
                stop = min(b, start + MAX_PIECE)
                self._run_piece(t[start:stop], xyz[start:stop], out)
        self.last_t = float(t[-1])
        return out, gaps

    def _close_gap(self, start: float, end: float, out: list[RawMovement], gaps: list[LegGap]) -> None:
        if self._active:
            self._close_movement(start, out, lagged=False)
        gap = LegGap(start, end, self.side)
        self.gaps.append(gap)
        gaps.append(gap)

    def _close_movement(self, quiet_start: float, out: list[RawMovement], *, lagged: bool = True) -> None:
        """Close the open movement. The activity stays up after the leg stops: ``diff_lag_s`` (the lagged
        difference), the low-pass group delay (sqrt(2)/(2 pi f) for a 2nd-order Butterworth) and about
        three envelope time constants to decay to the offset level; the offset is the start of the quiet
        run minus that tail (never before the onset)."""
        p = self.params
        tail = p.diff_lag_s + math.sqrt(2) / (2 * math.pi * p.lowpass_hz) + 3 * p.envelope_s
        offset = max(quiet_start - tail, self._onset_t + 1e-3) if lagged else quiet_start
        duration = offset - self._onset_t
        kind = "lm" if duration >= p.min_lm_s and self._sustained else "twitch"
        if kind == "twitch":
            self.twitch_count += 1
        out.append(RawMovement(self._onset_t, offset, self.side, kind))
        self._active = False
        self._quiet_t = None
        self._sustained = False

    def _run_piece(self, t: np.ndarray, xyz: np.ndarray, out: list[RawMovement]) -> None:
        p = self.params
        assert self._filter is not None and self._floor is not None
        n = t.shape[0]
        g0 = self.samples
        env = self._filter.process(xyz)
        floor = self._floor.per_sample(env)
        high = np.maximum(floor * p.onset_factor, p.onset_min_g)
        low = np.maximum(floor * p.offset_factor, p.offset_min_g)
        above = env > high
        below = env < low
        self._accumulate_epochs(t, xyz, ~below)

        # sustained-activity windows: more than half of the last sustained_n samples not below
        w = self._sustained_n
        flags = np.concatenate((self._tail, (~below).astype(np.int64)))
        csum = np.concatenate(([0], np.cumsum(flags)))
        win_ok = 2 * (csum[w:] - csum[:-w]) > w  # window ending at piece index i
        self._tail = flags[flags.shape[0] - (w - 1) :] if w > 1 else self._tail

        # runs of "below" samples, including one carried over while a movement is open
        prev_below = 1 if (self._active and self._quiet_t is not None) else 0
        b = below.astype(np.int8)
        d = np.diff(b, prepend=np.int8(prev_below))
        starts = np.flatnonzero(d == 1)
        ends = np.flatnonzero(d == -1)
        start_t = t[starts]
        if prev_below:
            if below[0]:
                starts = np.concatenate(([0], starts))
                start_t = np.concatenate(([self._quiet_t], start_t))
            else:
                ends = ends[1:]
        if ends.shape[0] < starts.shape[0]:
            ends = np.concatenate((ends, [n]))
        confirm = np.searchsorted(t, start_t + p.offset_quiet_s, side="left")
        qualified = confirm < ends
        q_starts, q_start_t, q_ends = starts[qualified], start_t[qualified], ends[qualified]
        above_idx = np.flatnonzero(above)

        pos = 0
        while True:
            if not self._active:
                j = int(np.searchsorted(above_idx, pos))
                if j == above_idx.shape[0]:
                    break
                k = int(above_idx[j])
                self._active = True
                self._onset_t = float(t[k])
                self._onset_g = g0 + k
                self._sustained = False
                self._quiet_t = None
                pos = k
            first_window = max(self._onset_g + w - 1 - g0, 0)
            r = int(np.searchsorted(q_starts, pos))
            if r < q_starts.shape[0]:
                s = int(q_starts[r])
                if not self._sustained and first_window < s:
                    self._sustained = bool(win_ok[first_window:s].any())
                self._close_movement(float(q_start_t[r]), out)
                pos = int(q_ends[r])
                continue
            if not self._sustained and first_window < n:
                self._sustained = bool(win_ok[first_window:].any())
            self._quiet_t = float(start_t[-1]) if (below[-1] and start_t.shape[0]) else None
            break
        self.samples += n

    def _accumulate_epochs(self, t: np.ndarray, xyz: np.ndarray, active: np.ndarray) -> None:
        epoch = np.floor(t / self.params.epoch_s).astype(np.int64)
        # t is increasing, so each epoch is one contiguous run: exact integer sums with reduceat
        starts = np.concatenate(([0], np.flatnonzero(np.diff(epoch)) + 1))
        columns = np.empty((t.shape[0], 5), dtype=np.int64)
        columns[:, 0] = 1
        np.rint(xyz * STAT_SCALE, out=columns[:, 1:4], casting="unsafe")
        columns[:, 4] = active
        sums = np.add.reduceat(columns, starts, axis=0)
        for key, row in zip(epoch[starts].tolist(), sums, strict=True):
            known = self.epochs.get(key)
            if known is None:
                self.epochs[key] = row
            else:
                known += row
