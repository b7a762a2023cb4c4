"""Non-wear (issue 19): the sensor taken off the ankle, detected by detector.scoring.nonwear in the scorer's path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.scoring import nonwear
from detector.scoring.nonwear import WearTable, find_nonwear
from detector.scoring.scorer import NightScorer, score_arrays
from detector.storage import schema
from detector.storage.night_points import summary_lines
from simulator.api import simulate_night

RATE = 25.0


def _table(xyz: np.ndarray, t0: float = 0.0) -> tuple[WearTable, float]:
    t = t0 + np.arange(xyz.shape[0]) / RATE
    table = WearTable(30.0)
    table.add(t, xyz)
    return table, float(t[-1])


def _still(minutes: float, noise_g: float, seed: int = 0, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * RATE)
    return np.asarray(up) + np.round(rng.normal(0, noise_g, (n, 3)) * 1000) / 1000


def _with_heartbeat(xyz: np.ndarray, peak_g: float, breath_deg: float = 0.0) -> np.ndarray:
    """A leg's still samples: a damped 5-Hz complex once a second, and a 0.25-Hz breathing tilt."""
    t = np.arange(xyz.shape[0]) / RATE
    since = t % 1.0
    bcg = peak_g * np.exp(-since / 0.08) * np.sin(2 * np.pi * 5 * since)
    out = xyz.copy()
    out[:, 0] += bcg
    out[:, 1] += np.sin(np.radians(breath_deg)) * np.sin(2 * np.pi * 0.25 * t)
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4000), min_size=1, max_size=12), st.floats(0.0, 29.99))
def test_wear_table_is_the_same_in_any_chunking(cuts: list[int], t0: float) -> None:
    xyz = _still(3.0, 0.003, seed=3)
    xyz[1000:1100] += 0.2  # a movement: min/max and sums must merge across chunks too
    t = t0 + np.arange(xyz.shape[0]) / RATE
    whole = WearTable(30.0)
    whole.add(t, xyz)
    chunked = WearTable(30.0)
    bounds = sorted({0, xyz.shape[0], *(c for c in np.cumsum(cuts) if c < xyz.shape[0])})
    for a, b in itertools.pairwise(bounds):
        chunked.add(t[a:b], xyz[a:b])
    assert np.array_equal(whole.epochs, chunked.epochs)
    assert np.array_equal(whole.rows, chunked.rows)


@pytest.mark.parametrize("noise_g", [0.002, 0.0045])
def test_a_sensor_on_a_table_is_non_wear(noise_g: float) -> None:
    table, last = _table(_still(40, noise_g, up=(0.3, -0.9, 0.3)))
    spans = find_nonwear(table, [], last)
    assert len(spans) == 1
    start, end, ratio = spans[0]
    assert start == 0.0 and end == pytest.approx(last)
    assert abs(ratio - 1) < 0.01


def test_a_still_leg_with_a_heartbeat_is_not_non_wear() -> None:
    """The same 40 still minutes with the body's micro-motion (a 2-mg heartbeat complex, 0.08-deg breathing)."""
    table, last = _table(_with_heartbeat(_still(40, 0.003), 0.002, 0.08))
    spans = find_nonwear(table, [], last, min_nonwear_s=0.0)
    assert spans == []


def test_a_table_shorter_than_the_minimum_is_not_non_wear() -> None:
    table, last = _table(_still(nonwear.MIN_NONWEAR_S / 60 - 2, 0.003))
    assert find_nonwear(table, [], last) == []
    assert len(find_nonwear(table, [], last, min_nonwear_s=60.0)) == 1


def test_a_movement_breaks_the_still_run_and_sets_its_edge() -> None:
    xyz = _still(80, 0.003)
    table, last = _table(xyz)
    # a movement reported 40 min in: two runs of ~40 min, the second starting at the movement's offset
    spans = find_nonwear(table, [(2400.0, 2411.3)], last)
    assert [round(a, 1) for a, _, _ in spans] == [0.0, 2411.3]
    assert spans[0][1] == 2400.0


def test_cooling_drift_on_the_table_is_still_non_wear() -> None:
    """The offset drifts by several mg as the sensor cools from skin to room temperature (minutes)."""
    xyz = _still(45, 0.002)
    t = np.arange(xyz.shape[0]) / RATE
    xyz += np.outer(1 - np.exp(-t / 300.0), [0.006, -0.004, 0.005])
    table, last = _table(xyz)
    assert len(find_nonwear(table, [], last)) == 1


@pytest.fixture(scope="module")
def taken_off_night():
    """Both sensors taken off ~22 min into a 1-h night and never put back (seed 11)."""
    return simulate_night("rls-severe", seed=11, rate_hz=RATE, duration_h=1.0, taken_off=True)


def test_taken_off_night_is_found_excluded_and_marked(taken_off_night) -> None:
    night = taken_off_night
    left, right = night.legs["left"], night.legs["right"]
    summary = score_arrays((left.t, left.xyz), (right.t, right.xyz))
    for side in ("left", "right"):
        (true_a, true_b) = night.truth.nonwear_of(side)[0]
        found = [(d["start"], d["end"]) for d in summary.nonwear if d["side"] == side]
        assert len(found) == 1
        a, b = found[0]
        assert nonwear.overlap_s(a, b, [(true_a, true_b)]) >= 0.95 * (true_b - true_a)
        assert a >= true_a  # never before the sensor left the ankle
    off_h = summary.nonwear_h
    true_off_s = night.truth.nonwear[0][1] - night.truth.nonwear[0][0]
    assert off_h * 3600 == pytest.approx(true_off_s, abs=120)
    # time in bed ends when the sensors came off; too little of the night is left for an index
    assert summary.time_in_bed_h == pytest.approx(night.truth.worn_hours()["in_bed"], abs=0.05)
    assert summary.wear_insufficient is True
    assert summary.plm_index is None and summary.plms_index is None


def test_taken_off_night_scored_live_equals_the_file_result(taken_off_night) -> None:
    """1-s chunks, legs interleaved (what the live core feeds): the same non-wear and the same summary."""
    night = taken_off_night
    legs = night.legs
    offline = score_arrays((legs["left"].t, legs["left"].xyz), (legs["right"].t, legs["right"].xyz)).to_dict()
    scorer = NightScorer()
    cursors = {side: 0 for side in legs}
    while any(cursors[s] < len(legs[s].t) for s in legs):
        for side, leg in legs.items():
            i = cursors[side]
            j = int(np.searchsorted(leg.t, leg.t[min(i, len(leg.t) - 1)] + 1.0))
            if i < len(leg.t):
                scorer.feed(side, leg.t[i:j], leg.xyz[i:j])
                cursors[side] = j
    live = scorer.finish().to_dict()
    assert live["nonwear"] == offline["nonwear"] and live["nonwear"]
    assert live == offline


def test_non_wear_is_written_to_influx(taken_off_night) -> None:
    night = taken_off_night
    legs = night.legs
    summary = score_arrays((legs["left"].t, legs["left"].xyz), (legs["right"].t, legs["right"].xyz))
    lines = summary_lines("alice", summary.fields, [e.to_dict() for e in summary.events], final=True)
    spans = [ln for ln in lines if ln.startswith(schema.NONWEAR + ",")]
    assert len(spans) == len(summary.nonwear) == 2
    assert all("end_ms=" in ln and "duration_s=" in ln and "final=true" in ln for ln in spans)
    wear = [ln for ln in lines if ln.startswith(schema.NIGHT + ",") and "wear_insufficient" in ln]
    assert len(wear) == 1 and "wear_insufficient=true" in wear[0]
    night_line = next(ln for ln in lines if ln.startswith(schema.NIGHT + ",") and "lm_count" in ln)
    assert "plm_index=" not in night_line  # no index for a night worn too little


def test_taken_off_night_through_the_live_core_writes_the_offline_spans() -> None:
    """The live detector's core (routing, reorder, chunk policy, the scorer, the points) on the wire batches
    of a taken-off night: its final non-wear points are the spans `plm score` finds in the same samples."""
    from detector.live.core import DetectorCore
    from plm import wire
    from plm.config import Settings
    from tests.live_helpers import batches_as_arrays, interleave, night_batches

    night = simulate_night("rls-severe", seed=11, rate_hz=RATE, duration_h=1.0, taken_off=True, jitter_ms=0, gap=False)
    batches = night_batches(night)
    offline = score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"]))
    assert len(offline.nonwear) == 2
    core = DetectorCore(Settings())
    messages = [(wire.acc_topic("nw", f"{side}-ankle"), wire.encode_binary(b)) for side, b in interleave(batches)]
    effects = [core.handle(messages[i : i + 40], 1_700_000_000.0) for i in range(0, len(messages), 40)]
    effects.append(core.end_all_nights())
    final = {}
    for line in (p for e in effects for p in e.points if p.startswith(schema.NONWEAR + ",")):
        head, fields, stamp = line.split(" ")
        if "final=true" in fields:
            final[(head.split("side=")[1].split(",")[0], int(stamp))] = fields.split("end_ms=")[1].split("i")[0]
    expected = {(d["side"], schema.to_ms(d["start"])): str(schema.to_ms(d["end"])) for d in offline.nonwear}
    assert final == expected
    wear = [p for e in effects for p in e.points if p.startswith(schema.NIGHT + ",") and "wear_insufficient=true" in p]
    assert wear, "the night is marked as worn too little"


def test_no_quiet_epoch_at_all_is_no_non_wear() -> None:
    xyz = _still(3, 0.003)
    xyz[:, 0] += 0.2 * np.sin(np.arange(xyz.shape[0]) / 3)  # moving the whole time
    table, last = _table(xyz)
    assert find_nonwear(table, [], last, min_nonwear_s=0.0) == []
    assert find_nonwear(WearTable(30.0), [], None) == []
