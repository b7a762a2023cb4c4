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

from detector.scoring import bounce, edges
from detector.scoring.epochs import COLUMNS, STAT_SCALE, EpochTable
from detector.scoring.inbed import walking_blocks_mask
from detector.scoring.kernels import epoch_sums, first_bad_sample, hysteresis_levels, onset_floor, sample_steps
from detector.scoring.nonwear import WearTable
from detector.scoring.params import DetectorParams
from detector.scoring.signal import ActivityFilter, NoiseFloor, estimate_rate_hz

logger = logging.getLogger(__name__)

IDLE, MOVING, HELD = 0, 1, 2
"""States of the open movement of one leg (see :meth:`LegDetector._run_piece`)."""

MAX_PIECE = 1 << 18
"""Samples processed at once: bounds temporary memory; results do not depend on it."""

MAX_STEP_G = 16.0
"""The largest acceleration step a sensor reports (the widest range of common MEMS accelerometers): bounds
how far the boundary filter can have smeared an edge (4h)."""


EPOCH_COLUMNS = COLUMNS
"""Columns of a row of :attr:`LegDetector.epochs`: samples, sum x, sum y, sum z, active samples, sum envelope."""


@dataclass(frozen=True, slots=True)
class RawMovement:
    """A movement on one leg as detected, before the event-level rules."""

    onset: float
    offset: float
    side: str
    kind: str  # "lm" (goes to the rules) or "twitch"
    # resting gravity vector (low-passed, sensor frame, g) before the onset and after the offset: tells a
    # movement that took the leg between lying and upright (getting into or out of bed); None if unknown
    before: tuple[float, float, float] | None = None
    after: tuple[float, float, float] | None = None

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
        self._still_floor: NoiseFloor | None = None  # noise floor of the stillness signal
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.samples = 0
        self._missing_us = 0  # missing time in integer microseconds: exact in any chunking
        self.gaps: list[LegGap] = []  # only gaps >= series_gap_s; a few per night
        # hysteresis state (see _run_piece): idle, moving (a burst of activity) or held (displaced, still)
        self._state = IDLE
        self._ref = np.zeros(3)  # resting orientation (low-passed vector) before the open movement
        self._peak = 0.0  # largest distance from _ref so far in the open movement (g)
        # ... counting only samples where the leg was still (stillness signal quiet): there the reading is
        # gravity alone, not the linear acceleration of the motion (see _quiet_confirmed); 0 = none yet
        self._peak_still = 0.0
        # the open movement changed the acceleration across gravity (beyond the noise band): the shank
        # tilted or accelerated sideways. A vertical bounce of the mattress (a bed partner) only scales
        # the gravity reading; it is not a leg movement (see _update_peaks)
        self._across = False
        # the open movement's across rest: since when only motion along gravity (a bed bounce) went on
        # (detector.scoring.bounce); its end decides whether that tail is part of the movement
        self._xrest = bounce.new_state()
        self._x_floor = np.zeros(0)  # the piece's stillness floor (the across rests' levels come from it)
        self._onset_t = 0.0  # onset of the open movement
        self._onset_g = 0  # sample index where the current burst crossed the onset level
        self._sustained = False  # the current burst has a sustained window
        self._held = False  # the open movement has been held displaced and came back (one movement)
        self._quiet_t: float | None = None  # start of a rest stretch carried over between pieces
        self._quiet_g = 0  # ... and the sample index of its first still sample
        self._break_n = 0  # ... which the piece left in a noise break this many samples long (0: still)
        self._run_t = 0.0  # start of the still run of that rest open at the piece boundary (quiet_lag_s back)
        self._run_g = 0  # ... and its first sample index
        # after a movement ends (or is held) the activity still decays for ~diff_lag_s: until it has been
        # below the offset level once, only activity with the leg actually moving (stillness signal up)
        # starts a new burst
        self._tail_guard = False
        self._settle_g = 0  # sample index before which the tail guard holds (filters settling after a hole)
        # a movement closed inside a still run that outlasted the piece: the search for the next burst
        # resumes where that run ends, exactly as it would had the run been in one piece
        self._skip_still_run = False
        # the last sample of the previous piece was still: a still run open at the piece boundary continues
        # (it is not a new run starting at the piece's first sample); only a carried run (_quiet_t) counts
        self._prev_quiet = False
        self._still_run_n = 0  # ... and how many samples the still run open there has lasted
        # sustained windows seen inside the carried still run: they count only if that run does not end
        # the movement (the continuous scan looks at windows up to the start of the run that confirms)
        self._sustained_in_run = False
        self._still_g = -1  # sample index where the leg last became still (start of the confirmed quiet run)
        self._held_offset = 0.0  # when the motion stopped, entering the held state
        self._held_rest = np.zeros(3)  # ... and the leg's resting vector there
        self._held_until = 0.0  # held longer than this: the leg is in a new position
        # held: the last sample time (filter time) the leg was away from its first rest (beyond the return band),
        # and the first time after it that it was within the noise band of that rest (nan: not yet)
        self._away_t = 0.0
        self._entered_t = math.nan
        # while a burst follows a hold: (offset of the first movement, its sustained flag, onset of the
        # burst as a new movement, its resting orientation, its peak distance)
        self._alt: tuple[float, bool, float, np.ndarray, float] | None = None
        self._alt_across = (False, False)  # ... and _across of the first movement and of the new reading
        self._alt_peak_still = 0.0  # ... and _peak_still of the new reading
        self._last_offset = -math.inf
        self._tail = np.zeros(0, dtype=np.int64)  # last sustained_n-1 "not below" flags
        self._sustained_n = 1
        # recent samples for the onset/offset refinement: time, low-passed and boundary vectors, offset level
        self._hist_t = np.zeros(0)
        self._hist_low = np.zeros((0, 3))
        self._hist_fast = np.zeros((0, 3))
        self._hist_raw = np.zeros((0, 3))  # the samples themselves: sharp edges placed without the filter's smear
        self._hist_level = np.zeros(0)
        self._hist_n = 1
        self._floor_cache = (-1, 0)  # (samples seen, _onset_floor_index) -- the watermark is asked often
        self._lag_n = 1
        self._delay_s = 0.0
        self._avg_n = 1  # samples averaged for a resting reference of the boundary vector
        self._quiet_n = 1  # samples in offset_quiet_s
        self._bridge_n = 0  # longest break of a still run that is noise, not motion (samples < quiet_lag_s)
        self._lag_q_n = 1  # samples in quiet_lag_s: a still run this long may be followed by a noise break
        # epoch table: epoch index -> [samples, sum x, sum y, sum z (0.1 mg), active samples,
        # sum of the activity envelope (0.1 mg)] -- integers, so exact in any chunking
        self.epochs = EpochTable()
        self.blocks = EpochTable()  # the same sums per walk_block_s, walking blocks only (a walk shorter than an epoch)
        # per-epoch integer sums for the non-wear test (detector.scoring.nonwear): SD, range, white-noise ratio
        self.wear = WearTable(self.params.epoch_s)
        self.twitch_count = 0
        self.vibration_count = 0  # bursts rejected as bed vibration (no change across gravity)

    # ----------------------------------------------------------------- public
    @property
    def missing_s(self) -> float:
        """Seconds of missing data inside the recording (holes longer than ``missing_dt_periods``)."""
        return self._missing_us / 1e6

    @property
    def watermark(self) -> float:
        """No movement starting before this time can still be reported by this leg."""
        if self._buffered:
            return float(self._buffer_t[0][0])
        if self.last_t is None:
            return -math.inf
        if self._state != IDLE:
            return self._onset_t
        n = self._hist_t.shape[0]
        if n == 0:
            return self.last_t
        return min(self.last_t, float(self._hist_t[self._onset_floor_index()]) - self._delay_s)

    def _onset_floor_index(self) -> int:
        """History index at or before which no onset found in later samples can be refined back to.

        An onset detected at a later sample is refined back over the lagged window (``_refine_onset``):
        to the sample after the last one inside the noise band of the rest before that window, at most
        diff_lag_s back. The loose bound is that whole window -- it held every movement 0.5 s longer than
        the rules need (bilateral and same-leg merging wait for the watermark). The tight bound: a recent
        sample ``m`` that lies inside the noise band of *every* rest a later refinement could start from
        (window starts ``lo <= m``) stops any such refinement after it. A leg lying still has its last
        sample there, so the watermark trails the data only by the filter delay; a leg drifting below the
        onset level keeps the loose bound. Window starts before the leg's last "became still" (+ the rest
        average) are not candidates: the refinement never starts there.
        """
        n = self._hist_t.shape[0]
        lag, avg = self._lag_n, self._avg_n
        loose = max(0, n - lag)
        if n < lag + avg + 1:
            return loose
        if self._floor_cache[0] == self.samples:
            return self._floor_cache[1]
        # window starts before the leg became still after its last movement (+ the rest average) are not
        # candidates: the refinement never starts there (_start_burst), so right after a movement the bound
        # is tight as soon as the rest after it is
        first_start = self._still_g - self.samples + avg + lag
        floor = onset_floor(self._hist_fast, self._hist_level, lag, avg, min(first_start, lag))
        self._floor_cache = (self.samples, floor)
        return floor

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
            self.rate_hz = estimate_rate_hz(t[:n], self.params.missing_dt_periods)
            logger.debug("%s: estimated sample rate %.3f Hz", self.side, self.rate_hz)
        return self._process(t, xyz)

    def skip_to(self, until: float, since: float | None = None) -> tuple[list[RawMovement], list[LegGap]]:
        """Declare that this leg has no data up to ``until`` (sensor lost): closes any movement, adds a gap.

        A leg that never had data needs ``since`` (e.g. the night's start) to know where its gap begins;
        without it nothing happens, as before."""
        out: list[RawMovement] = []
        gaps: list[LegGap] = []
        if self._buffered:
            out, gaps = self.flush()
        if self.last_t is None:
            if since is None or until <= since:
                return out, gaps
            self.last_t = float(since)  # the leg is absent from the night's start: one gap from there
        if until <= self.last_t:
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
            self.rate_hz = estimate_rate_hz(t, self.params.missing_dt_periods)
            out, gaps = self._process(t, xyz)
        if self._state != IDLE and self.last_t is not None:
            still = self._quiet_t is not None and self._prev_quiet  # the data ended in a still run
            self._close_now(self._run_t if still else self.last_t, out)
        return out, gaps

    # ----------------------------------------------------------------- internals
    def _validated(self, t: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.ascontiguousarray(t, dtype=np.float64).reshape(-1)
        xyz = np.ascontiguousarray(xyz, dtype=np.float64)  # the compiled loops take one layout
        if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] != t.shape[0]:
            raise ValueError(f"{self.side}: expected t (n,) and xyz (n, 3), got {t.shape} and {xyz.shape}")
        if t.shape[0] == 0:
            return t, xyz
        previous = self._buffer_t[-1][-1] if self._buffered else self.last_t
        bad = first_bad_sample(t, xyz, math.nan if previous is None else float(previous))
        if bad == -2:
            raise ValueError(f"{self.side}: samples contain NaN or infinity")
        if bad == 0:
            raise ValueError(f"{self.side}: sample time {t[0]!r} is not after the previous sample {previous!r}")
        if bad > 0:
            raise ValueError(
                f"{self.side}: sample {bad} time {t[bad]!r} is not after sample {bad - 1} ({t[bad - 1]!r})"
            )
        return t, xyz

    def _take_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        one = len(self._buffer_t) == 1  # a whole recording fed at once: no copy of it
        t = self._buffer_t[0] if one else np.concatenate(self._buffer_t)
        xyz = self._buffer_xyz[0] if one else np.concatenate(self._buffer_xyz)
        self._buffer_t, self._buffer_xyz, self._buffered = [], [], 0
        return t, xyz

    def _ensure_filters(self) -> None:
        if self._filter is None:
            assert self.rate_hz is not None
            p = self.params
            self._filter = ActivityFilter(self.rate_hz, p)
            self._floor = NoiseFloor(round(p.floor_block_s * self.rate_hz), p.floor_window_blocks, p.floor_quantile)
            self._still_floor = NoiseFloor(
                round(p.floor_block_s * self.rate_hz), p.floor_window_blocks, p.floor_quantile
            )
            self._sustained_n = max(1, round(p.sustained_s * self.rate_hz))
            self._tail = np.zeros(self._sustained_n - 1, dtype=np.int64)
            self._lag_n = self._filter.lag_n
            self._delay_s = self._filter.boundary_delay_s
            self._edges = self._filter.edge_windows
            # the most the boundary filter can delay the end of a movement (a stop 16 g high over the
            # smallest band): how much earlier than on the boundary alone a rest can be confirmed (4h)
            self._smear_s = self._edges.late_s(MAX_STEP_G / p.offset_min_g)
            self._smear_n = math.ceil(self._smear_s * self.rate_hz)
            self._hole_s = p.missing_dt_periods / self.rate_hz  # a longer step between samples is a hole
            # an offset is refined back from its confirmation over the quiet run, the lag and the envelope decay
            span = p.offset_quiet_s + p.diff_lag_s + 10 * p.envelope_s + 0.5
            self._avg_n = max(1, round(p.rest_average_s * self.rate_hz))
            self._quiet_n = max(1, round(p.offset_quiet_s * self.rate_hz))
            self._bridge_n = max(0, math.ceil(p.quiet_lag_s * self.rate_hz) - 1)
            self._lag_q_n = self._bridge_n + 1
            self._hist_n = self._lag_n + self._avg_n + 2 + math.ceil(span * self.rate_hz)
            # the longest look-backs: onset (lag + resting average), stillness window (quiet + average)
            assert self._hist_n > max(self._lag_n, self._quiet_n + self._smear_n) + self._avg_n

    def _process(self, t: np.ndarray, xyz: np.ndarray) -> tuple[list[RawMovement], list[LegGap]]:
        self._ensure_filters()
        p = self.params
        assert self.rate_hz is not None and self._filter is not None
        period = 1.0 / self.rate_hz
        prev = self.last_t
        missing_us, cuts = sample_steps(
            t, math.nan if prev is None else prev, p.missing_dt_periods * period, p.filter_reset_s, period
        )
        self._missing_us += int(missing_us)
        out: list[RawMovement] = []
        gaps: list[LegGap] = []
        if cuts.shape[0] == 0 and t.shape[0] <= MAX_PIECE:  # no hole that restarts the filters: one piece
            self._run_piece(t, xyz, out)
            self.last_t = float(t[-1])
            return out, gaps
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
                # the restarted filters settle on one noisy sample, and the lagged difference compares with
                # it for diff_lag_s (then the envelope decays): over that time, as in the tail after a
                # movement, only activity with the leg moving starts a burst. Else the settling alone could
                # start a burst inside a still run, which no rest could end (the run began before it)
                self._tail_guard = True
                self._settle_g = self.samples + self._lag_n + round(5 * p.envelope_s * self.rate_hz)
            for start in range(a, b, MAX_PIECE):
                stop = min(b, start + MAX_PIECE)
                self._run_piece(t[start:stop], xyz[start:stop], out)
        self.last_t = float(t[-1])
        return out, gaps

    def _close_gap(self, start: float, end: float, out: list[RawMovement], gaps: list[LegGap]) -> None:
        if self._state != IDLE:
            self._sustained = self._sustained or self._sustained_in_run  # closed at the gap, not at the run
            self._close_now(start, out)
        # after a gap the scan starts afresh (the same in any chunking: a gap is a piece boundary in all)
        self._tail_guard = False
        self._skip_still_run = False
        self._prev_quiet = False
        self._still_run_n = 0
        gap = LegGap(start, end, self.side)
        self.gaps.append(gap)
        gaps.append(gap)

    # ----------------------------------------------------------------- movement state machine
    def _emit(
        self,
        onset: float,
        offset: float,
        sustained: bool,
        out: list[RawMovement],
        across: bool,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
    ) -> None:
        p = self.params
        if not across:  # the gravity reading only grew and shrank along itself: the bed moved, not the leg
            self.vibration_count += 1
            return
        onset = max(onset, self._last_offset)
        offset = max(offset, onset + 1e-3)
        kind = "lm" if offset - onset >= p.min_lm_s and sustained else "twitch"
        if kind == "twitch":
            self.twitch_count += 1
        out.append(RawMovement(onset, offset, self.side, kind, _vector(before), _vector(after)))
        self._last_offset = offset

    def _to_idle(self) -> None:
        self._state = IDLE
        self._alt = None
        self._quiet_t = None
        self._sustained = False
        self._sustained_in_run = False
        self._held = False
        self._peak = 0.0
        self._peak_still = 0.0
        self._across = False

    def _close_now(self, end: float, out: list[RawMovement]) -> None:
        """Close the open movement at ``end`` (end of data or a gap); a held leg stopped at its hold."""
        if self._alt is not None:
            offset1, sustained1, onset2, _, _ = self._alt
            ref2 = self._alt[3]
            self._emit(self._onset_t, offset1, sustained1, out, self._alt_across[0], self._ref, ref2)
            self._emit(onset2, end, self._sustained, out, self._alt_across[1], ref2, self._last_low())
        elif self._state == HELD:
            sustained = self._sustained or self._held
            self._emit(self._onset_t, self._held_offset, sustained, out, self._across, self._ref, self._held_rest)
        else:
            sustained = self._sustained or self._held
            self._emit(self._onset_t, end, sustained, out, self._across, self._ref, self._last_low())
        self._to_idle()

    def _last_low(self) -> np.ndarray | None:
        """The low-passed vector at the last sample seen (where a movement closed by a gap or the end stopped)."""
        return self._hist_low[-1] if self._hist_low.shape[0] else None

    def _start_burst(self, k: int, g0: int, e: _Extended) -> None:
        """Activity crossed the onset level at piece index ``k``: a new movement, or (held) a burst that is
        either the release of the hold or a new movement from the held position (decided at its end)."""
        ke = e.h + k
        # the lagged window, but not before the leg became still after the previous movement
        lo = min(ke, max(e.back(ke - self._lag_n), e.h + self._still_g - g0 + self._avg_n))
        ref = e.low[lo].copy()  # orientation before the lagged window: at rest
        onset = self._refine_onset(ke, lo, e)
        if self._state == HELD:
            # alternative reading: the movement ended at the hold; this burst is a new one from there
            self._alt = (self._held_offset, self._sustained or self._held, onset, ref, 0.0)
            self._alt_across = (self._across, False)
            self._alt_peak_still = 0.0
        else:
            self._onset_t = onset
            self._ref = ref
            self._peak = 0.0
            self._peak_still = 0.0
            self._across = False
            self._held = False
        self._xrest = bounce.new_state()  # the across rest is followed from each burst on
        self._state = MOVING
        self._onset_g = g0 + k
        self._sustained = False
        self._sustained_in_run = False
        self._quiet_t = None

    def _refine_onset(self, ke: int, lo: int, e: _Extended) -> float:
        """Onset = where the distance from rest left the noise band, searched back over the lagged window;
        then on the unfiltered samples, inside the window the boundary filter can have smeared (4h)."""
        rest_lo = e.back(lo - self._avg_n)
        d2 = e.distance2(lo, ke + 1, e.rest(rest_lo, lo + 1))
        level = e.level[lo : ke + 1]
        inside = np.flatnonzero(d2 < level**2)
        first = lo + int(inside[-1]) + 1 if inside.size else lo
        onset = float(e.t[min(first, ke)]) - self._delay_s
        if not inside.size or first > ke:
            return onset
        rest, ratio = edges.rest_and_noise(e.raw[rest_lo : lo + 1], e.fast[rest_lo : lo + 1], self._edges.white_ratio)
        if ratio <= 0.0 or self._has_hole(e, rest_lo, ke + 1):
            return onset
        return edges.refine_onset(e.t[lo : ke + 1], e.raw[lo : ke + 1], level, ratio, rest, onset, self._edges)

    def _has_hole(self, e: _Extended, a: int, b: int) -> bool:
        """A step longer than missing_dt_periods among the samples [a, b): the edges there stay as found."""
        return edges.longest_step(e.t[a:b]) > self._hole_s

    def _refine_offset(self, ce: int, lo: int, e: _Extended) -> float:
        """Offset = where the distance from the final resting orientation returned into the noise band."""
        lo = max(lo, e.back(ce - self._hist_n + 1))
        d2 = e.distance2(lo, ce + 1, e.rest(ce + 1 - self._avg_n, ce + 1))
        outside = np.flatnonzero(d2 >= e.level[lo : ce + 1] ** 2)
        first = min(lo + int(outside[-1]) + 1 if outside.size else lo, ce)
        if outside.size and first > lo:
            # the leg came back to rest inside a hole in the data (dropped packets): when is unknown, so
            # the movement ends where it was last seen moving, as a movement cut by a data gap does. The
            # first sample after the hole would stretch a 0.2-s jerk over a 2-s hole into an LM
            period = 1.0 / self.rate_hz  # type: ignore[operator]
            if e.t[first] - e.t[first - 1] > self.params.missing_dt_periods * period:
                return float(e.t[first - 1]) + period - self._delay_s
        if not outside.size or first <= lo:
            return float(e.t[first]) - self._delay_s
        return self._unfiltered_offset(e, lo, first, ce)

    def _unfiltered_offset(self, e: _Extended, lo: int, first: int, ce: int) -> float:
        """The offset the boundary vector puts at extended index ``first``, placed again on the unfiltered
        samples (4h; :func:`detector.scoring.edges.unfiltered_offset`)."""
        return edges.unfiltered_offset(e.t, e.raw, e.fast, e.level, lo, first, ce, self._hole_s, self._edges)

    def _first_still(self, c0: int, end: int, e: _Extended) -> int:
        """First piece index in [c0, end) where the leg has stayed within the noise band of its current
        rest for the last offset_quiet_s (-1 if none). The stillness signal only compares samples
        quiet_lag_s apart, so a slow drift (postural sway) can keep it low while the leg moves: this
        checks the whole window against the rest, as the EMG rule does ("within 2 uV of resting level").

        The rest is timed as the offset is (4h): from where the unfiltered samples came back into the band,
        when the boundary vector's return was later only by as much as its filter smears a stop of that
        height. Timed on the boundary alone, a 0.6-s rest between two brisk movements lost 0.1-0.2 s to the
        filter's tails at both ends and the two were merged into one."""
        if end <= c0:
            return -1
        e.back(e.h + c0 - self._quiet_n - self._smear_n - self._avg_n)  # the look-back stays in the history
        found = edges.first_rest(
            e.t,
            e.raw,
            e.fast,
            e.level,
            e.h + c0,
            e.h + end,
            self._quiet_n,
            self._smear_n,
            self._avg_n,
            self.params.offset_quiet_s,
            self._hole_s,
            self._edges,
        )
        return found - e.h if found >= 0 else -1

    def _return_band(self, e: _Extended, a: int, b: int) -> np.ndarray:
        """Squared distance from the first rest within which a held leg counts as back (as in
        :meth:`_quiet_confirmed`: the noise band, or most of the way back from the farthest still position)."""
        peak = self._peak_still if self._peak_still > 0 else self._peak
        return np.maximum(e.level[a:b], self.params.return_fraction * peak) ** 2

    def _follow_return(self, e: _Extended, a: int, b: int) -> None:
        """Held, piece indices [a, b) scanned: follow the last sample where the leg was away from its first
        rest (the boundary vector against the resting orientation before the onset, beyond the return band),
        and the first sample after it within the noise band of that rest."""
        if b <= a:
            return
        lo, hi = e.h + a, e.h + b
        d2 = e.distance2(lo, hi, self._ref)
        away = np.flatnonzero(d2 >= self._return_band(e, lo, hi))
        inside = np.flatnonzero(d2 < e.level[lo:hi] ** 2)
        if away.size:
            self._away_t = float(e.t[lo + int(away[-1])])
            self._entered_t = math.nan
            inside = inside[inside > away[-1]]
        if math.isnan(self._entered_t) and inside.size:
            self._entered_t = float(e.t[lo + int(inside[0])])

    def _back_at_first_rest(self, e: _Extended, i: int) -> float | None:
        """The hold expired at piece index ``i``. If the leg left the held position and is back at its first
        rest, where its movement ended: where it came within the noise band of that rest (the EMG offset:
        the start of the rest), or, back only most of the way, the sample after it was last beyond the return
        band. None if it did not come back."""
        ie = e.h + i
        d2 = float(e.distance2(ie, ie + 1, self._ref)[0])
        if not (d2 < float(self._return_band(e, ie, ie + 1)[0]) and self._away_t > self._held_offset + self._delay_s):
            return None
        if not math.isnan(self._entered_t) and d2 < float(e.level[ie]) ** 2:
            return self._entered_t
        return self._away_t + 1.0 / self.rate_hz  # type: ignore[operator]

    def _update_peaks(self, e: _Extended, a: int, b: int, still: np.ndarray) -> None:
        """Track the largest distance from rest of the open movement (and of the alternative) over [a, b),
        overall and at the samples where the leg was still (``still``: flags of those samples)."""
        if b <= a:
            return
        d2 = e.distance2(a, b, self._ref, fast=False)
        self._peak = max(self._peak, float(np.sqrt(d2.max())))
        if still.any():
            self._peak_still = max(self._peak_still, float(np.sqrt(d2[still].max())))
        self._across = self._across or self._moved_across(e, a, b, self._ref)
        assert self._filter is not None
        p = self.params
        bounce.across_rest(
            e.t,
            e.low,
            e.fast,
            e.level,
            self._x_floor,
            p.offset_factor,
            p.offset_min_g,
            p.onset_factor,
            p.onset_min_g,
            self._filter.quiet_n,
            self._bridge_n,
            p.quiet_lag_s,
            a,
            b,
            e.h,
            self._xrest,
        )
        if self._alt is not None:
            o1, s1, on2, ref2, peak2 = self._alt
            d2 = e.distance2(a, b, ref2, fast=False)
            peak2 = max(peak2, float(np.sqrt(d2.max())))
            self._alt = (o1, s1, on2, ref2, peak2)
            if still.any():
                self._alt_peak_still = max(self._alt_peak_still, float(np.sqrt(d2[still].max())))
            self._alt_across = (self._alt_across[0], self._alt_across[1] or self._moved_across(e, a, b, ref2))

    @staticmethod
    def _moved_across(e: _Extended, a: int, b: int, ref: np.ndarray) -> bool:
        """Did the low-passed vector over [a, b) leave the noise band in a direction across ``ref`` (gravity
        at rest)? A leg movement tilts the shank (1 deg = 17 mg across gravity) or accelerates the ankle
        along its path; a bed partner moves the mattress, and the leg on it, up and down: that only
        scales the gravity reading along itself, which no leg muscle did."""
        up = ref / max(float(np.linalg.norm(ref)), 1e-9)
        dev = e.low[a:b] - ref
        along = dev @ up
        across2 = np.einsum("ij,ij->i", dev, dev) - along * along
        return bool((across2 >= e.level[a:b] ** 2).any())

    def _quiet_confirmed(self, qt: float, ce: int, lo: int, e: _Extended, out: list[RawMovement]) -> bool:
        """Activity has been quiet since ``qt`` for offset_quiet_s (confirmed at extended index ``ce``).

        Returns True when the movement is closed, False when the leg is held displaced (state HELD).
        """
        p = self.params
        offset = min(self._refine_offset(ce, lo, e), qt - self._delay_s)
        rest = e.low[ce]
        level = float(e.level[ce])
        # only motion along gravity (a bed bounce) for offset_quiet_s or more before that offset: it ended there
        tail = bounce.tail_start(self._xrest, offset + self._delay_s, rest, level, p.offset_quiet_s)
        if tail is not None:
            offset = tail - self._delay_s
        dev = float(np.linalg.norm(rest - self._ref))
        if self._alt is not None:
            offset1, sustained1, onset2, ref2, peak2 = self._alt
            dev2 = float(np.linalg.norm(rest - ref2))
            self._alt = None
            if dev <= dev2:  # back towards the original rest: the burst was the release of the hold
                self._held = True
            else:  # back to (or beyond) the held position: two movements
                self._emit(self._onset_t, offset1, sustained1, out, self._alt_across[0], self._ref, ref2)
                self._onset_t, self._ref, self._peak, self._held = onset2, ref2, peak2, False
                self._peak_still = self._alt_peak_still
                self._across = self._alt_across[1]
                dev = dev2
        # back near rest: within the noise band, or most of the way back from the farthest position. That
        # position is read where the leg was still (gravity alone): the linear acceleration of a quick rise
        # inflates the overall peak, so a small held dorsiflexion (a degree or two: 17-35 mg) looked
        # "half-way back" after a brisk rise and was split into two twitches. A movement with no still
        # moment keeps the overall peak
        peak = self._peak_still if self._peak_still > 0 else self._peak
        if dev < max(level, p.return_fraction * peak):
            self._emit(self._onset_t, offset, self._sustained or self._held, out, self._across, self._ref, rest)
            self._to_idle()
            return True
        self._state = HELD
        self._held_offset = offset
        self._held_rest = rest.copy()
        self._held_until = offset + p.hold_max_s
        self._away_t = offset + self._delay_s
        self._entered_t = math.nan
        self._quiet_t = None
        return False

    def _run_piece(self, t: np.ndarray, xyz: np.ndarray, out: list[RawMovement]) -> None:
        """One piece of samples through the activity filter, the floor and the movement state machine.

        States: IDLE -> (activity above the onset level) MOVING -> (offset_quiet_s below the offset level)
        back near rest: closed, or still displaced: HELD. HELD -> (still for hold_max_s) closed at the
        moment the motion stopped, or -> (a new burst) MOVING with two readings kept until the burst ends:
        the release of the hold (the leg returns to the original rest: one movement) or a new movement
        from the held position (it returns there: the first ended when the motion stopped).
        """
        p = self.params
        assert self._filter is not None and self._floor is not None
        n = t.shape[0]
        g0 = self.samples
        env, low, fast, still = self._filter.process(xyz)
        assert self._still_floor is not None
        level = np.empty(n)
        marks = np.empty((4, n), dtype=np.bool_)
        still_floor = self._still_floor.per_sample(still)
        hysteresis_levels(
            env,
            self._floor.per_sample(env),
            still,
            still_floor,
            p.onset_factor,
            p.onset_min_g,
            p.offset_factor,
            p.offset_min_g,
            level,
            marks.T,
        )
        above, below, quiet, moving = marks
        self._accumulate_epochs(t, xyz, ~below, env)

        # sustained-activity windows: more than half of the last sustained_n samples not below
        w = self._sustained_n
        flags = np.concatenate((self._tail, (~below).astype(np.int64)))
        self._tail = flags[flags.shape[0] - (w - 1) :].copy() if w > 1 else self._tail  # copy: no view on the chunk
        if self._state == IDLE and not above.any():
            self._idle_piece(quiet, below)
            self._keep_history(t, xyz, low, fast, level)
            return
        e = _Extended.build(self, t, xyz, low, fast, level)
        self._x_floor = still_floor
        csum = np.concatenate(([0], np.cumsum(flags)))
        win_ok = 2 * (csum[w:] - csum[:-w]) > w  # window ending at piece index i

        # runs of still samples, exactly as one continuous scan sees them. A still sample says the leg did
        # not move over the last quiet_lag_s, so a run certifies rest from quiet_lag_s before its first
        # sample: offset_quiet_s of rest is confirmed after offset_quiet_s - quiet_lag_s. A run open at the
        # piece boundary is not a new run at sample 0: it is either the rest carried over while MOVING
        # (_quiet_t: it began at or after the movement's search position, so it counts; run 0 here, empty
        # when the piece before ended in a noise break) or one that does not count for the open movement
        # (it began before the search position, or while idle or held)
        carried = self._state == MOVING and self._quiet_t is not None
        assert not carried or self._prev_quiet or 0 < self._break_n <= self._bridge_n
        b = quiet.astype(np.int8)
        d = np.diff(b, prepend=np.int8(self._prev_quiet))
        starts = np.flatnonzero(d == 1)
        ends = np.flatnonzero(d == -1)
        start_t = t[starts] - p.quiet_lag_s
        start_g = g0 + starts
        carried_break = 0  # samples of a noise break the carried rest was in at the piece boundary
        if carried:
            starts = np.concatenate(([0], starts))
            start_t = np.concatenate(([self._run_t], start_t))
            start_g = np.concatenate(([self._run_g], start_g))
            if not self._prev_quiet:  # the carried run ended in the last piece: an empty run 0
                ends = np.concatenate(([0], ends))
                carried_break = self._break_n
        elif self._prev_quiet:
            ends = ends[1:]  # the end of the leading run, which does not count
        if ends.shape[0] < starts.shape[0]:
            ends = np.concatenate((ends, [n]))
        assert ends.shape[0] == starts.shape[0]
        # the rest a run begins (its first run's start; run 0 carried: the carried rest's) and when
        # offset_quiet_s of it has passed
        rest_t, rest_g = start_t.copy(), start_g.copy()
        if carried:
            rest_t[0], rest_g[0] = self._quiet_t, self._quiet_g
        confirm = np.searchsorted(t, rest_t + p.offset_quiet_s - self._smear_s, side="left")
        confirm = np.maximum(confirm, starts)
        # a resting leg's stillness crosses its offset level in a few % of samples (sensor noise, 1-3
        # samples at a time: ~1 in 3 windows of 0.4 s), so a rest that every blip restarted was confirmed
        # up to 1.5 s late. A break is noise, and the rest goes on through it, when it is shorter than
        # quiet_lag_s (a displacement shows in the quiet_lag_s difference for at least that long), never
        # reaches the onset level (not "moving") and follows a still run of at least quiet_lag_s: the
        # tremor of a held contraction breaks the stillness every few samples and stays movement. Whether
        # the leg's position stayed in the noise band is checked by _first_still, as before
        moved = np.concatenate(([0], np.cumsum(moving)))
        gaps = np.full(starts.shape[0], self._bridge_n + 1, dtype=np.int64)  # run 0 continues no rest before
        gaps[1:] = starts[1:] - ends[:-1]
        if carried_break and starts.shape[0] > 1:
            gaps[1] += carried_break
        lengths = ends - starts
        if carried and starts.shape[0]:
            # the carried run: its samples in the last pieces count; an empty run 0 stands for one that did
            lengths[0] += self._still_run_n if self._prev_quiet else self._lag_q_n
        bridged = gaps <= self._bridge_n
        bridged[1:] &= (moved[starts[1:]] == moved[ends[:-1]]) & (lengths[:-1] >= self._lag_q_n)
        above_idx = np.flatnonzero(above)
        moving_idx = np.flatnonzero(above & moving)  # activity up and the leg clearly moving now
        below_idx = np.flatnonzero(below)

        def next_burst(pos: int) -> tuple[int, int]:
            """Piece index of the next burst start at or after ``pos`` (n if none in this piece), and the
            index from which the tail guard is off (-1: unchanged). Pure: the caller commits the guard
            release only once its scan gets there (a held leg may expire before it)."""
            release = -1
            if self._tail_guard:
                jb = int(np.searchsorted(below_idx, max(pos, self._settle_g - g0)))
                tail_end = int(below_idx[jb]) if jb < below_idx.shape[0] else n
                jm = int(np.searchsorted(moving_idx, pos))
                if jm < moving_idx.shape[0] and moving_idx[jm] < tail_end:
                    return int(moving_idx[jm]), -1
                if tail_end == n:
                    return n, -1
                release = pos = tail_end
            j = int(np.searchsorted(above_idx, pos))
            return (int(above_idx[j]) if j < above_idx.shape[0] else n), release

        pos = 0  # piece index from which the next event is searched
        if self._skip_still_run:  # idle after a movement closed in a run that outlasted the last piece
            not_quiet = np.flatnonzero(~quiet)
            pos = int(not_quiet[0]) if not_quiet.size else n
            self._skip_still_run = pos == n
        scanned = pos  # piece index up to which the peaks are tracked
        while True:
            if self._state == IDLE:
                k, release = next_burst(pos)
                if release >= 0:
                    self._tail_guard = False
                if k == n:
                    break
                self._start_burst(k, g0, e)
                pos = scanned = k
            if self._state == MOVING:
                first_window = max(self._onset_g + w - 1 - g0, 0)
                # the rest that confirms: still runs from the first one at or after the search position,
                # joined across noise breaks; confirmed offset_quiet_s after its start, at the first still
                # sample where the whole last offset_quiet_s lies within the noise band (_first_still)
                r = int(np.searchsorted(starts, pos))
                seg = r  # first run of the rest being tried
                c = -1
                while r < starts.shape[0]:
                    if r > seg and not bridged[r]:
                        seg = r
                    lo_c = max(int(confirm[seg]), int(starts[r]))
                    if lo_c < ends[r]:
                        c = self._first_still(lo_c, int(ends[r]), e)
                        if c >= 0:
                            break
                    r += 1
                if c >= 0:
                    s = int(starts[seg])
                    if seg > 0 or not carried:  # the carried rest ran out without confirming: its windows count
                        self._sustained = self._sustained or self._sustained_in_run
                    self._sustained_in_run = False
                    if not self._sustained and first_window < s:
                        self._sustained = bool(win_ok[first_window:s].any())
                    self._update_peaks(e, e.h + scanned, e.h + c + 1, quiet[scanned : c + 1])
                    burst_lo = e.h + max(self._onset_g - g0, -e.h)
                    # the still run the confirmation fell in: where the leg is certainly still. The rest may
                    # have begun earlier, but a bridged break can also be the last slow settling, so the
                    # offset is capped at this run (as without bridging), not at the rest's first run
                    self._still_g = int(start_g[r])
                    closed = self._quiet_confirmed(float(start_t[r]), e.h + c, burst_lo, e, out)
                    self._tail_guard = True
                    pos = int(ends[r]) if closed else c
                    self._skip_still_run = closed and pos == n
                    scanned = pos
                    carried = False
                    continue
                # carry the rest open at the end only if it counts for this movement: it began at or after
                # the search position (a run from before the burst does not count), and the piece ends in
                # it or in a noise break of it that may still be bridged
                tail_break = 0
                carry = seg < starts.shape[0]
                if carry and ends[-1] < n:
                    tail_break = n - int(ends[-1]) + (carried_break if starts.shape[0] == 1 else 0)
                    carry = bool(
                        tail_break <= self._bridge_n
                        and moved[n] == moved[int(ends[-1])]
                        and lengths[-1] >= self._lag_q_n
                    )
                run_start = int(starts[seg]) if carry else n
                if not carry or seg > 0 or not carried:
                    self._sustained = self._sustained or self._sustained_in_run
                    self._sustained_in_run = False
                if not self._sustained and first_window < run_start:
                    self._sustained = bool(win_ok[first_window:run_start].any())
                if carry and not self._sustained_in_run:
                    self._sustained_in_run = bool(win_ok[max(first_window, run_start) :].any())
                self._update_peaks(e, e.h + scanned, e.h + n, quiet[scanned:n])
                self._quiet_t = float(rest_t[seg]) if carry else None
                self._quiet_g = int(rest_g[seg]) if carry else 0
                self._break_n = tail_break if carry else 0
                self._run_t, self._run_g = (float(start_t[-1]), int(start_g[-1])) if carry else (0.0, 0)
                break
            # HELD: a new burst, or still long enough to be a new position
            k, release = next_burst(pos)
            expiry = int(np.searchsorted(t, self._held_until, side="left"))
            self._follow_return(e, pos, min(k, expiry, n))
            if k < n and k < expiry:
                if release >= 0:
                    self._tail_guard = False
                self._start_burst(k, g0, e)
                pos = scanned = k
                continue
            if expiry < n:
                if 0 <= release < expiry:
                    self._tail_guard = False
                sustained = self._sustained or self._held
                offset, rest = self._held_offset, self._held_rest
                back = self._back_at_first_rest(e, expiry)
                if back is not None:
                    # back at its first rest with no burst: the release was too slow or small for the activity
                    # to flag (a degree or two over half a second), and the movement ended where the leg
                    # came back, not at its rise
                    offset, rest = back - self._delay_s, e.low[e.h + expiry]
                    sustained = True
                self._emit(self._onset_t, offset, sustained, out, self._across, self._ref, rest)
                self._to_idle()
                pos = expiry
                continue
            if release >= 0:
                self._tail_guard = False
            break
        self._x_floor = np.zeros(0)  # not carried: a checkpoint of the state stays small
        self._count_still_run(quiet)
        self.samples += n
        e.keep(self)

    def _idle_piece(self, quiet: np.ndarray, below: np.ndarray) -> None:
        """The rest of :meth:`_run_piece` for a piece in which nothing starts: idle, and no sample above the
        onset level (most of a night; a live detector sees such a 1-s piece per leg per second). Only the
        carried flags move on, exactly as the full scan would move them."""
        n = quiet.shape[0]
        pos = 0
        if self._skip_still_run:  # the still run a movement closed in goes on: the search resumes after it
            not_quiet = np.flatnonzero(~quiet)
            pos = int(not_quiet[0]) if not_quiet.size else n
            self._skip_still_run = pos == n
        # the decaying tail (or the filters' settling after a hole, until _settle_g) went below the offset level
        if self._tail_guard and below[max(pos, self._settle_g - self.samples) :].any():
            self._tail_guard = False
        self._count_still_run(quiet)
        self.samples += n

    def _keep_history(
        self, t: np.ndarray, raw: np.ndarray, low: np.ndarray, fast: np.ndarray, level: np.ndarray
    ) -> None:
        """What ``_Extended.keep`` stores, without building the extended arrays: an idle piece (most of
        them) needs no look-back, only the last ``_hist_n`` samples of history and piece for the next one."""
        m, n = self._hist_n, t.shape[0]
        if n >= m:
            self._hist_t, self._hist_low = t[n - m :].copy(), low[n - m :].copy()
            self._hist_fast, self._hist_level = fast[n - m :].copy(), level[n - m :].copy()
            self._hist_raw = raw[n - m :].copy()
            return
        drop = max(0, self._hist_t.shape[0] + n - m)
        self._hist_t = np.concatenate((self._hist_t[drop:], t))
        self._hist_low = np.concatenate((self._hist_low[drop:], low))
        self._hist_fast = np.concatenate((self._hist_fast[drop:], fast))
        self._hist_raw = np.concatenate((self._hist_raw[drop:], raw))
        self._hist_level = np.concatenate((self._hist_level[drop:], level))

    def _count_still_run(self, quiet: np.ndarray) -> None:
        """Carry whether the piece ended still, and for how many samples (the run may go on in the next)."""
        not_still = np.flatnonzero(~quiet)
        n = quiet.shape[0]
        if not_still.size:
            self._still_run_n = n - 1 - int(not_still[-1])
        else:
            self._still_run_n = (self._still_run_n if self._prev_quiet else 0) + n
        self._prev_quiet = bool(quiet[-1])

    def _accumulate_epochs(self, t: np.ndarray, xyz: np.ndarray, active: np.ndarray, env: np.ndarray) -> None:
        keys, sums = epoch_sums(t, xyz, active, env, float(self.params.epoch_s), float(STAT_SCALE))
        self.epochs.add(keys, sums)
        self.blocks.add(*epoch_sums(t, xyz, active, env, float(self.params.walk_block_s), float(STAT_SCALE)))
        rate, params = self.rate_hz, self.params
        assert rate is not None
        self.blocks.retain_completed(lambda rows: walking_blocks_mask(rows, rate, params))
        self.wear.add(t, xyz)


def _vector(v: np.ndarray | None) -> tuple[float, float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]), float(v[2]))


@dataclass(slots=True)
class _Extended:
    """The recent history followed by the current piece: extended index ``h + i`` is piece index ``i``."""

    h: int
    whole: bool  # the history holds the sensor's every sample so far (nothing before index 0)
    t: np.ndarray
    raw: np.ndarray  # the samples as received (g)
    low: np.ndarray
    fast: np.ndarray
    level: np.ndarray

    @classmethod
    def build(
        cls, leg: LegDetector, t: np.ndarray, raw: np.ndarray, low: np.ndarray, fast: np.ndarray, level: np.ndarray
    ) -> _Extended:
        return cls(
            leg._hist_t.shape[0],
            leg._hist_t.shape[0] == leg.samples,
            np.concatenate((leg._hist_t, t)),
            np.concatenate((leg._hist_raw, raw)),
            np.concatenate((leg._hist_low, low)),
            np.concatenate((leg._hist_fast, fast)),
            np.concatenate((leg._hist_level, level)),
        )

    def back(self, i: int) -> int:
        """Extended index ``i`` of a look-back, clamped at the sensor's first sample. Every look-back must
        stay inside the kept history (``LegDetector._hist_n``): one that reached past it would see less
        in a small piece than in a large one, and results would depend on the chunking."""
        assert i >= 0 or self.whole, f"look-back {-i} samples past the kept history"
        return max(i, 0)

    def distance2(self, a: int, b: int, ref: np.ndarray, fast: bool = True) -> np.ndarray:
        """Squared distance over [a, b) of the boundary (``fast``) or low-passed vector from ``ref``."""
        diff = (self.fast if fast else self.low)[a:b] - ref
        return np.einsum("ij,ij->i", diff, diff)

    def rest(self, a: int, b: int) -> np.ndarray:
        """Mean boundary vector over [a, b): a resting reference with less noise than one sample."""
        return self.fast[self.back(a) : max(b, a + 1)].mean(axis=0)

    def keep(self, leg: LegDetector) -> None:
        """Store the last ``leg._hist_n`` samples as the next piece's history."""
        m = leg._hist_n
        leg._hist_t = self.t[-m:].copy()
        leg._hist_low = self.low[-m:].copy()
        leg._hist_fast = self.fast[-m:].copy()
        leg._hist_raw = self.raw[-m:].copy()
        leg._hist_level = self.level[-m:].copy()
