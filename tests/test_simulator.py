"""The simulated night: distributions match their published parameters, truth is consistent, sensor artefacts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plm.cli import main as plm_main
from plm.rules import WASM2016, Gap, LegMovement, score_events
from simulator import PROFILES, prepare_night, read_leg_csv, simulate_night

SLEEP = ("n1", "n2", "n3", "rem")


def _truths(profile: str, seeds, **kw):
    return [prepare_night(profile, seed=s, **kw) for s in seeds]


def _clm_imis(truth) -> np.ndarray:
    """IMIs (onset to onset of consecutive CLMs) of the scored true movements."""
    onsets = np.array([m.onset for m in truth.score().movements if m.candidate])
    return np.diff(onsets)


# ----------------------------------------------------------------------------- night model


@pytest.mark.parametrize("name", list(PROFILES))
def test_plms_index_per_profile_stays_in_its_band(name):
    low, high = PROFILES[name].plms_per_h
    values = [t.indices()["plms_index"] for t in _truths(name, range(6))]
    assert all(v is not None for v in values)
    mean = float(np.mean(values))
    assert low * 0.8 <= mean <= high * 1.15, (name, values)
    assert min(values) < max(values), "no night-to-night variability"


def test_profiles_are_ordered_by_severity():
    means = [np.mean([t.indices()["plms_index"] for t in _truths(p, range(3))]) for p in PROFILES]
    assert means == sorted(means), means


def test_imi_distribution_has_the_published_shape():
    young = np.concatenate([_clm_imis(t) for t in _truths("rls-severe", range(4), age=45)])
    old = np.concatenate([_clm_imis(t) for t in _truths("rls-severe", range(4), age=72)])
    in_range = young[(young >= 10) & (young <= 90)]
    assert len(in_range) / len(young) > 0.8
    assert 20 <= np.median(in_range) <= 32, "broad peak 15-30 s, typical 24-28 s before 55"
    hist, edges = np.histogram(in_range, bins=np.arange(10, 92, 5))
    assert 15 <= edges[np.argmax(hist)] < 30
    old_in = old[(old >= 10) & (old <= 90)]
    assert 12 <= np.median(old_in) <= 20, "14-16 s after 65"
    # the second peak at 2-4 s: more IMIs in 2-4 s than in the 5-8 s trough
    both = np.concatenate([young, old])
    assert np.count_nonzero((both >= 2) & (both < 4)) > 1.5 * np.count_nonzero((both >= 5) & (both < 7))


def test_durations_and_stage_dependence():
    truths = _truths("rls-severe", range(4))
    periodic = [m for t in truths for m in t.movements if m.role == "periodic"]
    d = np.array([m.duration for m in periodic])
    assert 2.3 <= d.mean() <= 3.4
    assert np.mean((d >= 0.5) & (d <= 5.0)) > 0.93
    assert d.min() >= 0.5
    rem = [m.duration for m in periodic if m.stage == "rem"]
    nrem = [m.duration for m in periodic if m.stage in ("n1", "n2")]
    assert rem and np.mean(rem) < np.mean(nrem) - 0.5, "shortest in REM"
    twitches = [m.duration for t in truths for m in t.movements if m.kind == "twitch"]
    assert twitches and max(twitches) < 0.5


def test_plm_densest_in_first_half_and_rare_in_rem():
    first = second = 0
    per_stage: dict[str, float] = {}
    hours: dict[str, float] = {}
    for t in _truths("rls-moderate", range(6)):
        mid = sum(t.in_bed) / 2
        for m in t.score().movements:
            if m.plm:
                first += m.onset < mid
                second += m.onset >= mid
                s = t.plan.stage_at(m.onset)
                per_stage[s] = per_stage.get(s, 0) + 1
        for a, b, s in t.stages:
            hours[s] = hours.get(s, 0) + (b - a) / 3600
    assert first > 1.2 * second
    rate = {s: per_stage.get(s, 0) / hours[s] for s in ("n2", "rem")}
    assert rate["rem"] < 0.35 * rate["n2"], rate


def test_bilateral_structure():
    parts = [m.parts for t in _truths("rls-moderate", range(4)) for m in t.score().movements if m.kind == "lm"]
    parts = np.array(parts)
    assert 0.34 <= np.mean(parts == 1) <= 0.52, "~42 % one leg only"
    assert 0.45 <= np.mean(parts == 2) <= 0.63, "~55 % one matching movement"


def test_night_structure_stages_and_body_movements():
    t = prepare_night("rls-moderate", seed=3)
    stages = {s for _, _, s in t.stages}
    assert {"wake", "n1", "n2", "n3", "rem", "out"} <= stages
    assert t.in_bed[0] > t.plan.start and t.in_bed[1] < t.plan.end
    kinds = {m.kind for m in t.movements}
    assert {"lm", "twitch", "posture", "walking"} <= kinds
    turns = [m for m in t.movements if m.role == "turn"]
    assert turns and all(2.5 <= m.duration <= 20.5 for m in turns)
    # stages tile the recording without holes
    for (_a0, a1, _), (b0, _b1, _) in zip(t.stages, t.stages[1:], strict=False):
        assert a1 == pytest.approx(b0)


# ----------------------------------------------------------------------------- truth


def test_truth_json_is_the_rules_applied_to_the_true_events(tmp_path):
    night = simulate_night("rls-severe", seed=11, duration_h=1.5, gap=True)
    paths = night.write(tmp_path)
    doc = json.loads(paths["truth"].read_text())
    lms = [
        LegMovement(m["onset"], m["duration"], m["side"])
        for m in doc["movements"]
        if m["kind"] in ("lm", "long", "twitch", "posture")
        and m["recorded"]
        and m["in_bed"]
        and m["role"] not in ("get_up", "lie_down")
    ]
    assert [m["scored"] for m in doc["movements"]].count(True) == len(lms)
    gaps = [Gap(g["start"], g["end"], g["side"], g["ends_series"]) for g in doc["gaps"]]
    assert {(g.start, g.end) for g in gaps if g.ends_series} == {(o["start"], o["end"]) for o in doc["out_of_bed"]}
    score = score_events(lms, WASM2016, gaps)
    truth = doc["score"]["wasm2016"]
    assert truth["plm_count"] == score.plm_count > 0
    assert truth["clm_count"] == score.clm_count
    assert truth["series_count"] == score.series_count
    assert truth["plm_index"] == pytest.approx(score.plm_count / doc["hours"]["in_bed"])
    assert not all(m["recorded"] for m in doc["movements"]), "movements in the sensor gap are not recorded"
    assert doc["sensors"]["left"]["gaps"] or doc["sensors"]["right"]["gaps"]
    assert "aasm" in doc["score"]


def test_the_truth_divides_by_the_time_a_leg_was_measured():
    """Movements while no sensor sent data are not counted, so neither are those hours: the truth's index is
    per hour of time in bed with data (as the detector's), not per hour of the whole time in bed. On one
    leg a sensor gap is unobserved time; on two legs only where both sensors were silent."""
    one = simulate_night("rls-severe", seed=11, duration_h=1.5, gap=True, legs="left")
    (gap,) = one.truth.sensors["left"].gaps
    lights_off, lights_on = one.truth.in_bed
    inside = max(0.0, min(gap[1], lights_on) - max(gap[0], lights_off))
    assert inside > 60
    hours = one.truth.observed_hours()
    assert hours["in_bed"] == pytest.approx(one.truth.worn_hours()["in_bed"] - inside / 3600)
    assert one.truth.indices()["plm_index"] == pytest.approx(one.truth.score().plm_count / hours["in_bed"])
    two = simulate_night("rls-severe", seed=11, duration_h=1.5, gap=True, legs="both")
    silent = two.truth.unobserved
    for a, b in silent:  # every span is silent on both legs
        for side in two.truth.legs:
            assert any(c <= a and b <= d for c, d in two.truth.sensors[side].gaps)


def test_truth_times_share_the_csv_time_base():
    night = simulate_night("rls-severe", seed=5, duration_h=0.75, drops=False, gap=False, partner=False)
    leg = night.legs["left"]
    assert leg.t[0] == pytest.approx(night.truth.plan.start, abs=0.05)
    left = [m for m in night.truth.movements if m.side == "left"]
    lms = [
        m
        for m in left
        if m.kind == "lm"
        and m.params["rot_deg"] > 8
        and not any(o is not m and o.offset > m.onset - 2 and o.onset < m.onset for o in left)
    ]
    assert lms
    for m in lms[:10]:  # each big LM shows at its true time: motion inside, quiet 1.5 s before
        inside = leg.xyz[(leg.t >= m.onset) & (leg.t <= m.offset)]
        before = leg.xyz[(leg.t >= m.onset - 1.5) & (leg.t < m.onset - 0.2)]
        assert np.ptp(inside, axis=0).max() > 3 * max(np.ptp(before, axis=0).max(), 0.01)


# ----------------------------------------------------------------------------- signal and sensor


def test_deterministic_per_seed_and_different_between_seeds():
    a = simulate_night("mild", seed=4, duration_h=0.3)
    b = simulate_night("mild", seed=4, duration_h=0.3)
    c = simulate_night("mild", seed=5, duration_h=0.3)
    for side in ("left", "right"):
        np.testing.assert_array_equal(a.legs[side].xyz, b.legs[side].xyz)
        np.testing.assert_array_equal(a.legs[side].t, b.legs[side].t)
    assert json.dumps(a.truth.to_dict()) == json.dumps(b.truth.to_dict())
    n = min(len(a.legs["left"]), len(c.legs["left"]))
    assert not np.array_equal(a.legs["left"].xyz[:n], c.legs["left"].xyz[:n])


def test_samples_are_quantised_milli_g_with_gravity_and_a_realistic_noise_floor():
    night = simulate_night("healthy", seed=2, duration_h=0.5, partner=False, noise_mg=3.0)
    leg = night.legs["right"]
    assert leg.xyz.dtype == np.float32 and leg.t.dtype == np.float64
    milli = leg.xyz.astype(np.float64) * 1000
    np.testing.assert_allclose(milli, np.rint(milli), atol=1e-3)
    norm = np.linalg.norm(leg.xyz, axis=1)
    assert abs(np.median(norm) - 1.0) < 0.05
    # a still stretch in bed: no truth movement on this leg for 60 s
    busy = [(m.onset - 2, m.offset + 2) for m in night.truth.movements if m.side == "right"]
    t0 = night.truth.in_bed[0] + 30
    while any(a < t0 + 60 and b > t0 for a, b in busy):
        t0 += 10
    still = leg.xyz[(leg.t >= t0) & (leg.t < t0 + 60)]
    assert 2.0 <= np.std(still[:, 0]) * 1000 <= 4.5


def test_lm_amplitudes_vary_and_movements_are_smooth_not_rectangles():
    night = simulate_night("rls-severe", seed=9, duration_h=1.0, partner=False, drops=False, gap=False)
    lms = [m for m in night.truth.movements if m.kind == "lm" and m.side == "left"]
    rot = np.array([m.params["rot_deg"] for m in lms])
    assert rot.min() < 1.5 and rot.max() > 10, "small ones near the noise floor and big ones"
    leg = night.legs["left"]
    for m in [m for m in lms if m.params["rot_deg"] > 6 and m.duration > 2][:5]:
        sel = (leg.t >= m.onset - 0.5) & (leg.t <= m.offset)
        seg = leg.xyz[sel].astype(np.float64)
        dev = np.linalg.norm(seg - seg[:20].mean(axis=0), axis=1)
        k = int(np.searchsorted(leg.t[sel], m.onset))  # first sample of the movement
        assert dev[k] < 0.5 * dev.max(), "an LM ramps up from rest, it does not switch on"
        assert dev[k] < dev[k + 1] < dev[k + 2], "the rise is smooth"
        assert np.argmax(dev) > k + 2


def test_mounting_orientation_is_random_per_night():
    ups = []
    for seed in range(12):
        night = simulate_night("healthy", seed=seed, duration_h=0.25, legs="left")
        leg = night.legs["left"]
        ups.append(np.median(leg.xyz[: int(3 * leg.rate_hz)], axis=0))  # standing still at the start
    ups = np.array(ups)
    ups /= np.linalg.norm(ups, axis=1, keepdims=True)
    assert np.linalg.norm(ups.mean(axis=0)) < 0.6, "gravity direction spread over the sphere"
    fixed = simulate_night("healthy", seed=0, duration_h=0.25, legs="left", orientation="fixed")
    up = np.median(fixed.legs["left"].xyz[:100], axis=0)
    assert up[0] > 0.95, "fixed mounting: standing shank reads +x"


def test_clock_drift_present_when_asked():
    on = simulate_night("healthy", seed=1, duration_h=1.0, drops=False, gap=False)
    off = simulate_night("healthy", seed=1, duration_h=1.0, drops=False, gap=False, drift=False)
    for night, expect_drift in ((on, True), (off, False)):
        leg = night.legs["left"]
        lag = leg.device_ns / 1e9 - leg.t  # device clock minus wall-time estimate
        drift_s = lag[-1000:].mean() - lag[:1000].mean()
        expected = leg.sensor.clock_ppm * 1e-6 * (leg.t[-1] - leg.t[0])
        if expect_drift:
            assert abs(leg.sensor.clock_ppm) > 0
            assert drift_s == pytest.approx(expected, abs=0.003)
        else:
            assert abs(drift_s) < 0.003


def test_drops_and_gaps_present_when_asked():
    clean = simulate_night("mild", seed=6, duration_h=1.0, drops=False, gap=False)
    dt = np.diff(clean.legs["left"].t)
    assert dt.max() < 1.5 / 52 and dt.min() > 0.5 / 52
    lossy = simulate_night("mild", seed=6, duration_h=1.0, drops=True, gap=True)
    truth = lossy.truth.to_dict()
    holes = 0
    for side, leg in lossy.legs.items():
        dt = np.diff(leg.t)
        assert dt.min() > 0, "timestamps stay ordered despite jitter"
        holes += np.count_nonzero(dt > 0.5)
        for g in truth["sensors"][side]["gaps"]:
            assert not np.any((leg.t > g["start"] + 0.1) & (leg.t < g["end"] - 0.1))
        assert np.any(np.diff(leg.index) > 1)
    assert holes >= 3
    assert any(truth["sensors"][s]["gaps"] for s in ("left", "right"))


def test_partner_vibration_is_small_and_only_during_partner_events():
    kw = {"duration_h": 0.5, "drops": False, "gap": False}
    with_p = simulate_night("healthy", seed=8, partner=True, **kw)
    without = simulate_night("healthy", seed=8, partner=False, **kw)
    leg_a, leg_b = with_p.legs["left"], without.legs["left"]
    diff = np.abs(leg_a.xyz - leg_b.xyz).max(axis=1)
    events = with_p.truth.plan.partner
    assert events
    inside = np.zeros(len(diff), bool)
    for ev in events:
        inside |= (leg_a.t >= ev["start"]) & (leg_a.t <= ev["end"])
    assert diff[~inside].max() <= 0.0011  # identical outside partner events (up to 1 mg rounding)
    assert 0.001 <= diff[inside].max() <= 0.06  # 1-5 mg RMS, a partner turning ~20 mg


def test_bad_options_are_named():
    with pytest.raises(TypeError, match="wobble"):
        simulate_night(duration_h=0.3, wobble=True)
    with pytest.raises(ValueError, match="profile"):
        simulate_night("insomnia", duration_h=0.3)
    with pytest.raises(ValueError, match="rate_hz"):
        simulate_night(rate_hz=5000, duration_h=0.3)
    with pytest.raises(ValueError, match="legs"):
        simulate_night(legs="middle", duration_h=0.3)


@pytest.mark.parametrize("rate", [25.0, 200.0])
def test_other_sample_rates(rate):
    night = simulate_night("mild", seed=1, rate_hz=rate, duration_h=0.25, drops=False, gap=False)
    leg = night.legs["left"]
    assert np.median(np.diff(leg.t)) == pytest.approx(1 / rate, rel=0.01)
    assert len(leg) == pytest.approx(0.25 * 3600 * rate, rel=0.001)


# ----------------------------------------------------------------------------- outputs


def test_cli_writes_csv_and_truth(tmp_path, capsys):
    args = ["simulate", "night", "--profile", "rls-severe", "--seed", "7", "--duration-h", "0.5", "--gzip", "--out"]
    rc = plm_main([*args, str(tmp_path)])
    assert rc == 0
    assert "does not diagnose" in capsys.readouterr().out
    t, xyz = read_leg_csv(tmp_path / "left.csv.gz")
    night = simulate_night("rls-severe", seed=7, duration_h=0.5)
    np.testing.assert_allclose(t, night.legs["left"].t, atol=0.0006)
    np.testing.assert_array_equal(xyz, night.legs["left"].xyz)
    header = (tmp_path / "truth.json").read_text()
    assert json.loads(header)["generator"]["seed"] == 7
    assert plm_main(["simulate", "night", "--duration-h", "0.1", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        plm_main(["simulate", "night", "--profile", "nope", "--out", str(tmp_path)])


def test_csv_format_is_plain(tmp_path):
    night = simulate_night("healthy", seed=0, duration_h=0.25, legs="right")
    paths = night.write(tmp_path)
    assert set(paths) == {"right", "truth"}
    lines = paths["right"].read_text().splitlines()
    assert lines[0] == "t,x,y,z"
    t, x, y, z = lines[1].split(",")
    assert len(t.split(".")[1]) == 3 and all(len(v.split(".")[1]) == 3 for v in (x, y, z))
    assert math.isclose(float(t), night.legs["right"].t[0], abs_tol=0.0006)


def test_full_night_smoke():
    """An 8-hour two-leg 52 Hz night (speed itself is measured by bench/simulate_speed.py)."""
    night = simulate_night("rls-severe", seed=7)
    for leg in night.legs.values():
        assert len(leg) == pytest.approx(8 * 3600 * 52, rel=0.01)
    assert 7.5 < night.truth.hours()["in_bed"] < 8
    assert night.truth.score().plm_count > 200


@pytest.fixture(scope="module")
def short_truth():
    return prepare_night("rls-moderate", seed=13, duration_h=0.25)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 40_000), st.integers(1, 5_000))
def test_any_window_renders_the_same_samples_as_the_whole_night(short_truth, i0, length):
    """The streamer renders block by block; it must produce exactly the night simulate_night writes."""
    sensor = short_truth.sensors["left"]
    i1 = min(sensor.n_total, i0 + length)
    i0 = min(i0, i1 - 1)
    full = _full_render(short_truth)
    t, xyz, dev, keep = sensor.render(short_truth.plan, i0, i1)
    np.testing.assert_array_equal(xyz, full[1][i0:i1])
    np.testing.assert_array_equal(t, full[0][i0:i1])
    np.testing.assert_array_equal(dev, full[2][i0:i1])
    np.testing.assert_array_equal(keep, full[3][i0:i1])


_FULL: dict[int, tuple] = {}


def _full_render(truth):
    key = id(truth)
    if key not in _FULL:
        sensor = truth.sensors["left"]
        _FULL[key] = sensor.render(truth.plan, 0, sensor.n_total)
    return _FULL[key]
