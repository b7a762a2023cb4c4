"""A movement's edges placed on the unfiltered samples: the boundary filter's smear removed (docs/scoring.md 4h).

Physical reason. Onsets and offsets are found on the 5-Hz boundary vector (4a), whose group delay is
subtracted at both ends. That is exact for an edge slower than the filter. A *sharp* edge -- a twitch's
jerk, the linear acceleration of a brisk start or stop, EMG-like edges -- is smeared by the filter's
impulse response: the filtered distance leaves the noise band before the delay-corrected start (the filter
starts to respond at once, up to one group delay early) and comes back into it after the stop by the time
its step response takes to settle within band / amplitude (tens of milliseconds for a stop 10x the band,
~0.1 s for a violent jerk). A 0.4-s twitch was measured 0.5-0.7 s and counted as a leg movement; a 0.5-1 s
rest between two movements was shortened, sometimes merged away (4g).

Rule. The unfiltered samples see a sharp edge where it is, but with more noise. Each end is looked for
again on them, and moved only as far as the filter can have smeared an edge *of the height the unfiltered
samples show there* (its own step response says how far):

- onset: the first sample outside the band after the last one within it, looked for from the sample
  before the boundary onset to one group delay after it (causality: the filter output cannot leave the
  band before the movement starts, so the delay-corrected onset is at most one delay early), and no later
  than ``delay - t_rise(band / height)`` after the boundary onset, ``height`` being that sample's distance;
- offset: the sample after the last one outside the band, and no earlier than
  ``t_settle(band / height) - delay`` before the boundary offset, ``height`` being that last sample's
  distance -- far outside after a sharp stop (the window is the filter's settling time), barely above the
  band at a slow end (a few milliseconds: a smooth end stays where the boundary put it).

This is the EMG rule (onset where the signal leaves the resting level, offset at the start of the period
within it) on the unfiltered distance from rest. The band is the boundary's offset level scaled by how much
noisier the unfiltered samples are *at this rest* (the RMS ratio over the rest the boundary found; never
more than the ratio white noise would give, so a sensor whose own filter already smooths its output is not
given a band wider than its noise). No new parameter: the windows come from the filter design, the band
from the same offset level. An end moves only towards the inside of the movement; a noise sample outside
the band only keeps it nearer the boundary's answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


def step_response(sos: np.ndarray, n: int) -> np.ndarray:
    """Response of the second-order sections ``sos`` (scipy layout) to a unit step, ``n`` samples, from rest."""
    y = np.ones(n)
    for b0, b1, b2, _, a1, a2 in np.asarray(sos, dtype=np.float64):
        z1 = z2 = 0.0
        out = np.empty(n)
        for k in range(n):  # transposed direct form II, as scipy.signal.sosfilt
            x = y[k]
            v = b0 * x + z1
            z1 = b1 * x - a1 * v + z2
            z2 = b2 * x - a2 * v
            out[k] = v
        y = out
    return y


@dataclass(frozen=True)
class EdgeWindows:
    """How far the boundary filter can have moved an edge, from its step response (sampled at ``period``)."""

    period: float
    delay_s: float
    rise: np.ndarray  # running maximum of the step response: the filter output after a start of height 1
    tail: np.ndarray  # tail[k] = largest |1 - step| from sample k on: what is left k samples after a stop
    white_ratio: float  # unfiltered / filtered noise RMS for white noise: 1 / sqrt(sum of h^2)

    @classmethod
    def of(cls, sos: np.ndarray, rate_hz: float, delay_s: float) -> EdgeWindows:
        n = max(8, math.ceil(2.0 * rate_hz))  # 2 s: far longer than a 5-Hz filter's memory
        step = step_response(sos, n)
        impulse = np.diff(step, prepend=0.0)
        tail = np.maximum.accumulate(np.abs(1.0 - step)[::-1])[::-1].copy()
        return cls(1.0 / rate_hz, delay_s, np.maximum.accumulate(step), tail, 1.0 / math.sqrt(float(impulse @ impulse)))

    def early_s(self, ratio: float) -> float:
        """Largest time by which the delay-corrected boundary onset can precede the start of an edge
        ``ratio`` times the noise band: the filter output reaches 1/ratio of the step no sooner."""
        return float(_early_s(self.rise, self.delay_s, self.period, ratio))

    def late_s(self, ratio: float) -> float:
        """Largest time by which the delay-corrected boundary offset can follow the end of an edge
        ``ratio`` times the noise band: the filter output is back within 1/ratio of the step by then."""
        return float(_late_s(self.tail, self.delay_s, self.period, ratio))


def rest_and_noise(raw: np.ndarray, fast: np.ndarray, white_ratio: float) -> tuple[np.ndarray, float]:
    """The unfiltered samples' mean over one rest, and how much noisier they are there than the boundary
    vector (RMS about each one's mean), at most what white noise gives: a sensor that filters its own
    output is less noisy unfiltered than white noise would be, and a band too wide would cut real motion.
    Ratio 0 when the rest is too short (< 3 samples) to say."""
    rest = np.zeros(3)
    ratio = _rest_and_noise(raw, fast, white_ratio, rest)
    return rest, float(ratio)


def refine_onset(
    t: np.ndarray,
    raw: np.ndarray,
    level: np.ndarray,
    noise: float,
    rest: np.ndarray,
    onset: float,
    windows: EdgeWindows,
) -> float:
    """Onset on the unfiltered samples ``t``, ``raw`` (the samples around the edge; ``level`` the boundary's
    offset level at each, ``noise`` the unfiltered / filtered noise ratio): the first sample outside the band
    (``noise * level`` around ``rest``) after the last one within it, looked for from the sample before the
    boundary ``onset`` up to the group delay after it. It is taken no later than the filter can have moved
    a start as high as that sample's distance (:meth:`EdgeWindows.early_s`): a smooth start, barely above
    the band there, stays where the boundary put it."""
    return float(_refine_onset(t, raw, level, noise, rest, onset, windows.rise, windows.delay_s, windows.period))


def refine_offset(
    t: np.ndarray,
    raw: np.ndarray,
    level: np.ndarray,
    noise: float,
    rest: np.ndarray,
    offset: float,
    windows: EdgeWindows,
) -> float:
    """Offset on the unfiltered samples (as :func:`refine_onset`): the sample after the last one outside the
    band before the boundary ``offset``, taken no earlier than the filter can have delayed the end of a
    step as high as that last sample's distance (:meth:`EdgeWindows.late_s`): after a sharp stop the raw
    distance falls from far outside into the band at once, and the window is the filter's settling time;
    a slow end leaves the band barely above it, and the window is a few milliseconds."""
    return float(_refine_offset(t, raw, level, noise, rest, offset, windows.tail, windows.delay_s, windows.period))


def first_rest(
    t: np.ndarray,
    raw: np.ndarray,
    fast: np.ndarray,
    level: np.ndarray,
    start: int,
    end: int,
    quiet_n: int,
    smear_n: int,
    avg_n: int,
    quiet_s: float,
    longest_s: float,
    windows: EdgeWindows,
) -> int:
    """First index in [start, end) where the leg has been at rest for ``quiet_s``, timed like the edges:
    the boundary vector within the noise band (``level``) of its current rest (mean of the last ``avg_n``
    samples) for the last ``quiet_n`` samples; or, where it came back later than that, the rest counted from
    the offset placed again on the unfiltered samples (:func:`refine_offset`, looked for over ``smear_n``
    samples more; not across a step longer than ``longest_s``). -1 if none."""
    return int(
        _first_rest(
            t,
            raw,
            fast,
            level,
            start,
            end,
            quiet_n,
            smear_n,
            avg_n,
            quiet_s,
            longest_s,
            windows.delay_s,
            windows.white_ratio,
            windows.tail,
            windows.period,
        )
    )


def unfiltered_offset(
    t: np.ndarray,
    raw: np.ndarray,
    fast: np.ndarray,
    level: np.ndarray,
    lo: int,
    first: int,
    ce: int,
    longest_s: float,
    windows: EdgeWindows,
) -> float:
    """The offset the boundary vector puts at index ``first`` (back in the band from there to ``ce``), placed
    again on the unfiltered samples: the stretch the boundary calls rest gives their rest and noise, and the
    samples from ``lo`` on where the leg was last outside it (:func:`refine_offset`). As found when that rest
    is too short to say, or a step longer than ``longest_s`` (a hole) lies in [lo, ce]."""
    return float(
        _unfiltered_offset(
            t,
            raw,
            fast,
            level,
            lo,
            first,
            ce,
            longest_s,
            windows.delay_s,
            windows.white_ratio,
            windows.tail,
            windows.period,
        )
    )


def longest_step(t: np.ndarray) -> float:
    """The longest step between successive sample times (0 for fewer than two samples)."""
    return float(_longest_step(t))


# ----------------------------------------------------------------------------- compiled: a few per movement,
# called for every movement of a night, where numpy's per-call cost would be most of the work


@njit(cache=True, nogil=True)
def _early_s(rise: np.ndarray, delay: float, period: float, ratio: float) -> float:
    if ratio <= 1.0:
        return 0.0
    k = int(np.searchsorted(rise, 1.0 / ratio))
    return max(0.0, delay - k * period)


@njit(cache=True, nogil=True)
def _late_s(tail: np.ndarray, delay: float, period: float, ratio: float) -> float:
    if ratio <= 1.0:
        return 0.0
    k = tail.shape[0]
    for i in range(tail.shape[0]):  # tail never grows: the first sample below is where it stays below
        if tail[i] < 1.0 / ratio:
            k = i
            break
    return max(0.0, k * period - delay)


@njit(cache=True, nogil=True)
def _distance(raw: np.ndarray, i: int, rest: np.ndarray) -> float:
    dx, dy, dz = raw[i, 0] - rest[0], raw[i, 1] - rest[1], raw[i, 2] - rest[2]
    return math.sqrt(dx * dx + dy * dy + dz * dz)


@njit(cache=True, nogil=True)
def _rest_and_noise(raw: np.ndarray, fast: np.ndarray, white_ratio: float, rest: np.ndarray) -> float:
    n = raw.shape[0]
    fmean = np.zeros(3)
    for i in range(n):
        for k in range(3):
            rest[k] += raw[i, k] / n
            fmean[k] += fast[i, k] / n
    if n < 3:
        return 0.0
    r2 = 0.0
    f2 = 0.0
    for i in range(n):
        for k in range(3):
            r2 += (raw[i, k] - rest[k]) ** 2
            f2 += (fast[i, k] - fmean[k]) ** 2
    if f2 <= 0.0:
        return white_ratio
    return min(white_ratio, math.sqrt(r2 / f2))


@njit(cache=True, nogil=True)
def _refine_onset(
    t: np.ndarray,
    raw: np.ndarray,
    level: np.ndarray,
    noise: float,
    rest: np.ndarray,
    onset: float,
    rise: np.ndarray,
    delay: float,
    period: float,
) -> float:
    a = max(0, int(np.searchsorted(t, onset)) - 1)  # with the last sample before the window
    b = min(t.shape[0], int(np.searchsorted(t, onset + delay, side="right")) + 1)
    if b <= a + 1:
        return onset
    last_inside = -1
    for i in range(a, b):
        if _distance(raw, i, rest) < noise * level[i]:
            last_inside = i
    if last_inside < 0 or last_inside == b - 1:
        return onset  # outside from before the boundary onset, or not yet out at the window's end: no evidence
    j = last_inside + 1
    early = _early_s(rise, delay, period, _distance(raw, j, rest) / level[j])
    return min(max(t[j], onset), onset + early)


@njit(cache=True, nogil=True)
def _refine_offset(
    t: np.ndarray,
    raw: np.ndarray,
    level: np.ndarray,
    noise: float,
    rest: np.ndarray,
    offset: float,
    tail: np.ndarray,
    delay: float,
    period: float,
) -> float:
    b = int(np.searchsorted(t, offset))
    j = b - 1
    while j >= 0 and _distance(raw, j, rest) < noise * level[j]:
        j -= 1
    if j < 0 or j + 1 >= t.shape[0]:
        return offset
    late = _late_s(tail, delay, period, _distance(raw, j, rest) / level[j])
    return min(offset, max(t[j + 1], offset - late))


@njit(cache=True, nogil=True)
def _longest_step(t: np.ndarray) -> float:
    longest = 0.0
    for i in range(1, t.shape[0]):
        longest = max(longest, t[i] - t[i - 1])
    return longest


@njit(cache=True, nogil=True)
def _first_rest(
    t: np.ndarray,
    raw: np.ndarray,
    fast: np.ndarray,
    level: np.ndarray,
    start: int,
    end: int,
    quiet_n: int,
    smear_n: int,
    avg_n: int,
    quiet_s: float,
    longest_s: float,
    delay: float,
    white_ratio: float,
    tail: np.ndarray,
    period: float,
) -> int:
    rest = np.empty(3)
    for ce in range(start, end):
        lo = max(ce - quiet_n - smear_n, 0)
        a = max(ce + 1 - avg_n, 0)
        for k in range(3):
            total = 0.0
            for i in range(a, ce + 1):
                total += fast[i, k]
            rest[k] = total / (ce + 1 - a)
        first = lo
        for i in range(ce, lo - 1, -1):  # the last sample outside the band, searched back
            if _distance(fast, i, rest) >= level[i]:
                first = i + 1
                break
        if first <= max(ce - quiet_n, 0):  # the whole last quiet_s within the band
            return ce
        if first == lo:
            continue
        offset = _unfiltered_offset(t, raw, fast, level, lo, first, ce, longest_s, delay, white_ratio, tail, period)
        if t[ce] - delay - offset >= quiet_s:
            return ce
    return -1


@njit(cache=True, nogil=True)
def _unfiltered_offset(
    t: np.ndarray,
    raw: np.ndarray,
    fast: np.ndarray,
    level: np.ndarray,
    lo: int,
    first: int,
    ce: int,
    longest_s: float,
    delay: float,
    white_ratio: float,
    tail: np.ndarray,
    period: float,
) -> float:
    offset = t[first] - delay
    if first > ce - 2 or _longest_step(t[lo : ce + 1]) > longest_s:
        return offset
    rest = np.zeros(3)
    ratio = _rest_and_noise(raw[first : ce + 1], fast[first : ce + 1], white_ratio, rest)
    if ratio <= 0.0:
        return offset
    return _refine_offset(
        t[lo : first + 1], raw[lo : first + 1], level[lo : first + 1], ratio, rest, offset, tail, delay, period
    )
