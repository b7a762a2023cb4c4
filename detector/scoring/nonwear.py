"""Non-wear: the sensor taken off the ankle (on a night stand, the floor), found from the acceleration alone.

Actigraphy's standard non-wear rule (van Hees et al. 2011, PLoS ONE 6:e22922; van Hees et al. 2013, PLoS ONE
8:e61691; implemented in GGIR) calls a window non-wear when the standard deviation and the range of the
acceleration stay at the sensor's noise level on the axes for a long time (60-min windows in 15-min steps,
SD < 13 mg and range < 50 mg on at least two of three axes). That rule was built for wrist sensors over whole
days; at night on the ankle it is not enough on its own: a sleeping leg lies still for many minutes, and its
SD (a few mg) is far below 13 mg. What a worn leg has and a sensor on a table lacks is the body's own
micro-motion: each heartbeat makes the body recoil along its head-foot axis (the ballistocardiogram: Starr et
al. 1939, Am J Physiol 127:1; Pinheiro et al. 2010, Open Biomed Eng J 4:201) and breathing rocks the pelvis
and legs. Both are *serially correlated* (slow compared with the sample rate), whereas the noise of a
resting MEMS accelerometer is white. So the test here has three parts (docs/scoring.md, "Non-wear"):

1. **Quiet epochs** (van Hees): per 30-s epoch and axis, SD <= :data:`QUIET_SD_G` and range <= :data:`QUIET_RANGE_G`
   on all three axes, and no movement (twitch included) of that leg detected in it.
2. **Long enough**: a run of consecutive quiet epochs lasting >= :data:`MIN_NONWEAR_S`.
3. **At the noise level, not only below a threshold**: over the whole run, the variance of each epoch's
   samples about their own straight line (detrended: a sensor cooling on the table drifts by a few mg over
   minutes) divided by half the mean squared successive difference (von Neumann et al. 1941, Ann Math Stat
   12:153: for white noise both estimate the noise variance) is at 1 within its statistical error (:data:`WHITE_Z`). The heartbeat
   and breathing of a worn leg add variance that successive samples share, so the ratio rises above 1.

Everything is kept as integer sums per leg and epoch (:class:`WearTable`), so the result is exact in any
chunking: live and offline agree. The spans are recomputed from the table at each summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from detector.scoring.kernels import wear_sums

QUIET_SD_G = 0.013
"""Per-axis SD of a quiet epoch (g): van Hees et al. 2013 / GGIR's 13 mg. A still worn leg is far below it too:
this only rules out movement, the noise-level test (3) tells a leg from a table."""
QUIET_RANGE_G = 0.050
"""Per-axis range (max - min) of a quiet epoch (g): van Hees et al. 2011/2013, GGIR (50 mg). Any leg movement
tilts the shank by degrees (1 deg = 17 mg across gravity) or jerks it by far more."""
MIN_NONWEAR_S = 30 * 60.0
"""Shortest non-wear span (s): van Hees et al. 2011 assess non-wear in 30-min blocks (2013: 60-min windows in
15-min steps). The duration does most of the work at night: a sleeping leg with weak heartbeat and breathing
motion under a noisy sensor cannot be told from a table by the white-noise test (below) in minutes, but it
rarely lies without any movement, twitch included, for half an hour (measured: docs/scoring.md)."""
WHITE_Z = 5.0
"""A run is at the sensor's noise level when, on every axis, detrended variance / (MSSD / 2) <= 1 + WHITE_Z /
sqrt(N) + :data:`WHITE_ALLOWANCE`, pooled over its epochs (N samples). For white noise the ratio is 1 with a
standard error of ~1 / sqrt(N) (0.0047 for 30 min at 25 Hz), so 5 SE practically never rejects a table; the
heartbeat and breathing of a worn leg add serially correlated variance and raise it. Per axis, not pooled:
breathing tilts the shank about one axis, and pooling would dilute it threefold."""
WHITE_ALLOWANCE = 0.005
"""What a table adds that is not the leg: the sensor's offset drifting as it cools (a few mg over minutes) leaves
a curvature the per-epoch straight line does not remove; measured on simulated tables <= 0.0025 (docs/scoring.md)."""
HANDLING_S = 60.0
"""Movements of a leg within this long before its non-wear starts (taking the sensor off) or after it ends
(putting it back on) are handling by the hand, not leg movements: not counted as LMs of the night."""
MIN_WORN_FRACTION = 2 / 3
"""A night whose sensors were worn for less than this fraction of (worn time in bed + non-wear) gets no index
and is marked ``wear_insufficient``: GGIR's valid-day criterion is 16 of 24 h worn (van Hees et al. 2013,
GGIR's ``includedaycrit``), the same two thirds."""
SCALE = 10_000
"""Samples are summed as integers of 0.1 mg (what every sensor's int16 milli-g or finer resolves), exactly."""
MIN_EPOCH_SAMPLES = 10
"""An epoch with fewer samples has no meaningful SD: it neither breaks nor counts for a quiet run."""

# columns of a WearTable row
N, S1, S2, ST, D2, ND, MN, MX = 0, 1, 4, 7, 10, 13, 14, 17
COLUMNS = 20
"""samples; sum x (3); sum x^2 (3); sum k*x (3; k = sample number in the epoch); sum of squared successive
differences (3); number of differences; min (3); max (3)."""


class WearTable:
    """Per-epoch integer sums of one leg for the non-wear test; fed the same samples as the leg's detector."""

    def __init__(self, epoch_s: float = 30.0) -> None:
        self.epoch_s = float(epoch_s)
        self._keys = np.zeros(64, dtype=np.int64)
        self._rows = np.zeros((64, COLUMNS), dtype=np.int64)
        self._n = 0
        self._last: np.ndarray | None = None  # last sample (int 0.1 mg), for the next difference

    @property
    def epochs(self) -> np.ndarray:
        return self._keys[: self._n]

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: self._n]

    def add(self, t: np.ndarray, xyz: np.ndarray) -> None:
        """Add samples (t increasing, after every earlier sample)."""
        if t.shape[0] == 0:
            return
        first_open = self._n > 0
        open_key = int(self._keys[self._n - 1]) if first_open else -(2**62)
        open_count = int(self._rows[self._n - 1, N]) if first_open else 0
        has_last = self._last is not None
        last = self._last if self._last is not None else np.zeros(3, dtype=np.int64)
        group_keys, sums = wear_sums(
            np.ascontiguousarray(t, dtype=np.float64),
            np.ascontiguousarray(xyz, dtype=np.float64),
            self.epoch_s,
            float(SCALE),
            last,
            has_last,
            open_key,
            open_count,
        )
        self._last = np.rint(np.asarray(xyz[-1], dtype=np.float64) * SCALE).astype(np.int64)
        first_open = first_open and group_keys[0] == open_key
        start = 0
        if first_open:
            row = self._rows[self._n - 1]
            mn, mx = np.minimum(row[MN:MX], sums[0, MN:MX]), np.maximum(row[MX:COLUMNS], sums[0, MX:COLUMNS])
            row[:MN] += sums[0, :MN]
            row[MN:MX], row[MX:COLUMNS] = mn, mx
            start = 1
        m = group_keys.shape[0] - start
        if self._n + m > self._keys.shape[0]:
            capacity = max(2 * self._keys.shape[0], self._n + m)
            self._keys = np.resize(self._keys, capacity)
            self._rows = np.resize(self._rows, (capacity, COLUMNS))
        self._keys[self._n : self._n + m] = group_keys[start:]
        self._rows[self._n : self._n + m] = sums[start:]
        self._n += m


def epoch_statistics(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch and axis: SD (g), range (g), detrended sum of squares and MSSD-based noise sum of squares (both
    in (0.1 mg)^2) -- the last two pooled over a run make each axis's white-noise ratio."""
    r = rows.astype(np.float64)
    n = np.maximum(r[:, N : N + 1], 1.0)
    s1, s2, st = r[:, S1:S2], r[:, S2:ST], r[:, ST:D2]
    ssx = np.maximum(s2 - s1 * (s1 / n), 0.0)  # sum of squares about the mean
    sd = np.sqrt(ssx / np.maximum(n - 1, 1)) / SCALE
    rng = (r[:, MX:COLUMNS] - r[:, MN:MX]) / SCALE
    sk = n * (n - 1) / 2  # sum of k = 0..n-1
    skk = (n - 1) * n * (2 * n - 1) / 6 - sk * sk / n  # sum of squares of k about its mean
    skx = st - sk * s1 / n
    detrended = np.maximum(ssx - skx * skx / np.maximum(skk, 1e-9), 0.0)  # residual about the straight line
    nd = np.maximum(r[:, ND : ND + 1], 1.0)
    white = r[:, D2:ND] / (2 * nd) * np.maximum(n - 2, 0)  # noise variance x residual degrees of freedom
    return sd, rng, detrended, white


def find_nonwear(
    table: WearTable,
    movements: Sequence[tuple[float, float]],
    last_t: float | None,
    min_nonwear_s: float = MIN_NONWEAR_S,
) -> list[tuple[float, float, float]]:
    """Non-wear spans ``(start, end, white_ratio)`` (the largest axis's ratio) of one leg (module docstring), times in the input's base.

    ``movements``: (onset, offset) of every movement the leg's detector reported (twitches included), sorted
    by onset; ``last_t``: the leg's last sample (a run reaching the end of the data ends there)."""
    keys, rows = table.epochs, table.rows
    if keys.shape[0] == 0:
        return []
    epoch_s = table.epoch_s
    sd, rng, detrended, white = epoch_statistics(rows)
    enough = rows[:, N] >= MIN_EPOCH_SAMPLES
    quiet = enough & np.all(sd <= QUIET_SD_G, axis=1) & np.all(rng <= QUIET_RANGE_G, axis=1)
    onsets = np.array([a for a, _ in movements]) if movements else np.zeros(0)
    offsets = np.array([b for _, b in movements]) if movements else np.zeros(0)
    if onsets.shape[0]:  # an epoch that a movement touches is not quiet
        lo_t, hi_t = keys * epoch_s, (keys + 1) * epoch_s
        i = np.searchsorted(onsets, hi_t)  # movements with onset < epoch end ...
        running_max = np.maximum.accumulate(offsets)
        touched = np.zeros(keys.shape[0], dtype=bool)
        has = i > 0
        touched[has] = running_max[i[has] - 1] > lo_t[has]  # ... and offset > epoch start
        quiet &= ~touched
    spans: list[tuple[float, float, float]] = []
    m = keys.shape[0]
    # runs of quiet epochs with consecutive indices: a run breaks at a non-quiet epoch or a missing one
    joined = np.zeros(m, dtype=bool)
    joined[1:] = quiet[1:] & quiet[:-1] & (np.diff(keys) == 1)
    run_starts = np.flatnonzero(quiet & ~joined)
    run_ends = np.append(run_starts[1:], m) if run_starts.size else run_starts
    for j, stop in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        k = j + int(np.argmin(np.append(joined[j + 1 : stop], False))) if stop > j + 1 else j
        if (keys[k] + 3 - keys[j]) * epoch_s < min_nonwear_s:  # too short even with both edges extended
            continue
        start, end = float(keys[j] * epoch_s), float((keys[k] + 1) * epoch_s)
        if last_t is not None and k == m - 1:
            end = min(end, float(last_t))
        # the edges to the second: the end of the handling before, the start of the handling after
        if offsets.shape[0]:
            before = offsets[(offsets <= start) & (offsets > start - epoch_s)]
            if before.shape[0]:
                start = float(before.max())
            after = onsets[(onsets >= end) & (onsets < end + epoch_s)]
            if after.shape[0]:
                end = float(after.min())
        if end - start >= min_nonwear_s:
            noise = white[j : k + 1].sum(axis=0)
            ratio = float(np.max(detrended[j : k + 1].sum(axis=0) / np.maximum(noise, 1e-9)))
            samples = float(np.maximum(rows[j : k + 1, N] - 2, 0).sum())
            if ratio <= 1.0 + WHITE_Z / math.sqrt(max(samples, 1.0)) + WHITE_ALLOWANCE:
                spans.append((start, end, ratio))
    return spans


def intersect(per_leg: Iterable[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Spans covered by every leg's list (when no leg is worn)."""
    out: list[tuple[float, float]] | None = None
    for spans in per_leg:
        own = sorted((a, b) for a, b in spans)
        out = own if out is None else [(max(a, c), min(b, d)) for a, b in out for c, d in own if a < d and c < b]
    return sorted(out or [])


def overlap_s(a: float, b: float, spans: Iterable[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans)
