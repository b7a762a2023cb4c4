"""A leg's watermark: a promise (no movement or gap starting before it comes later) that should be tight.

The rules hold every movement until both legs' watermarks pass its offset + 0.5 s (same-leg and bilateral
merging), so a loose watermark is latency, and a wrong one loses movements (the scorer drops what comes
before the watermark it was promised).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.scoring.lm import LegDetector
from detector.scoring.synthetic import SyntheticMovement, leg_recording
from simulator import simulate_night


def _feed_checking_promise(t: np.ndarray, xyz: np.ndarray, sizes: list[int]) -> tuple[int, list[float]]:
    """Feed in pieces of ``sizes`` (cycled); assert every movement and gap keeps the previous watermark's
    promise. Returns the movements seen and, for each piece after which the leg was idle, how far the
    watermark trailed the leg's last sample."""
    leg = LegDetector("left")
    promised = -np.inf
    moves = 0
    trail: list[float] = []
    i = k = 0
    while i < t.shape[0]:
        j = min(t.shape[0], i + sizes[k % len(sizes)])
        found, gaps = leg.feed(t[i:j], xyz[i:j])
        for move in found:
            assert move.onset >= promised, (move, promised)
        for gap in gaps:
            assert gap.start >= promised, (gap, promised)
        moves += len(found)
        watermark = leg.watermark
        assert watermark >= promised  # never moves back
        promised = watermark
        if leg.last_t is not None and watermark > leg.last_t - 1.0:  # idle (not inside a movement)
            trail.append(leg.last_t - watermark)
        i, k = j, k + 1
    return moves, trail


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.floats(0.6, 12.0),  # quiet before the movement (s)
            st.floats(0.15, 6.0),  # duration (s)
            st.floats(0.5, 40.0),  # angle (deg): from below the onset level to a kick
            st.sampled_from([0.0, 0.0, 1.5]),  # held in the middle
        ),
        min_size=1,
        max_size=8,
    ),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_no_movement_starts_before_the_watermark_it_follows(plan, sizes, seed) -> None:
    movements, at = [], 20.0
    for quiet, duration, angle, hold in plan:
        at += quiet
        movements.append(SyntheticMovement(at, duration, angle, hold_s=min(hold, duration / 2)))
        at += duration + 2 * hold
    t, xyz = leg_recording(movements, at + 15.0, seed=seed, jitter=0.2)
    _feed_checking_promise(t, xyz, sizes)


def test_promise_holds_on_a_simulated_night_and_the_watermark_follows_a_still_leg_closely() -> None:
    night = simulate_night("rls-severe", seed=7, duration_h=0.25, legs="left", start_unix_s=1_700_000_000.0)
    leg = night.legs["left"]
    moves, trail = _feed_checking_promise(leg.t, leg.xyz.astype(np.float64), [52, 13, 77, 1, 260])
    assert moves > 20
    # a leg lying still: the watermark trails its data by the filters' delay (~0.1 s), not the 0.5-s
    # difference lag over which an onset may be refined back (what it did before)
    assert np.median(trail) < 0.2, np.percentile(trail, [10, 50, 90])


def _onset_floor_reference(fast: np.ndarray, level: np.ndarray, lag: int, avg: int, first_start: int) -> int:
    """The definition of kernels.onset_floor, spelled out: the rests by slicing, every pair checked."""
    n = fast.shape[0]
    starts = [lo for lo in range(n - lag, n) if lo - (n - lag) >= first_start]
    rest = {lo: fast[lo - avg : lo + 1].mean(axis=0) for lo in starts}
    for m in range(n - 1, n - lag - 1, -1):
        if all(np.sum((fast[m] - rest[lo]) ** 2) < level[m] ** 2 for lo in starts if lo <= m):
            return m
    return n - lag


@settings(max_examples=200, deadline=None)
@given(
    lag=st.integers(1, 30),
    avg=st.integers(0, 12),
    extra=st.integers(0, 10),
    first_start=st.integers(-40, 32),
    seed=st.integers(0, 10_000),
    spread=st.sampled_from([0.001, 0.01, 0.1]),
)
def test_onset_floor_kernel_matches_its_definition(lag, avg, extra, first_start, seed, spread) -> None:
    from detector.scoring.kernels import onset_floor

    rng = np.random.default_rng(seed)
    n = lag + avg + extra
    fast = np.cumsum(rng.normal(0, spread, (n, 3)), axis=0)  # a random walk: some samples in, some out
    level = np.full(n, 0.02) * rng.uniform(0.5, 2.0, n)
    first = min(first_start, lag)
    assert onset_floor(fast, level, lag, avg, first) == _onset_floor_reference(fast, level, lag, avg, first)
