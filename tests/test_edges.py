"""A movement's edges on the unfiltered samples (detector/scoring/edges.py; docs/scoring.md 4h)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal as sps

from detector.scoring import edges
from detector.scoring.lm import LegDetector
from detector.scoring.params import DetectorParams
from detector.scoring.signal import ActivityFilter
from detector.scoring.synthetic import SyntheticMovement, leg_recording, random_rotation

RATES = (25.0, 52.0, 100.0)


def _windows(rate: float) -> edges.EdgeWindows:
    return ActivityFilter(rate, DetectorParams()).edge_windows


@pytest.mark.parametrize("rate", RATES)
def test_the_step_response_is_scipys(rate: float) -> None:
    sos = sps.bessel(2, 5.0 / (rate / 2), "lowpass", output="sos", norm="mag")
    np.testing.assert_allclose(edges.step_response(sos, 200), sps.sosfilt(sos, np.ones(200)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rate", RATES)
def test_the_windows_follow_from_the_filter(rate: float) -> None:
    """Causality bounds the onset window by the group delay; both windows grow with the edge's size, and an
    edge no larger than the band has none (the filter cannot have moved it out of the band)."""
    w = _windows(rate)
    ratios = [0.5, 1.0, 1.5, 3, 10, 30, 100, 1e4]
    early = [w.early_s(r) for r in ratios]
    late = [w.late_s(r) for r in ratios]
    assert early[:2] == [0.0, 0.0] and late[:2] == [0.0, 0.0]
    assert all(0 <= e <= w.delay_s + 1e-12 for e in early)
    assert early == sorted(early) and late == sorted(late)
    assert 0.03 < late[5] < 0.12  # a stop 30x the band: the 5-Hz Bessel settles in tens of ms after its delay
    assert 1.5 < w.white_ratio < 3.5  # 5 Hz of 12.5-50 Hz of white noise


def test_the_noise_ratio_is_measured_but_never_above_white_noise() -> None:
    rng = np.random.default_rng(1)
    w = _windows(52.0)
    white = rng.normal(0, 0.003, (2000, 3))
    fast = sps.sosfilt(sps.bessel(2, 5.0 / 26, "lowpass", output="sos", norm="mag"), white, axis=0)
    rest, ratio = edges.rest_and_noise(white[100:] + 0.5, fast[100:], w.white_ratio)
    assert ratio == pytest.approx(w.white_ratio, rel=0.1)
    np.testing.assert_allclose(rest, white[100:].mean(axis=0) + 0.5, rtol=0, atol=1e-12)
    smooth = fast * 2.0  # a sensor that filters its own output: as noisy as the boundary vector, not more
    assert edges.rest_and_noise(smooth, fast, w.white_ratio)[1] == pytest.approx(2.0)
    assert edges.rest_and_noise(white[:2], fast[:2], w.white_ratio)[1] == 0.0  # too few samples to say


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from(RATES),
    start=st.floats(0.2, 0.8),
    length=st.floats(0.05, 1.0),
    height=st.floats(0.0, 0.5),
    noise=st.floats(0.0, 0.02),
    shift=st.floats(0.0, 0.1),
    seed=st.integers(0, 2**16),
)
def test_refined_edges_stay_inside_what_the_filter_can_smear(rate, start, length, height, noise, shift, seed) -> None:
    """Whatever the samples, an onset moves only later and by at most the group delay, an offset only
    earlier and by at most the filter's settling time for the largest distance seen."""
    rng = np.random.default_rng(seed)
    w = _windows(rate)
    t = np.arange(0, 2.5, 1 / rate)
    raw = rng.normal(0, noise, (t.shape[0], 3))
    raw[(t >= start) & (t < start + length), 1] += height
    level = np.full(t.shape[0], 0.005)
    largest = float(np.sqrt((raw**2).sum(axis=1)).max()) / 0.005
    onset = edges.refine_onset(t, raw, level, 2.0, np.zeros(3), start - shift, w)
    offset = edges.refine_offset(t, raw, level, 2.0, np.zeros(3), start + length + shift, w)
    assert start - shift <= onset <= start - shift + w.delay_s + 1e-12
    assert start + length + shift - w.late_s(largest) - 1e-12 <= offset <= start + length + shift


@pytest.mark.parametrize("rate", RATES)
def test_an_abrupt_box_is_found_to_the_sample(rate: float) -> None:
    """Noise-free samples of a box 40x the band: the refined edges are its first and last-plus-one samples,
    from boundary edges placed as the filter smears them (a group delay early, a settling time late)."""
    t = np.arange(0, 3, 1 / rate)
    raw = np.zeros((t.shape[0], 3))
    inside = np.flatnonzero((t >= 1.0) & (t < 1.4))
    raw[inside, 2] = 0.2
    level = np.full(t.shape[0], 0.005)
    w = _windows(rate)
    first, after = t[inside[0]], t[inside[-1] + 1]
    assert edges.refine_onset(t, raw, level, 1.0, np.zeros(3), first - w.delay_s, w) == pytest.approx(first)
    late = w.late_s(40.0)
    assert edges.refine_offset(t, raw, level, 1.0, np.zeros(3), after + late, w) == pytest.approx(after)
    # a slow end: the last sample outside is barely above the band, so the boundary's offset stays
    ramp = raw.copy()
    ramp[inside[-8:], 2] = np.linspace(0.05, 0.0051, 8)
    assert edges.refine_offset(t, ramp, level, 1.0, np.zeros(3), after + 0.01, w) >= after + 0.01 - w.late_s(1.02)


def _measured(rate: float, duration: float, angle: float, seeds: range) -> list[tuple[float, str]]:
    """(duration error, kind) of five movements per seed of the detector's synthetic leg."""
    out = []
    for seed in seeds:
        moves = [SyntheticMovement(10.0 + 20 * i, duration, angle) for i in range(5)]
        t, xyz = leg_recording(moves, 120, rate, seed=seed)
        leg = LegDetector("left")
        found = leg.feed(t, xyz)[0] + leg.flush()[0]
        assert len(found) == 5
        out += [(m.duration - duration, m.kind) for m in found]
    return out


@pytest.mark.parametrize("rate", RATES)
def test_a_sharp_twitch_is_not_stretched_into_a_leg_movement(rate: float) -> None:
    """A 0.42-s jerk (8 deg, ~1.2 g of linear acceleration that starts and stops at once): on the 5-Hz
    boundary vector alone it came out 0.52-0.60 s, a leg movement, every time at every rate."""
    measured = _measured(rate, 0.42, 8.0, range(6))
    assert all(kind == "twitch" for _, kind in measured)
    errors = [err for err, _ in measured]
    assert float(np.median(errors)) < 0.03
    assert max(errors) < 0.075


@pytest.mark.parametrize("rate", RATES)
def test_smooth_movements_keep_their_durations(rate: float) -> None:
    """A 2-s raised-cosine LM is slower than the filter: the boundary had it right, and the refinement,
    bounded by what the filter can smear, leaves it within a few samples."""
    measured = _measured(rate, 2.0, 5.0, range(4))
    errors = np.array([err for err, kind in measured if kind == "lm"])
    assert errors.shape[0] >= 19
    assert abs(float(np.median(errors))) < 0.05
    short_lm = _measured(rate, 0.6, 4.0, range(4))
    assert all(kind == "lm" for _, kind in short_lm)  # a 0.6-s LM stays one


@pytest.mark.parametrize("rate", RATES)
def test_a_rest_of_half_a_second_separates_two_movements(rate: float) -> None:
    """The EMG rule: movements separated by >= 0.5 s of rest are two. Timed on the boundary vector alone,
    whose tails eat into the rest at both ends, a 0.6-s rest between two 0.8-s movements merged them at
    25 Hz every time and at 52 Hz in 7 of 10 recordings; timed like the edges (4h) it separates them, and
    a 0.45-s rest still does not."""
    for rest, count in ((0.6, 2), (0.45, 1)):
        for seed in range(4):
            moves = [SyntheticMovement(10.0, 0.8, 4.0), SyntheticMovement(10.8 + rest, 0.8, 4.0)]
            t, xyz = leg_recording(moves, 30, rate, seed=seed)
            leg = LegDetector("left")
            found = [m for m in leg.feed(t, xyz)[0] + leg.flush()[0] if m.kind == "lm"]
            assert len(found) == count, (rest, seed, found)


def _slow_return(rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A shank raised 3 deg in 0.3 s, held 2 s and lowered back over 2.5 s (too slowly for the activity to
    cross its onset level), three times; lying, randomly mounted, 3 mg of noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(100 * rate)) / rate
    theta = np.zeros_like(t)
    for onset in (10.0, 40.0, 70.0):
        tau = t - onset
        up = np.clip(tau / 0.3, 0, 1)
        down = np.clip((tau - 2.3) / 2.5, 0, 1)
        theta += np.radians(3.0) * (0.5 * (1 - np.cos(np.pi * up)) - down)
    angle = np.pi / 2 + theta
    leg = np.stack([np.zeros_like(t), np.sin(angle), np.cos(angle)], axis=1)
    xyz = leg @ random_rotation(rng).T + rng.normal(0, 0.003, (t.shape[0], 3))
    return t, np.round(xyz, 3)


@pytest.mark.parametrize("rate", RATES)
def test_a_hold_released_too_slowly_for_the_activity_ends_where_the_leg_came_back(rate: float) -> None:
    """The leg is still in its raised position, then back at its first rest without any burst: the
    movement ends where it came back (4.3-4.8 s here), not at the top of its 0.3-s rise (before: a 0.1-0.2-s
    twitch at 25 and 52 Hz)."""
    durations = []
    for seed in range(3):
        t, xyz = _slow_return(rate, seed)
        leg = LegDetector("left")
        found = leg.feed(t, xyz)[0] + leg.flush()[0]
        durations += [m.duration for m in found if m.kind == "lm"]
    assert len(durations) >= 8
    assert all(3.8 < d < 5.0 for d in durations), durations
