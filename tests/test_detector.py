"""Detector tests: chunking equivalence (property), physics-based detection, gaps, CSV errors, CLI."""

from __future__ import annotations

import gzip
import itertools
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.recordings.csvio import CsvError, read_leg_csv
from detector.scoring.lm import LegDetector
from detector.scoring.params import DetectorParams
from detector.scoring.scorer import NightScorer, score_arrays
from detector.scoring.synthetic import SyntheticMovement, leg_recording
from plm.cli import main
from plm.rules import AASM

T0 = 1_700_000_000.0


def periodic_night(n: int = 8, imi: float = 20.0, start: float = 20.0, angle: float = 8.0) -> list[SyntheticMovement]:
    return [SyntheticMovement(start + k * imi, 2.0, angle) for k in range(n)]


@pytest.fixture(scope="module")
def two_legs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    left = leg_recording(periodic_night(), 220.0, rate_hz=52.0, seed=1, t0=T0, jitter=0.2)
    right_moves = [SyntheticMovement(m.onset + 0.3, 1.5, 6.0) for m in periodic_night()[::2]]
    right_moves.append(SyntheticMovement(185.0, 0.2, 3.0))  # a short jerk: a twitch
    right = leg_recording(right_moves, 220.0, rate_hz=52.0, seed=2, t0=T0)
    return {"left": left, "right": right}


def test_periodic_movements_are_found_and_scored(two_legs) -> None:
    summary = score_arrays(two_legs["left"], two_legs["right"])
    lms = [e for e in summary.events if e.kind == "lm"]
    assert len(lms) == 8
    true = T0 + np.array([m.onset for m in periodic_night()])
    assert np.abs(np.array([e.onset for e in lms]) - true).max() < 0.5
    assert all(abs(e.duration - 2.0) < 0.8 for e in lms if e.side == "left")
    assert summary.plm_count == 8 and summary.series_count == 1
    assert summary.bilateral_count == 4
    assert summary.twitch_count >= 1


def test_mounting_orientation_does_not_matter() -> None:
    counts = []
    for seed in range(4):  # each seed mounts the sensor differently
        t, xyz = leg_recording(periodic_night(), 220.0, seed=seed)
        counts.append(score_arrays((t, xyz)).lm_count)
    assert counts == [8, 8, 8, 8]


@pytest.mark.parametrize("rate", [25.0, 100.0, 200.0])
def test_sample_rates(rate: float) -> None:
    t, xyz = leg_recording(periodic_night(), 220.0, rate_hz=rate, seed=3)
    summary = score_arrays((t, xyz))
    assert summary.lm_count == 8
    assert summary.rate_hz["left"] == pytest.approx(rate, rel=1e-3)


@pytest.mark.parametrize("rate", [25.0, 52.0, 100.0, 104.0])
def test_rate_estimate_survives_millisecond_timestamps_and_drops(rate: float) -> None:
    """Most exports round time to 1 ms: at 52 Hz the steps alternate 19/20 ms, whose median says 52.63
    (or 50) Hz. Dropped packets (holes) must not bias the estimate either."""
    from detector.scoring.lm import LegDetector
    from detector.scoring.signal import estimate_rate_hz

    rng = np.random.default_rng(int(rate))
    t = T0 + np.arange(600) / rate
    keep = np.ones(t.shape[0], bool)
    for start in rng.integers(10, 550, 6):  # six drops of 2-8 samples
        keep[start : start + rng.integers(2, 9)] = False
    t = np.round(t[keep], 3)
    assert estimate_rate_hz(t) == pytest.approx(rate, rel=2e-3)
    leg = LegDetector("left")
    for a in range(0, t.shape[0], 37):  # chunking does not matter: the first 256 samples decide
        chunk = t[a : a + 37]
        leg.feed(chunk, np.tile([0.0, 0.0, 1.0], (chunk.shape[0], 1)))
    assert leg.rate_hz == estimate_rate_hz(t[:256]) == pytest.approx(rate, rel=2e-3)
    with pytest.raises(ValueError, match="two samples"):
        estimate_rate_hz(t[:1])


def test_quiet_leg_gives_nothing() -> None:
    t, xyz = leg_recording([], 300.0, noise_g=0.004, seed=4)
    summary = score_arrays((t, xyz))
    assert summary.lm_count == 0 and summary.plm_count == 0


def test_a_long_gap_is_reported_and_breaks_a_series_only_where_it_cuts_a_movement() -> None:
    t, xyz = leg_recording(periodic_night(n=8), 220.0, seed=5)
    keep = (t < 75.0) | (t > 95.0)  # 20 s hole that swallows the 4th movement (80-82 s) whole
    summary = score_arrays((t[keep], xyz[keep]))
    assert summary.gaps and summary.gaps[0]["end"] - summary.gaps[0]["start"] > 19
    assert summary.missing_fraction > 0.05
    # the hole is missing evidence, not a break: the 7 movements seen are one series (40 s across it)
    assert summary.plm_count == 7 and summary.series_count == 1
    keep = (t < 81.0) | (t > 95.0)  # the same hole cutting into that movement: its extent is unknown
    summary = score_arrays((t[keep], xyz[keep]))
    cut = [e for e in summary.events if 79.0 < e.onset < 82.0]
    assert cut and not cut[0].plm
    assert summary.plm_count == 4  # the 3 before it cannot form a series; the 4 after do


def _feed_in_chunks(data, cuts_left, cuts_right, rules=None):
    scorer = NightScorer(rules or NightScorer().rules, sides=("left", "right"))
    updates = []
    pieces = {}
    for side, cuts in (("left", cuts_left), ("right", cuts_right)):
        t, xyz = data[side]
        bounds = [0, *sorted(set(int(c * len(t)) for c in cuts)), len(t)]
        pieces[side] = [(t[a:b], xyz[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    # interleave the legs' chunks
    while pieces["left"] or pieces["right"]:
        for side in ("left", "right"):
            if pieces[side]:
                updates += scorer.feed(side, *pieces[side].pop(0))
    scorer = pickle.loads(pickle.dumps(scorer))  # state is picklable mid-night
    return scorer.finish(), updates


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), max_size=12),
    st.lists(st.floats(0.0, 1.0), max_size=12),
)
def test_any_chunking_gives_exactly_the_whole_array_events(two_legs, cuts_left, cuts_right) -> None:
    whole = score_arrays(two_legs["left"], two_legs["right"])
    chunked, updates = _feed_in_chunks(two_legs, cuts_left, cuts_right)
    assert chunked.to_dict() == whole.to_dict()
    # the streamed updates, last version per identity, are the final events
    latest = {e.key: e for e in updates}
    assert sorted(latest.values(), key=lambda e: (e.onset, e.side)) == list(whole.events)


def test_movements_are_final_within_two_seconds_of_data(two_legs) -> None:
    scorer = NightScorer(sides=("left",))
    t, xyz = two_legs["left"]
    seen: dict[float, float] = {}
    step = 13  # a quarter of a second at 52 Hz
    for a in range(0, len(t), step):
        for e in scorer.feed("left", t[a : a + step], xyz[a : a + step]):
            seen.setdefault(e.onset, float(t[min(a + step, len(t)) - 1]))
    final = scorer.finish()
    for e in final.events:
        if e.kind == "lm":
            assert seen[e.onset] - (e.onset + e.duration) <= 2.0


def test_aasm_option_runs(two_legs) -> None:
    summary = score_arrays(two_legs["left"], two_legs["right"], rules=AASM)
    assert summary.rules == "aasm" and summary.lm_count >= 8


# ------------------------------------------------------------------ CSV and CLI
def write_csv(path, t, xyz, gz=False) -> str:
    text = "t,x,y,z\n" + "".join(f"{a:.3f},{b:.4f},{c:.4f},{d:.4f}\n" for a, (b, c, d) in zip(t, xyz, strict=True))
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("t,x,y\n1,0,0,1\n", "lacks column(s) z"),
        ("t,x,y,z\n1,0,0,1\n2,0,abc,1\n", "line 3: column y is not a number: 'abc'"),
        ("t,x,y,z\n1,0,0,1\n1,0,0,1\n", "line 3: duplicate timestamp"),
        ("t,x,y,z\n2,0,0,1\n1,0,0,1\n", "line 3: unsorted"),
        ("t,x,y,z\n1,0,0,9.81\n2,0,0,9.8\n", "m/s^2"),
        ("t,x,y,z\n1,0,0,1\n2,0,1\n", "line 3: expected 4"),
    ],
)
def test_bad_csv_names_file_line_and_problem(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "leg.csv"
    path.write_text(content)
    with pytest.raises(CsvError) as err:
        read_leg_csv(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_cli_json_and_text(tmp_path, capsys) -> None:
    # the two_legs night, recorded for 11 minutes: `plm score` refuses less than 10 minutes of samples
    left_leg = leg_recording(periodic_night(), 660.0, rate_hz=52.0, seed=1, t0=T0, jitter=0.2)
    right_moves = [SyntheticMovement(m.onset + 0.3, 1.5, 6.0) for m in periodic_night()[::2]]
    right_moves.append(SyntheticMovement(185.0, 0.2, 3.0))
    left = write_csv(tmp_path / "l.csv", *left_leg)
    right = write_csv(tmp_path / "r.csv.gz", *leg_recording(right_moves, 660.0, rate_hz=52.0, seed=2, t0=T0), gz=True)
    assert main(["score", left, "--right", right, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in (
        "time_in_bed_h",
        "sleep_h",
        "lm_count",
        "plm_count",
        "plm_index",
        "plms_index",
        "plmw_index",
        "periodicity_index",
        "series_count",
        "twitch_count",
        "long_movement_count",
        "missing_fraction",
    ):
        assert key in doc
    assert doc["plm_count"] == 8
    assert {e["kind"] for e in doc["events"]} >= {"lm", "twitch"}
    assert all(set(e) >= {"onset", "duration", "side", "kind", "plm"} for e in doc["events"])
    assert main(["score", left]) == 0
    assert "does not diagnose" in capsys.readouterr().out


def test_cli_bad_file_is_a_clear_error(tmp_path, capsys) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("t,x,y,z\n1,0,0,1\n2,0,x,1\n")
    assert main(["score", str(path)]) == 2
    assert "bad.csv: line 3" in capsys.readouterr().err


@pytest.mark.parametrize("rate", [25.0, 52.0, 100.0])
def test_held_movement_is_one_lm_with_its_duration(rate: float) -> None:
    """A 3 s dorsiflexion held still for 2 s: the accelerometer sees only rise and release, the leg's
    orientation says it stayed displaced, so it is one LM of ~3 s (not two twitches)."""
    moves = [SyntheticMovement(20.0 + 25 * k, 3.0, 6.0, hold_s=2.0) for k in range(4)]
    t, xyz = leg_recording(moves, 130.0, rate_hz=rate, seed=7)
    lms = [e for e in score_arrays((t, xyz)).events if e.kind == "lm"]
    assert len(lms) == 4
    assert all(abs(e.onset - m.onset) < 0.3 for e, m in zip(lms, moves, strict=True))
    errors = np.array([e.duration - 3.0 for e in lms])
    assert abs(np.median(errors)) < 0.2 and np.abs(errors).max() < 1.0  # a noise excursion can stretch one


def _leg_movements(side: str, t: np.ndarray, xyz: np.ndarray, bounds: list[int]) -> list[tuple[float, float, str]]:
    from detector.scoring.lm import LegDetector

    leg = LegDetector(side)
    found = []
    for a, b in itertools.pairwise(bounds):
        if b > a:
            found += leg.feed(t[a:b], xyz[a:b])[0]
    found += leg.flush()[0]
    return [(m.onset, m.offset, m.kind) for m in found]


def test_one_second_pieces_of_a_simulated_night_give_the_whole_night_movements():
    """Regression: a still run that outlasted a piece, or one that began before the open movement's
    search, made 1-s feeding (the live service's) differ from one whole-night call (right leg of seed 5
    differed until the scan carried whether the last sample was still)."""
    from simulator import simulate_night

    night = simulate_night("rls-severe", seed=5, duration_h=0.5, jitter_ms=0, gap=False, drops=False)
    for side in ("left", "right"):
        t, xyz = night.legs[side].t, night.legs[side].xyz
        whole = _leg_movements(side, t, xyz, [0, len(t)])
        assert whole and _leg_movements(side, t, xyz, [*range(0, len(t), 52), len(t)]) == whole


# simulated nights for the chunking property: profiles, rates, data drops (default) and a sensor-off gap
CHUNK_NIGHTS = [
    ("rls-severe", 1, 52.0, False),
    ("rls-moderate", 2, 25.0, True),
    ("mild", 3, 100.0, False),
    ("rls-severe", 7, 25.0, True),
]


@pytest.fixture(scope="module")
def chunk_nights() -> list[dict]:
    """Each night's legs, whole-array movements per leg, whole-night summary and the sample indices where
    a chunk edge is most likely to matter (holes, around each onset and offset and where the offset is
    confirmed, the end of the rate-estimate buffer)."""
    from simulator import simulate_night

    nights = []
    for profile, seed, rate, gap in CHUNK_NIGHTS:
        night = simulate_night(profile, seed=seed, duration_h=0.25, rate_hz=rate, gap=gap)
        legs = {side: (rec.t, rec.xyz) for side, rec in night.legs.items()}
        whole_moves = {side: _leg_movements(side, t, xyz, [0, len(t)]) for side, (t, xyz) in legs.items()}
        specials = {}
        for side, (t, _) in legs.items():
            times = [m[0] for m in whole_moves[side]] + [m[1] + dt for m in whole_moves[side] for dt in (0, 0.3, 0.6)]
            idx = np.searchsorted(t, times)
            holes = np.flatnonzero(np.diff(t) > 1.5 / rate) + 1
            near = np.concatenate((idx, holes, [256]))[:, None] + np.arange(-1, 2)[None, :]
            specials[side] = sorted({int(i) for i in near.ravel() if 0 < i < len(t)})
        whole = score_arrays(legs["left"], legs["right"]).to_dict()
        assert whole["lm_count"] > 5
        nights.append({"legs": legs, "moves": whole_moves, "specials": specials, "summary": whole})
    return nights


@st.composite
def chunk_bounds(draw, n: int, specials: list[int]) -> list[int]:
    """Chunk edges: random ones, ones exactly at the special indices, and a stretch of 1-sample chunks."""
    cuts = set(draw(st.lists(st.integers(1, n - 1), max_size=60)))
    cuts |= set(draw(st.lists(st.sampled_from(specials), max_size=60)))
    start = draw(st.sampled_from(specials) | st.integers(0, n - 1))
    cuts |= set(range(start, min(n, start + draw(st.integers(0, 80)))))  # single samples from there
    return [0, *sorted(cuts - {0, n}), n]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_chunking_of_simulated_nights_gives_exactly_the_whole_night(chunk_nights, data) -> None:
    """The product's core claim: the live service (1-s batches, any sizes after a reconnect) and `plm
    score` (whole files) cannot disagree. Movements of each leg (onset, offset, kind) and the whole night
    summary must be identical to the bit, whatever the chunk edges."""
    night = data.draw(st.sampled_from(chunk_nights))
    bounds = {
        side: data.draw(chunk_bounds(len(t), night["specials"][side]), label=side)
        for side, (t, _) in night["legs"].items()
    }
    side = data.draw(st.sampled_from(sorted(bounds)))
    t, xyz = night["legs"][side]
    assert _leg_movements(side, t, xyz, bounds[side]) == night["moves"][side]

    scorer = NightScorer(sides=("left", "right"))
    queues = {s: [(a, b) for a, b in itertools.pairwise(bounds[s]) if b > a] for s in bounds}
    order = data.draw(st.randoms(use_true_random=False))
    while queues["left"] or queues["right"]:
        s = order.choice([s for s in queues if queues[s]])
        a, b = queues[s].pop(0)
        scorer.feed(s, night["legs"][s][0][a:b], night["legs"][s][1][a:b])
    assert scorer.finish().to_dict() == night["summary"]


def test_upright_direction_follows_the_walk_not_the_most_frequent_restless_position() -> None:
    """A restless night can hold more active epochs in one lying position than the walk to and from bed
    has; the upright reference must still be the walking direction (the most vigorous activity), or the
    bed posture reads as upright and hours in bed are lost."""
    from detector.scoring.inbed import upright_direction
    from detector.scoring.params import DetectorParams

    rate, n = 50.0, 1500  # one full 30-s epoch at 50 Hz

    def epoch(direction: tuple[float, float, float], active: float, envelope_g: float) -> np.ndarray:
        g = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
        return np.array(
            [n, *np.rint(g * n * 10_000), round(active * n), round(envelope_g * n * 10_000)], dtype=np.int64
        )

    walking = (0.05, -0.3, 0.95)
    lying = (0.0, 1.0, 0.05)
    table = {0: epoch(walking, 0.9, 0.35), 1: epoch((0.02, -0.28, 0.96), 0.7, 0.25), 480: epoch(walking, 0.8, 0.3)}
    table.update({k: epoch(lying, 0.6, 0.08) for k in (100, 130, 200, 210, 300)})
    up = upright_direction(table, {}, rate, DetectorParams())
    assert up is not None
    assert float(up @ (np.asarray(walking) / np.linalg.norm(walking))) > np.cos(np.radians(10))


def test_legs_scored_in_parallel_threads_equal_legs_fed_one_after_the_other(two_legs, monkeypatch) -> None:
    import detector.scoring.scorer as scorer_module

    monkeypatch.setattr(scorer_module, "PARALLEL_MIN_SAMPLES", 1)  # force the threaded path on a short night
    parallel = score_arrays(two_legs["left"], two_legs["right"])
    serial = NightScorer()
    serial.feed("left", *two_legs["left"])
    serial.feed("right", *two_legs["right"])
    expected = serial.finish()
    assert parallel.plm_count > 0
    assert parallel.to_dict() == expected.to_dict()


@pytest.mark.parametrize("seed", [0, 1])
def test_filters_settling_after_a_hole_do_not_start_a_movement(seed: int) -> None:
    """A 1.3 s hole restarts the filters, which settle on the next sample; when that sample is a little
    noisy (6 mg, a few sigma of a quiet sensor) the lagged difference rises for diff_lag_s while the leg is
    still. That must not start a movement: one started inside a still run had no rest to end it, and ran
    on as a 90-s long movement until the next real one ended."""
    t, xyz = leg_recording([SyntheticMovement(150.0, 2.0, 8.0)], 200.0, rate_hz=52.0, seed=seed, noise_g=0.0015)
    keep = (t < 60.0) | (t >= 61.3)
    t, xyz = t[keep], xyz[keep].copy()
    xyz[int(np.searchsorted(t, 61.3))] += 0.006
    events = score_arrays((t, xyz)).events
    assert [(e.kind, round(e.onset)) for e in events] == [("lm", 150)]
    assert abs(events[0].duration - 2.0) < 0.2


def test_a_movement_ending_inside_a_hole_ends_where_it_was_last_seen_moving() -> None:
    """A 0.3-s jerk whose end falls in 1.85 s of dropped packets: when the leg came back to rest is
    unknown, so the movement ends at the last sample that saw it moving (as at a data gap), not at the
    first sample after the hole, which made it a 2-s movement (an LM when its activity was sustained)."""
    t, xyz = leg_recording([SyntheticMovement(100.0, 0.3, 3.0), SyntheticMovement(150.0, 2.0, 8.0)], 200.0, seed=1)
    keep = (t < 100.15) | (t >= 102.0)
    events = score_arrays((t[keep], xyz[keep])).events
    assert [(e.kind, round(e.onset)) for e in events] == [("twitch", 100), ("lm", 150)]
    assert events[0].onset + events[0].duration < 100.25


def test_sensor_noise_does_not_delay_the_offset_confirmation() -> None:
    """A movement is returned once the leg has rested offset_quiet_s after its offset (+ the boundary
    filter's delay): ~0.55 s at 52 Hz. The stillness signal of a resting leg crosses its offset level in
    a few % of samples (sensor noise, one to three samples at a time), about one 0.4-s window in three;
    when every such blip restarted the rest, a third of clean LMs came 0.25-1.5 s later than the rule
    allows, which pushed the live latency (offset -> InfluxDB) over 2 s. Counted in 2-sample pieces, as
    a live detector sees the data."""
    late, total = 0, 0
    for seed in range(3):
        moves = [SyntheticMovement(40.0 + 10.0 * i, 1.5 + 0.5 * (i % 4), 4.0 + 2 * (i % 3)) for i in range(20)]
        t, xyz = leg_recording(moves, 250.0, rate_hz=52.0, seed=seed, noise_g=0.003)
        leg = LegDetector("left")
        delays = []
        for i in range(0, t.shape[0], 2):
            found, _ = leg.feed(t[i : i + 2], xyz[i : i + 2])
            delays += [t[min(i + 2, t.shape[0]) - 1] - m.offset for m in found if m.kind == "lm"]
        assert len(delays) == len(moves)
        late += sum(d > leg.params.offset_quiet_s + 0.25 for d in delays)
        total += len(delays)
    assert late <= 0.15 * total, f"{late} of {total} LMs confirmed > 0.25 s later than the rule allows"


def test_bad_samples_are_refused_with_the_reason_and_nothing_is_consumed() -> None:
    leg = LegDetector("left", DetectorParams(rate_hz=52.0))
    t = 100.0 + np.arange(104) / 52
    xyz = np.tile([0.0, 0.0, 1.0], (104, 1))
    leg.feed(t[:52], xyz[:52])
    cases = [
        (t[52:].copy(), np.where(np.arange(52)[:, None] == 7, np.nan, xyz[52:]), "NaN or infinity"),
        (t[:52].copy(), xyz[52:], "is not after the previous sample"),
        (np.concatenate((t[52:60], t[59:103])), xyz[52:], "sample 8 time"),
    ]
    for bad_t, bad_xyz, message in cases:
        with pytest.raises(ValueError, match=message):
            leg.feed(bad_t, bad_xyz)
        assert leg.samples == 52 and leg.last_t == t[51]
    leg.feed(t[52:], xyz[52:])  # the good chunk after the refused ones goes on as if they never came
    assert leg.samples == 104


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_the_kept_history_is_the_last_samples_whatever_the_chunking(chunk_nights, data) -> None:
    """The look-back history a leg keeps between pieces (idle pieces store it without building the
    extended arrays) holds exactly the last ``_hist_n`` samples' time, vectors and level: as after one
    call with everything fed so far."""
    night = data.draw(st.sampled_from(chunk_nights))
    side = data.draw(st.sampled_from(sorted(night["legs"])))
    t, xyz = night["legs"][side]
    stop = data.draw(st.integers(60, len(t)))
    tail = max(0, stop - 52 * 12)  # the last 12 s in pieces shorter than the history: what they keep counts
    bounds = [b for b in data.draw(chunk_bounds(len(t), night["specials"][side])) if b < tail]
    bounds += [*range(tail, stop, data.draw(st.sampled_from([1, 13, 52]))), stop]
    chunked, whole = LegDetector(side), LegDetector(side)
    for a, b in itertools.pairwise(bounds):
        if b > a:
            chunked.feed(t[a:b], xyz[a:b])
    whole.feed(t[:stop], xyz[:stop])
    for name in ("_hist_t", "_hist_low", "_hist_fast", "_hist_level"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
