"""Compiled per-sample loops of the activity signal and its noise floor (numba).

Why compiled: the activity signal is four IIR filters, two lagged differences, two norms and an
envelope. As numpy/scipy calls that is ~25 passes over the arrays, and ~30 calls whose fixed cost
(~10-40 us each) dominates the 52-sample chunks a live detector feeds once a second per leg. One loop
over the samples does all of it in one pass, with the filter states and ring buffers carried in
small arrays: the same arithmetic as ``scipy.signal.sosfilt`` (transposed direct form II, the same
operation order), so the numbers are those of the scipy chain, and a chunk boundary is just a pause
in the loop, so any chunking gives bit-identical results.

``cache=True`` keeps the compiled code next to this module (or in the user's cache directory when
that is read-only), so only the first run on a machine pays the compilation (about a second).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _sections(sos: np.ndarray, zi: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """``src`` (n,) through cascaded second-order sections into ``dst``, continuing the state ``zi``
    (sections, 2): scipy's sosfilt arithmetic (transposed direct form II), a section at a time with its
    coefficients and state in registers."""
    n = src.shape[0]
    for s in range(sos.shape[0]):
        b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
        z0, z1 = zi[s, 0], zi[s, 1]
        for i in range(n):
            x = src[i] if s == 0 else dst[i]
            y = b0 * x + z0
            z0 = b1 * x - a1 * y + z1
            z1 = b2 * x - a2 * y
            dst[i] = y
        zi[s, 0], zi[s, 1] = z0, z1


@njit(cache=True, nogil=True)
def _sections3(sos: np.ndarray, zi: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """:func:`_sections` for the three axes of ``src`` (n, 3) at once, state ``zi`` (sections, 2, 3):
    the three recursions are independent, so the processor overlaps them (one alone waits on its own
    multiply-add chain every sample)."""
    n = src.shape[0]
    for s in range(sos.shape[0]):
        b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
        p0, q0, r0 = zi[s, 0, 0], zi[s, 0, 1], zi[s, 0, 2]
        p1, q1, r1 = zi[s, 1, 0], zi[s, 1, 1], zi[s, 1, 2]
        for i in range(n):
            if s == 0:
                x, y, z = src[i, 0], src[i, 1], src[i, 2]
            else:
                x, y, z = dst[i, 0], dst[i, 1], dst[i, 2]
            u = b0 * x + p0
            v = b0 * y + q0
            w = b0 * z + r0
            p0 = b1 * x - a1 * u + p1
            q0 = b1 * y - a1 * v + q1
            r0 = b1 * z - a1 * w + r1
            p1 = b2 * x - a2 * u
            q1 = b2 * y - a2 * v
            r1 = b2 * z - a2 * w
            dst[i, 0], dst[i, 1], dst[i, 2] = u, v, w
        zi[s, 0, 0], zi[s, 0, 1], zi[s, 0, 2] = p0, q0, r0
        zi[s, 1, 0], zi[s, 1, 1], zi[s, 1, 2] = p1, q1, r1


@njit(cache=True, nogil=True)
def _lagged_square(values: np.ndarray, ring: np.ndarray, start: int, acc: np.ndarray) -> None:
    """acc[i] = |values[i] - values[i - lag]|**2 for vectors (n, 3), with the last ``lag`` = len(ring)
    vectors of the previous call in ``ring`` (oldest at ``start``); leaves the last ``lag`` in the ring."""
    lag = ring.shape[0]
    pos = start
    for i in range(values.shape[0]):
        dx = values[i, 0] - ring[pos, 0]
        dy = values[i, 1] - ring[pos, 1]
        dz = values[i, 2] - ring[pos, 2]
        ring[pos, 0], ring[pos, 1], ring[pos, 2] = values[i, 0], values[i, 1], values[i, 2]
        acc[i] = dx * dx + dy * dy + dz * dz
        pos += 1
        if pos == lag:
            pos = 0


@njit(cache=True, nogil=True)
def activity_chain(
    xyz: np.ndarray,
    fast_sos: np.ndarray,
    fast_zi: np.ndarray,
    fast_ring: np.ndarray,
    low_sos: np.ndarray,
    low_zi: np.ndarray,
    low_ring: np.ndarray,
    tremor_sos: np.ndarray,
    tremor_zi: np.ndarray,
    env_sos: np.ndarray,
    env_zi: np.ndarray,
    positions: np.ndarray,
    env: np.ndarray,
    low: np.ndarray,
    fast: np.ndarray,
    still: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """Fill ``env``, ``low``, ``fast``, ``still`` for the samples ``xyz`` (n, 3), continuing the state.
    ``scratch`` (n, 6) is work space, allocated by the caller so that memory accounting sees it.

    Filter states are (sections, 2, axis) as scipy's sosfilt zi along axis 0. ``fast_ring``/``low_ring``
    hold the last quiet_n boundary / lag_n low-passed vectors, oldest at ``positions[0]`` /
    ``positions[1]``. See ActivityFilter for what the signals mean.
    """
    n = xyz.shape[0]
    _sections3(fast_sos, fast_zi, xyz, fast)
    _sections3(low_sos, low_zi, xyz, low)
    tremor = scratch[:, :3]
    _sections3(tremor_sos, tremor_zi, xyz, tremor)
    step2 = scratch[:, 3]
    change2 = scratch[:, 4]
    _lagged_square(fast, fast_ring, positions[0], step2)
    _lagged_square(low, low_ring, positions[1], change2)
    positions[0] = (positions[0] + n) % fast_ring.shape[0]
    positions[1] = (positions[1] + n) % low_ring.shape[0]
    band = scratch[:, 5]
    for i in range(n):
        still[i] = math.sqrt(step2[i])
        tx, ty, tz = tremor[i, 0], tremor[i, 1], tremor[i, 2]
        band[i] = math.sqrt(change2[i] + (tx * tx + ty * ty + tz * tz))
    _sections(env_sos, env_zi[:, :, 0], band, env)


@njit(cache=True, nogil=True)
def _select(values: np.ndarray, k: int) -> float:
    """The k-th smallest of ``values`` (reordered in place): Hoare's quickselect, O(n)."""
    lo = 0
    hi = values.shape[0] - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return values[k]


@njit(cache=True, nogil=True)
def running_floor(
    values: np.ndarray,
    rank: int,
    partial: np.ndarray,
    ring: np.ndarray,
    ordered: np.ndarray,
    state: np.ndarray,
    current: np.ndarray,
    out: np.ndarray,
) -> None:
    """Per sample, the floor that applies to it: the ``rank``-th smallest of the last len(ring) medians
    (upper median) of complete blocks of len(partial) samples before the sample's own block.

    State carried between calls: ``partial`` holds the block being filled (state[2] samples so far),
    ``ring`` the medians in arrival order (oldest at state[0]), ``ordered`` the same sorted -- so each
    block costs one quickselect and one sorted replace, not a sort. state[1] == 0 until the first block
    completes; its median then fills the whole window. current[0] is the floor of the block being filled
    (infinite before the first block completes: nothing is detected in a sensor's first block).
    """
    block_n = partial.shape[0]
    size = ring.shape[0]
    mid = block_n // 2
    count = state[2]
    for i in range(values.shape[0]):
        out[i] = current[0]
        partial[count] = values[i]
        count += 1
        if count < block_n:
            continue
        count = 0
        median = _select(partial, mid)  # reorders partial, which is refilled from the start
        if state[1] == 0:
            ring[:] = median
            ordered[:] = median
            state[1] = 1
        pos = state[0]
        old = ring[pos]
        ring[pos] = median
        state[0] = pos + 1 if pos + 1 < size else 0
        # replace ``old`` by ``median`` in the sorted window, shifting the values between them
        j = np.searchsorted(ordered, old)
        if median >= old:
            while j + 1 < size and ordered[j + 1] < median:
                ordered[j] = ordered[j + 1]
                j += 1
        else:
            while j > 0 and ordered[j - 1] > median:
                ordered[j] = ordered[j - 1]
                j -= 1
        ordered[j] = median
        current[0] = ordered[rank]
    state[2] = count


@njit(cache=True, nogil=True)
def first_bad_sample(t: np.ndarray, xyz: np.ndarray, previous: float) -> int:
    """-1 if a chunk is usable: every value finite, times strictly increasing and after ``previous`` (NaN:
    no sample before). Else -2 for NaN or infinity anywhere, or the index of the first sample whose time is
    not after the one before it (0: not after ``previous``). One pass instead of six numpy calls, whose
    fixed cost was a fifth of scoring a leg's 1-s batch."""
    n = t.shape[0]
    for i in range(n):
        x, y, z = xyz[i, 0], xyz[i, 1], xyz[i, 2]
        if not (math.isfinite(t[i]) and math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            return -2
    if n and not math.isnan(previous) and t[0] <= previous:
        return 0
    for i in range(1, n):
        if t[i] <= t[i - 1]:
            return i
    return -1


@njit(cache=True, nogil=True)
def sample_steps(
    t: np.ndarray, previous: float, hole_s: float, reset_s: float, period: float
) -> tuple[np.int64, np.ndarray]:
    """Over the steps between samples (the first from ``previous``; NaN: none): the missing time in integer
    microseconds, each step longer than ``hole_s`` counting (step - period) rounded to the microsecond, and
    the indices of samples after a step of at least ``reset_s`` (the filters restart there)."""
    n = t.shape[0]
    missing = np.int64(0)
    cuts = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        step = (0.0 if math.isnan(previous) else t[0] - previous) if i == 0 else t[i] - t[i - 1]
        if step > hole_s:
            missing += np.int64(np.rint((step - period) * 1e6))
        if step >= reset_s:
            cuts[count] = i
            count += 1
    return missing, cuts[:count]


@njit(cache=True, nogil=True)
def hysteresis_levels(
    env: np.ndarray,
    floor: np.ndarray,
    still: np.ndarray,
    still_floor: np.ndarray,
    onset_factor: float,
    onset_min: float,
    offset_factor: float,
    offset_min: float,
    level: np.ndarray,
    flags: np.ndarray,
) -> None:
    """The offset level per sample and four flags (columns of ``flags``): activity above the onset level,
    below the offset level; stillness below its offset level (quiet), above its onset level (moving)."""
    for i in range(env.shape[0]):
        high = max(floor[i] * onset_factor, onset_min)
        low = max(floor[i] * offset_factor, offset_min)
        level[i] = low
        flags[i, 0] = env[i] > high
        flags[i, 1] = env[i] < low
        flags[i, 2] = still[i] < max(still_floor[i] * offset_factor, offset_min)
        flags[i, 3] = still[i] > max(still_floor[i] * onset_factor, onset_min)


@njit(cache=True, nogil=True)
def epochs_touched(t: np.ndarray, epoch_s: float) -> int:
    """How many epochs (floor(t / epoch_s)) increasing times touch: one per run of equal floors (the table
    sizes of :func:`epoch_sums` and :func:`wear_sums`)."""
    count = 0
    for i in range(t.shape[0]):
        if i == 0 or math.floor(t[i] / epoch_s) != math.floor(t[i - 1] / epoch_s):
            count += 1
    return count


@njit(cache=True, nogil=True)
def epoch_sums(
    t: np.ndarray, xyz: np.ndarray, active: np.ndarray, env: np.ndarray, epoch_s: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch (floor(t / epoch_s)) touched by these samples: its index, and the integer sums
    [samples, x, y, z, active samples, envelope] with each value rounded to 1/scale first, so that the
    sums are exact whatever the chunking (t increasing: every epoch is one run of samples)."""
    n = t.shape[0]
    count = epochs_touched(t, epoch_s)
    keys = np.empty(count, dtype=np.int64)
    sums = np.zeros((count, 6), dtype=np.int64)
    m = -1
    for i in range(n):
        epoch = np.int64(math.floor(t[i] / epoch_s))
        if m < 0 or epoch != keys[m]:
            m += 1
            keys[m] = epoch
        sums[m, 0] += 1
        sums[m, 1] += np.int64(np.rint(xyz[i, 0] * scale))
        sums[m, 2] += np.int64(np.rint(xyz[i, 1] * scale))
        sums[m, 3] += np.int64(np.rint(xyz[i, 2] * scale))
        sums[m, 4] += np.int64(active[i])
        sums[m, 5] += np.int64(np.rint(env[i] * scale))
    return keys, sums


@njit(cache=True, nogil=True)
def onset_floor(fast: np.ndarray, level: np.ndarray, lag: int, avg: int, first_start: int) -> int:
    """The largest index ``m`` of the last ``lag`` samples of ``fast`` (n, 3) that lies inside the noise band
    (``|fast[m] - rest(lo)| < level[m]``) of every rest ``rest(lo)`` = mean of ``fast[lo - avg : lo + 1]`` for
    window starts ``lo`` from ``n - lag + first_start`` up to ``m``; ``n - lag`` if none does. See
    ``LegDetector._onset_floor_index`` for why; requires ``n >= lag + avg``."""
    n = fast.shape[0]
    base = n - lag
    rests = np.empty((lag, 3))
    sx = sy = sz = 0.0
    for i in range(base - avg, base + 1):
        sx += fast[i, 0]
        sy += fast[i, 1]
        sz += fast[i, 2]
    for i in range(lag):
        lo = base + i
        if i > 0:
            sx += fast[lo, 0] - fast[lo - avg - 1, 0]
            sy += fast[lo, 1] - fast[lo - avg - 1, 1]
            sz += fast[lo, 2] - fast[lo - avg - 1, 2]
        rests[i, 0], rests[i, 1], rests[i, 2] = sx / (avg + 1), sy / (avg + 1), sz / (avg + 1)
    first = max(first_start, 0)
    for m in range(n - 1, base - 1, -1):
        limit = level[m] * level[m]
        ok = True
        for i in range(first, m - base + 1):
            dx = fast[m, 0] - rests[i, 0]
            dy = fast[m, 1] - rests[i, 1]
            dz = fast[m, 2] - rests[i, 2]
            if not dx * dx + dy * dy + dz * dz < limit:
                ok = False
                break
        if ok:
            return m
    return base


@njit(cache=True, nogil=True)
def wear_sums(
    t: np.ndarray,
    xyz: np.ndarray,
    epoch_s: float,
    scale: float,
    last: np.ndarray,
    has_last: bool,
    open_key: int,
    open_count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch touched by these samples: its index and the non-wear sums of detector.scoring.nonwear (columns
    ``N, S1, S2, ST, D2, ND, MN, MX`` there), every value rounded to 1/scale first so the sums are exact in
    any chunking. ``last``: the previous sample (rounded; used when ``has_last``) for the first successive
    difference; ``open_key``/``open_count``: the table's last epoch and its samples so far (the sample
    number k within an epoch continues there)."""
    n = t.shape[0]
    count = epochs_touched(t, epoch_s)
    keys = np.empty(count, dtype=np.int64)
    sums = np.zeros((count, 20), dtype=np.int64)
    m = -1
    k = 0
    px, py, pz = last[0], last[1], last[2]
    for i in range(n):
        epoch = np.int64(math.floor(t[i] / epoch_s))
        if m < 0 or epoch != keys[m]:
            m += 1
            keys[m] = epoch
            k = open_count if (m == 0 and epoch == open_key) else 0
            for a in range(3):
                sums[m, 14 + a] = 9223372036854775807
                sums[m, 17 + a] = -9223372036854775807
        q0 = np.int64(np.rint(xyz[i, 0] * scale))
        q1 = np.int64(np.rint(xyz[i, 1] * scale))
        q2 = np.int64(np.rint(xyz[i, 2] * scale))
        sums[m, 0] += 1
        sums[m, 1] += q0
        sums[m, 2] += q1
        sums[m, 3] += q2
        sums[m, 4] += q0 * q0
        sums[m, 5] += q1 * q1
        sums[m, 6] += q2 * q2
        sums[m, 7] += q0 * k
        sums[m, 8] += q1 * k
        sums[m, 9] += q2 * k
        if i > 0 or has_last:
            sums[m, 10] += (q0 - px) * (q0 - px)
            sums[m, 11] += (q1 - py) * (q1 - py)
            sums[m, 12] += (q2 - pz) * (q2 - pz)
            sums[m, 13] += 1
        sums[m, 14] = min(sums[m, 14], q0)
        sums[m, 15] = min(sums[m, 15], q1)
        sums[m, 16] = min(sums[m, 16], q2)
        sums[m, 17] = max(sums[m, 17], q0)
        sums[m, 18] = max(sums[m, 18], q1)
        sums[m, 19] = max(sums[m, 19], q2)
        px, py, pz = q0, q1, q2
        k += 1
    return keys, sums
