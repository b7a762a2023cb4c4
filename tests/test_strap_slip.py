"""Strap slip (issue 19, item 5): the sensor turning on the ankle is neither a leg movement nor a posture change.

On the detector's own physical leg model (detector.scoring.synthetic) and on the simulator's nights (simulator.slip).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.scoring.scorer import NightScorer, score_arrays
from detector.scoring.slip import SLIP_MAX_S, SLIP_MIN_DEG
from detector.scoring.synthetic import SyntheticMovement, SyntheticSlip, leg_recording
from simulator.api import prepare_night, simulate_night


def _near(events, at: float, window: float = 1.0, kinds=("lm", "long", "twitch")) -> list:
    return [e for e in events if e.kind in kinds and abs(e.onset - at) <= window]


@settings(max_examples=25, deadline=None)
@given(
    duration=st.floats(0.1, 0.5),
    angle=st.floats(10.0, 90.0),
    tilt=st.sampled_from([0.0, 4.0, 10.0]),
    sign=st.sampled_from([-1.0, 1.0]),
    rate=st.sampled_from([25.0, 52.0, 100.0]),
    seed=st.integers(0, 1000),
)
def test_a_slip_of_the_sensor_is_neither_an_lm_nor_a_twitch(
    duration: float, angle: float, tilt: float, sign: float, rate: float, seed: int
) -> None:
    slip = SyntheticSlip(60.0, duration, sign * angle, tilt)
    t, xyz = leg_recording([], 150.0, rate, seed=seed, slips=(slip,))
    s = score_arrays((t, xyz))
    assert s.lm_count == 0 and s.twitch_count == 0 and s.long_movement_count == 0, s.events
    assert not s.events
    assert s.strap_slip_count == 1
    found = s.strap_slips[0]
    assert abs(found["start"] - slip.onset) < 0.3 and found["end"] - found["start"] < SLIP_MAX_S
    # the measured step is the sensor's turn (about the shank, plus the tilt)
    assert found["angle_deg"] == pytest.approx(np.hypot(angle, tilt), abs=3.0)
    assert not s.bed_transitions


@settings(max_examples=25, deadline=None)
@given(
    duration=st.floats(0.6, 9.0),
    angle=st.floats(10.0, 40.0),
    held=st.floats(0.0, 0.9),
    rate=st.sampled_from([25.0, 52.0, 100.0]),
    seed=st.integers(0, 1000),
)
def test_a_big_leg_movement_that_returns_stays_an_lm(
    duration: float, angle: float, held: float, rate: float, seed: int
) -> None:
    """A flexion of the shank by as much as a slip turns the sensor, but that comes back, is an LM -- also when
    it rises quickly and is held (the rise alone looks like a slip until the release brings the leg back)."""
    move = SyntheticMovement(60.0, duration, angle, hold_s=held * max(0.0, duration - 0.4))
    t, xyz = leg_recording([move], 150.0, rate, seed=seed)
    s = score_arrays((t, xyz))
    assert s.strap_slip_count == 0
    assert s.lm_count == 1, s.events


def test_slips_and_movements_together() -> None:
    """Slips between real LMs: the LMs are all found (and form their PLM series), the slips are no events."""
    moves = [SyntheticMovement(30.0 + 20.0 * k, 2.0, 5.0) for k in range(6)]
    slips = (SyntheticSlip(40.5, 0.3, 45.0), SyntheticSlip(80.5, 0.45, -70.0, 5.0))
    t, xyz = leg_recording(moves, 170.0, 52.0, seed=3, slips=slips)
    s = score_arrays((t, xyz))
    assert s.strap_slip_count == 2
    assert sorted(round(e.onset) for e in s.events if e.kind == "lm") == [30, 50, 70, 90, 110, 130]
    assert s.plm_count == 6 and not _near(s.events, 40.5) and not _near(s.events, 80.5)


@pytest.mark.parametrize("rate", [25.0, 52.0, 100.0])
@pytest.mark.parametrize("order", ["slip 4 s before a held LM", "slip 2 s after a held LM"])
def test_a_slip_beside_a_held_lm_is_no_part_of_it(rate: float, order: str) -> None:
    """A slip within the 10 s a held leg waits for its release (hold_max_s) before a held LM, or just after one:
    the slip and the LM stay apart, the LM is found whole and the slip is no event."""
    lm = SyntheticMovement(64.0 if order.endswith("before a held LM") else 60.0, 4.0, 20.0, hold_s=3.2)
    slip = SyntheticSlip(60.0 if order.endswith("before a held LM") else 66.0, 0.3, 55.0)
    for seed in range(4):
        t, xyz = leg_recording([lm], 150.0, rate, seed=seed, slips=(slip,))
        s = score_arrays((t, xyz))
        assert s.strap_slip_count == 1, (seed, s.strap_slips, s.events)
        lms = [e for e in s.events if e.kind == "lm"]
        assert len(lms) == 1 and abs(lms[0].onset - lm.onset) < 0.5, (seed, s.events)
        assert not _near(s.events, slip.onset, 0.5), (seed, s.events)


def test_small_or_slow_turns_are_not_slips() -> None:
    """The rule's bounds are physical: a step under SLIP_MIN_DEG, or one slower than SLIP_MAX_S, is left alone."""
    small = SyntheticSlip(60.0, 0.3, SLIP_MIN_DEG / 2)
    t, xyz = leg_recording([], 150.0, 52.0, seed=1, slips=(small,))
    assert score_arrays((t, xyz)).strap_slip_count == 0
    slow = SyntheticSlip(60.0, 3.0, 45.0)  # a leg rolling over 3 s (the shank turns about its axis): not a slip
    t, xyz = leg_recording([], 150.0, 52.0, seed=1, slips=(slow,))
    s = score_arrays((t, xyz))
    assert s.strap_slip_count == 0 and s.lm_count == 1


def test_slips_are_the_same_live_and_offline() -> None:
    """The scorer is the one code path: 1-s chunks of two legs interleaved give the file result."""
    moves = [SyntheticMovement(30.0 + 25.0 * k, 2.5, 6.0) for k in range(4)]
    left = leg_recording(moves, 160.0, 52.0, seed=5, slips=(SyntheticSlip(43.0, 0.4, 60.0),))
    right = leg_recording([], 160.0, 52.0, seed=6, slips=(SyntheticSlip(70.0, 0.2, -30.0, 6.0),))
    whole = score_arrays(left, right).to_dict()
    live = NightScorer()
    for a in np.arange(0.0, 160.0, 1.0):
        for side, (t, xyz) in (("left", left), ("right", right)):
            i0, i1 = np.searchsorted(t, (a, a + 1.0))
            live.feed(side, t[i0:i1], xyz[i0:i1])
    chunked = live.finish().to_dict()
    assert chunked == whole
    assert whole["strap_slip_count"] == 2


@pytest.mark.parametrize(("seed", "rate"), [(1001, 25.0), (1002, 52.0), (1003, 100.0)])
def test_simulated_slips_change_nothing_but_the_slips(seed: int, rate: float) -> None:
    """The same simulated night with and without slips (their own random stream): no LM or twitch at a slip,
    the same time in bed, sleep and out-of-bed spans (a turn about the shank keeps the angle to upright), and
    the same LMs away from the slips."""
    opts = {"rate_hz": rate, "legs": "both", "duration_h": 2.0}
    plain = simulate_night("rls-moderate", seed=seed, **opts)
    slipped = simulate_night("rls-moderate", seed=seed, strap_slip=True, **opts)
    slips = [(side, ev["start"]) for side, leg in slipped.legs.items() for ev in leg.sensor.slips]
    assert slips, "the night has slips"

    def summary(night):
        legs = night.legs
        return score_arrays((legs["left"].t, legs["left"].xyz), (legs["right"].t, legs["right"].xyz))

    a, b = summary(plain), summary(slipped)
    assert b.strap_slip_count == len(slips) and a.strap_slip_count == 0
    for side, at in slips:
        assert not [e for e in _near(b.events, at) if e.side in (side, "bilateral")]
    assert b.time_in_bed_h == a.time_in_bed_h and b.sleep_h == a.sleep_h
    assert b.out_of_bed == a.out_of_bed
    # the same getting up and lying down (its edges measured through other sensor axes after a slip, see below)
    assert len(b.bed_transitions) == len(a.bed_transitions)
    for x, y in zip(a.bed_transitions, b.bed_transitions, strict=True):
        assert x["start"] < y["end"] and y["start"] < x["end"]

    # away from the slips the LMs are the same ones; after a slip the sensor's axes see the leg through other
    # per-axis scale errors and 1-mg steps, so an onset or offset may move by a sample or two (not more than a
    # matching tolerance of 1 s), out of bed (standing sway, walking) the readings differ more: in bed only
    def far(summary) -> np.ndarray:
        up = [(o["start"], o["end"]) for o in summary.out_of_bed]
        return np.array(
            [
                e.onset
                for e in summary.events
                if e.kind == "lm"
                and all(abs(e.onset - at) > 12 for _, at in slips)
                and not any(lo <= e.onset < hi for lo, hi in up)
            ]
        )

    fa, fb = far(a), far(b)
    matched = sum(1 for o in fa if np.any(np.abs(fb - o) <= 1.0))
    assert matched >= 0.98 * max(len(fa), len(fb)), (len(fa), len(fb), matched)


def test_the_simulator_turns_the_sensor_about_the_shank() -> None:
    """A simulated slip turns gravity in the sensor frame by its angle and keeps its component along the shank
    (the mount maps the leg's x, the shank's axis, into the sensor frame); the truth holds no movement for it."""
    night = simulate_night("healthy", seed=11, rate_hz=52.0, legs="both", duration_h=2.0, strap_slip=True, drops=False)
    seen = 0
    for leg in night.legs.values():
        shank = leg.sensor.mount @ np.array([1.0, 0.0, 0.0])
        for ev in leg.sensor.slips:
            i0, i1 = np.searchsorted(leg.t, (ev["start"] - 1.5, ev["start"] - 0.5))
            j0, j1 = np.searchsorted(leg.t, (ev["end"] + 0.5, ev["end"] + 1.5))
            before = leg.xyz[i0:i1].astype(np.float64).mean(axis=0) - leg.sensor.bias_g
            after = leg.xyz[j0:j1].astype(np.float64).mean(axis=0) - leg.sensor.bias_g
            cos = before @ after / np.linalg.norm(before) / np.linalg.norm(after)
            turned = np.degrees(np.arccos(np.clip(cos, -1, 1)))
            angle = np.degrees(np.linalg.norm(ev["rotvec"]))
            assert turned <= angle + 2.0  # gravity turns by at most the pod's turn (less when not across the shank)
            if abs(ev["rotvec"][1]) + abs(ev["rotvec"][2]) == 0:  # a pure turn about the shank
                assert before @ shank == pytest.approx(after @ shank, abs=0.01)
            assert not any(
                m.side == leg.side and m.onset <= ev["end"] and ev["start"] <= m.offset
                for m in night.truth.plan.movements
            )
            seen += 1
    assert seen


def test_strap_slip_changes_nothing_else_in_the_night() -> None:
    plain = prepare_night("mild", seed=7, duration_h=2.0)
    slipped = prepare_night("mild", seed=7, duration_h=2.0, strap_slip=True)
    assert [(m.onset, m.offset, m.side) for m in plain.plan.movements] == [
        (m.onset, m.offset, m.side) for m in slipped.plan.movements
    ]
    for side in plain.sensors:
        assert np.array_equal(plain.sensors[side].mount, slipped.sensors[side].mount)
        assert plain.sensors[side].noise_g == slipped.sensors[side].noise_g
        assert plain.sensors[side].drops == slipped.sensors[side].drops
    assert plain.to_dict()["score"] == slipped.to_dict()["score"]
