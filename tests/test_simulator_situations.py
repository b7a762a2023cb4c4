"""The simulator's issue-19 situations: the sensor taken off the ankle, and partner turns over leg movements."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.api import prepare_night, simulate_night


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000))
def test_a_sensor_taken_off_reads_gravity_and_its_noise_only(seed: int) -> None:
    night = simulate_night("rls-severe", seed=seed, rate_hz=25.0, duration_h=1.0, taken_off=True, drops=False)
    for side, leg in night.legs.items():
        for ev in leg.sensor.off:
            h_off, h_on = ev["handling_s"]
            a, b = ev["start"] + h_off + 1, (ev["end"] - h_on - 1) if ev["put_back"] else ev["end"]
            i0, i1 = np.searchsorted(leg.t, (a, min(b, a + 600)))
            still = leg.xyz[i0:i1].astype(np.float64)
            # on the table: no leg movement, no heartbeat: the SD is the sensor's noise (+ 1-mg quantisation)
            noise = leg.sensor.noise_g
            assert np.all(still.std(axis=0) < 1.25 * np.hypot(noise, 0.0003) + 0.0005), side
            # the truth does not count movements the leg made while its sensor lay on the table
            for m in night.truth.plan.movements:
                if m.side == side and ev["start"] < m.offset and m.onset < ev["end"]:
                    assert not night.truth.recorded(m)
    worn = night.truth.worn_hours()["in_bed"]
    assert worn <= night.truth.hours()["in_bed"]
    off = night.truth.nonwear
    assert (worn < night.truth.hours()["in_bed"]) == any(
        b > night.truth.in_bed[0] and a < night.truth.in_bed[1] for a, b in off
    )


def test_taken_off_and_bounce_change_nothing_else_in_the_night() -> None:
    plain = prepare_night("mild", seed=7, duration_h=2.0)
    both = prepare_night("mild", seed=7, duration_h=2.0, taken_off=True, bounce=True)
    assert [(m.onset, m.offset, m.side) for m in plain.plan.movements] == [
        (m.onset, m.offset, m.side) for m in both.plan.movements
    ]
    for side in plain.sensors:
        assert np.array_equal(plain.sensors[side].mount, both.sensors[side].mount)
        assert plain.sensors[side].noise_g == both.sensors[side].noise_g
    before = {p["start"] for p in plain.plan.partner}
    assert before <= {p["start"] for p in both.plan.partner}
    added = [p for p in both.plan.partner if p["start"] not in before]
    assert added, "partner turns were added"
    lms = np.array([m.onset for m in both.plan.movements if m.kind == "lm"])
    for p in added:  # each starts 0.3-3 s after an LM's onset, and is a turn (5-20 mg)
        lag = p["start"] - lms[lms <= p["start"]].max()
        assert 0.3 <= lag <= 3.0 and 0.005 <= p["amp_g"] <= 0.020
