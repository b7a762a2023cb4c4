"""A bed partner's bounce must not stretch a leg movement (issue 19, error 2; docs/scoring.md 4d).

Physical reason. A partner turning over moves the mattress, and the whole leg lying on it, up and down:
the sensor then reads gravity growing and shrinking *along itself* (the specific force of a vertical
translation is vertical), with no change of direction. The shank's own motion is a rotation, which turns
gravity in the sensor frame (1 deg = 17 mg across it), and the ankle's linear acceleration along its path,
which the bed cannot produce across gravity. 4c drops bursts that are bounce alone; this module keeps a
bounce that starts while the leg moves from keeping the movement open after the leg has stopped.

Rule (the EMG offset rule applied to what only the leg can do). While a movement is open, *across rests*
are followed: stretches that begin at a sample whose change of the boundary vector over ``quiet_lag_s`` has
no component across the current gravity direction above the stillness offset level, and that no across
motion at the stillness *onset* level (the leg clearly rotating or accelerating sideways) has interrupted
since. When the movement's ordinary rest (on the whole vector, :mod:`detector.scoring.lm`) is finally confirmed,
the earliest across rest whose every orientation (the low-passed vector, across gravity) lies within the
noise band (the offset level) of the final orientation -- the EMG condition "within the resting level"
on the shank's orientation, so a slow end of a rotation is not cut early (followed as the box each rest
spans across gravity, whose farthest corner must be within the band: conservative) -- and that began at least
``offset_quiet_s`` (the EMG rule's 0.5 s) before the ordinary offset, ends the movement: for 0.5 s or more
the leg moved, beyond the noise band, only along gravity, which no muscle of a leg at rest does. A shorter
along-gravity tail is left alone: the heartbeat's recoil and a release's last linear acceleration can
keep the whole vector astir for a few tenths of a second after the shank stopped turning. Anything across gravity
before the final rest (a release, a new position, sideways tremor) keeps the movement as it was, so a held
contraction whose release turns the shank is never cut; what the rule cannot tell apart is a *purely
vertical* tremor of a leg held within the noise band (a single sensor sees it as a bounce).

The kernel carries its state in a small array, so a piece boundary is invisible (any chunking gives the
same result), as for every per-sample loop of the detector (:mod:`detector.scoring.kernels`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MAX_CANDIDATES = 16
"""Across rests followed at once (see :func:`across_rest`): a new one opens whenever the newest has spread over
half the band, so the sensor's noise opens one every few tenths of a second during a long bounce; when full,
the second oldest is dropped (the oldest is the answer while it stays within the band)."""

# state layout: [count, basis e1 (3), basis e2 (3), samples of the current break] then per candidate
# [start time, p min, p max, q min, q max]
_HEAD, _SLOT = 8, 5


def new_state() -> np.ndarray:
    """No across rest open."""
    return np.zeros(_HEAD + _SLOT * MAX_CANDIDATES)


@njit(cache=True, nogil=True)
def across_rest(
    t: np.ndarray,
    low: np.ndarray,
    fast: np.ndarray,
    band: np.ndarray,
    still_floor: np.ndarray,
    off_factor: float,
    off_min: float,
    on_factor: float,
    on_min: float,
    lag: int,
    bridge: int,
    quiet_lag_s: float,
    a: int,
    b: int,
    first: int,
    state: np.ndarray,
) -> None:
    """Follow the across rests over samples [a, b) (indices into ``t``/``low``/``fast``/``band``; the
    stillness floor ``still_floor`` is indexed from ``first`` = the index of its sample 0, and gives the
    stillness offset and onset levels as the hysteresis does: max(floor x factor, minimum)). ``lag``:
    samples in ``quiet_lag_s``; a look-back before index 0 uses sample 0 (the sensor's first sample).
    ``bridge``: the longest run of samples above the offset level that is sensor noise, as for the ordinary
    rest (:mod:`detector.scoring.lm`: shorter than ``quiet_lag_s``).

    Each candidate rest keeps the box its orientation has spanned across gravity (coordinates in a plane
    perpendicular to gravity, fixed when the first candidate opens). A new candidate opens at a quiet sample
    when there is none or the newest one's box has grown to half the band (the orientation is drifting:
    a later start may still be at rest); motion across gravity -- above the stillness offset level for
    longer than a noise blip, or at its onset level at all -- clears them."""
    cap = (state.shape[0] - _HEAD) // _SLOT
    for i in range(a, b):
        j = i - lag if i >= lag else 0
        gx, gy, gz = low[i, 0], low[i, 1], low[i, 2]
        norm = math.sqrt(gx * gx + gy * gy + gz * gz)
        if norm > 1e-9:
            gx, gy, gz = gx / norm, gy / norm, gz / norm
        dx = fast[i, 0] - fast[j, 0]
        dy = fast[i, 1] - fast[j, 1]
        dz = fast[i, 2] - fast[j, 2]
        along = dx * gx + dy * gy + dz * gz
        across2 = dx * dx + dy * dy + dz * dz - along * along
        k = i - first
        off = max(still_floor[k] * off_factor, off_min)
        on = max(still_floor[k] * on_factor, on_min)
        count = int(state[0])
        if across2 >= off * off:
            state[7] += 1.0
        else:
            state[7] = 0.0
        if across2 > on * on or state[7] > bridge:
            state[0] = 0.0  # the leg moves across gravity: no rest so far counts
            continue
        if count == 0:  # a plane perpendicular to gravity for the boxes
            ux, uy, uz = (1.0, 0.0, 0.0) if abs(gx) < 0.9 else (0.0, 1.0, 0.0)
            d = ux * gx + uy * gy + uz * gz
            ux, uy, uz = ux - d * gx, uy - d * gy, uz - d * gz
            n1 = math.sqrt(ux * ux + uy * uy + uz * uz)
            state[1], state[2], state[3] = ux / n1, uy / n1, uz / n1
            state[4] = gy * state[3] - gz * state[2]
            state[5] = gz * state[1] - gx * state[3]
            state[6] = gx * state[2] - gy * state[1]
        p = low[i, 0] * state[1] + low[i, 1] * state[2] + low[i, 2] * state[3]
        q = low[i, 0] * state[4] + low[i, 1] * state[5] + low[i, 2] * state[6]
        for c in range(count):
            o = _HEAD + _SLOT * c
            state[o + 1] = min(state[o + 1], p)
            state[o + 2] = max(state[o + 2], p)
            state[o + 3] = min(state[o + 3], q)
            state[o + 4] = max(state[o + 4], q)
        if across2 >= off * off:
            continue  # not quiet: no rest starts here
        if count > 0:
            o = _HEAD + _SLOT * (count - 1)
            wp, wq = state[o + 2] - state[o + 1], state[o + 4] - state[o + 3]
            if 4.0 * (wp * wp + wq * wq) < band[i] * band[i]:
                continue  # the newest rest is still tight
        # drop the rests whose box spans the band twice (no final orientation can be within the band of all
        # of it); if still full, the second oldest: the oldest is the answer when it stays valid, and the
        # newer ones follow a drift
        kept = 0
        for c in range(count):
            o = _HEAD + _SLOT * c
            wp, wq = state[o + 2] - state[o + 1], state[o + 4] - state[o + 3]
            if wp * wp + wq * wq < 4.0 * band[i] * band[i]:
                for m in range(_SLOT):
                    state[_HEAD + _SLOT * kept + m] = state[o + m]
                kept += 1
        count = kept
        if count == cap:
            for c in range(2, cap):
                for m in range(_SLOT):
                    state[_HEAD + _SLOT * (c - 1) + m] = state[_HEAD + _SLOT * c + m]
            count -= 1
        o = _HEAD + _SLOT * count
        state[o] = t[i] - quiet_lag_s
        state[o + 1] = state[o + 2] = p
        state[o + 3] = state[o + 4] = q
        state[0] = count + 1


def tail_start(state: np.ndarray, offset: float, final_low: np.ndarray, band: float, min_s: float) -> float | None:
    """Where the movement ends by the rule above, or None to keep its ordinary ``offset`` (in the filter's
    time, as the across rests' starts): the earliest across rest open at the final confirmation whose box
    of orientations lies within ``band`` (across gravity) of the final one, if it began at least ``min_s``
    before that offset."""
    p = float(final_low @ state[1:4])
    q = float(final_low @ state[4:7])
    for c in range(int(state[0])):
        o = _HEAD + _SLOT * c
        start, p0, p1, q0, q1 = state[o : o + _SLOT]
        far_p = max(abs(p - p0), abs(p - p1))
        far_q = max(abs(q - q0), abs(q - q1))
        if far_p * far_p + far_q * far_q < band * band:  # the box's farthest corner is within the band
            return float(start) if offset - start >= min_s else None
    return None
