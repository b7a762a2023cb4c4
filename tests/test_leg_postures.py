"""A leg's posture timeline from its posture changes (detector.scoring.inbed.leg_postures): the bed
transitions, and the seconds its shank was upright inside epochs that are mostly lying."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from detector.scoring.inbed import leg_postures
from detector.scoring.scorer import score_arrays
from simulator.api import simulate_night

UP = np.array([0.0, 0.0, 1.0])
LYING = np.array([1.0, 0.0, 0.05])
ON_SIDE = np.array([0.0, 1.0, 0.1])
SITTING = np.array([0.3, 0.0, 0.95])  # shank 17 degrees from vertical, feet on the floor


def test_sitting_on_the_edge_of_the_bed_is_upright_and_lying_down_is_the_transition() -> None:
    changes = [
        (10.0, 14.0, SITTING, LYING),  # lies down
        (900.0, 908.0, LYING, ON_SIDE),  # turns over: lying to lying
        (5000.0, 5004.0, ON_SIDE, SITTING),  # sits up
        (5010.0, 5012.0, SITTING, UP),  # stands
    ]
    transitions, upright = leg_postures(changes, UP, 45.0)
    assert transitions == [(10.0, 14.0), (5000.0, 5004.0)]
    assert upright == [(-math.inf, 10.0), (5004.0, math.inf)]  # sitting -> standing is upright throughout


def test_no_posture_change_no_upright_span() -> None:
    assert leg_postures([], UP, 45.0) == ([], [])


directions = st.sampled_from([UP, LYING, ON_SIDE, SITTING])


@given(st.lists(st.tuples(st.floats(1.0, 100.0), st.floats(0.5, 10.0), directions), min_size=1, max_size=12))
def test_upright_spans_are_exactly_the_times_the_leg_is_upright(steps) -> None:
    """Between changes the leg keeps the orientation the last change left it in: a time there is in an upright
    span iff that orientation is within the lying angle of upright; spans are sorted and disjoint."""
    changes, t, before = [], 0.0, steps[0][2]
    for rest, moving, after in steps:
        changes.append((t + rest, t + rest + moving, before, after))
        t, before = t + rest + moving, after
    transitions, spans = leg_postures(changes, UP, 45.0)

    def is_up(g: np.ndarray) -> bool:
        return float(g @ UP) / float(np.linalg.norm(g)) >= math.cos(math.radians(45.0))

    assert all(a < b <= c for (a, b), (c, _) in itertools.pairwise(spans))
    assert len(transitions) == sum(is_up(b) != is_up(a) for _, _, b, a in changes)
    probes = [(changes[0][0] - 1.0, changes[0][2])]
    probes += [((c[1] + n[0]) / 2, c[3]) for c, n in itertools.pairwise(changes) if n[0] > c[1]]
    probes.append((changes[-1][1] + 1.0, changes[-1][3]))
    for at, orientation in probes:
        assert any(a <= at < b for a, b in spans) == is_up(orientation)


def test_a_short_night_counts_no_movement_of_a_leg_sitting_on_the_bed_and_keeps_every_lying_one() -> None:
    """End to end on simulated nights: the seconds sitting on the edge of the bed after getting up (a few seconds
    inside an epoch that is mostly lying) are upright on the leg; no true in-bed LM falls in an upright span."""
    for seed, rate in ((1110, 100.0), (2013, 52.0)):
        night = simulate_night("mild", seed=seed, rate_hz=rate, legs="left", duration_h=1.5)
        rec = night.legs["left"]
        summary = score_arrays((rec.t, rec.xyz), None)
        spans = [(s["start"], s["end"]) for s in summary.upright if s["side"] == "left"]
        plan = sorted((m for m in night.truth.plan.movements if m.side == "left"), key=lambda m: m.onset)
        sat = [(a.offset + 2.0, b.onset - 1.0) for a, b in itertools.pairwise(plan) if a.role == "get_up"]
        sat = [(a, b) for a, b in sat if b > a]
        assert sat, "the night ends by getting up"
        for a, b in sat:
            assert any(lo <= a and b <= hi for lo, hi in spans), (a, b, spans)
        lms = [m.onset for m in night.truth.score().movements if m.kind == "lm"]
        assert lms and not any(lo <= t < hi for t in lms for lo, hi in spans)
