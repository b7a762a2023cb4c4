"""Readers of recording files (detector/recordings): files written by the simulator from the formats' public
descriptions are read back by the maintained readers (pygt3x, scikit-digital-health) and our PSL reader;
what cannot be read right is refused in one line with the fix; nights are found inside multi-day files."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.recordings import (
    MissingReader,
    RecordingError,
    local_to_unix,
    read_recording,
    sniff,
    zone_of,
)
from detector.recordings.nights import find_nights
from detector.recordings.psl import POLAR_EPOCH_UNIX_NS
from simulator import simulate_night
from simulator.formats import device_grid, simulate_days, write_cwa, write_gt3x, write_leg, write_psl

START = 1_709_332_200.0  # 2024-03-01 22:30 UTC


@pytest.fixture(scope="module")
def night():
    return simulate_night("rls-moderate", seed=4, rate_hz=50.0, start_unix_s=START, duration_h=0.5)


def test_psl_round_trip_keeps_sensor_times_and_milli_g(night, tmp_path):
    leg = night.legs["left"]
    written = write_psl(tmp_path, "left", leg.device_ns, leg.xyz)
    assert sniff(written.path) == "psl"
    rec = read_recording(written.path)
    assert rec.format == "psl" and rec.sensor_id == "polar-B5A7C10F"
    assert rec.rate_hz == 50.0
    np.testing.assert_array_equal(rec.t, written.t)
    np.testing.assert_array_equal(rec.xyz, written.xyz)
    # the simulator drops packets: the holes stay holes (nothing is filled in)
    assert np.diff(rec.t).max() > 0.1


def test_gt3x_read_by_pygt3x_is_the_device_grid_in_utc(night, tmp_path):
    pytest.importorskip("pygt3x")
    leg = night.legs["right"]
    t = device_grid(leg.device_ns, leg.index, 30.0)
    written = write_gt3x(tmp_path / "r.gt3x", t, leg.xyz, 30, side="Right", tz_offset_s=-4 * 3600)
    assert sniff(written.path) == "gt3x"
    rec = read_recording(written.path)
    assert (rec.format, rec.side, rec.rate_hz, rec.sensor_id) == ("gt3x", "right", 30.0, "MOS2E21234567")
    np.testing.assert_allclose(rec.t, written.t, atol=1e-6)  # the TimeZone line (-04:00) is undone
    np.testing.assert_allclose(rec.xyz, written.xyz, atol=1e-6)


def test_cwa_read_by_scikit_digital_health(night, tmp_path):
    pytest.importorskip("skdh")
    leg = night.legs["left"]
    t = device_grid(leg.device_ns, leg.index, 50.0)
    written = write_cwa(tmp_path / "l.cwa", t, leg.xyz, 50.0, device_id=4321)
    assert sniff(written.path) == "cwa"
    rec = read_recording(written.path)  # written in this machine's local time, read back in it
    assert (rec.format, rec.rate_hz, rec.sensor_id) == ("cwa", 50.0, "ax-4321")
    assert rec.t.shape == written.t.shape
    np.testing.assert_array_equal(rec.xyz, written.xyz)
    # the reader smooths block times over the file: within one sample of the written times
    assert np.abs(rec.t - written.t).max() <= 1 / 50.0 + 1e-6


def test_missing_reader_names_the_extra(tmp_path, monkeypatch, night):
    leg = night.legs["left"]
    t = device_grid(leg.device_ns, leg.index, 30.0)
    gt3x = write_gt3x(tmp_path / "x.gt3x", t[:3000], leg.xyz[:3000], 30).path
    cwa = write_cwa(tmp_path / "x.cwa", t[:3000], leg.xyz[:3000], 50.0).path
    monkeypatch.setitem(sys.modules, "pygt3x.reader", None)
    monkeypatch.setitem(sys.modules, "skdh.io", None)
    with pytest.raises(MissingReader, match=r"pip install 'plm-monitor\[gt3x\]'"):
        read_recording(gt3x)
    with pytest.raises(MissingReader, match=r"pip install 'plm-monitor\[cwa\]'"):
        read_recording(cwa)


def _psl(path: Path, sensor_ns: list[int], phone: str = "2024-03-01T22:30:00.000") -> Path:
    lines = ["Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]"]
    lines += [f"{phone};{ns};{i % 7};-3;1000" for i, ns in enumerate(sensor_ns)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _sensor_ns(unix_s: float, n: int, rate: float = 52.0) -> list[int]:
    base = round(unix_s * 1e9) - POLAR_EPOCH_UNIX_NS
    return [base + round(i * 1e9 / rate) for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(
    repeats=st.lists(st.tuples(st.integers(1, 200), st.integers(1, 5)), max_size=6),
    back_ms=st.integers(0, 400),
)
def test_psl_packet_edges_that_repeat_samples_are_dropped(tmp_path_factory, repeats, back_ms):
    """A packet edge may repeat samples, or step back a little: the reader keeps strictly increasing times,
    each one a time the file holds, and drops only what repeats."""
    original = _sensor_ns(START, 240)
    ns = list(original)
    for at, count in sorted(set(repeats), reverse=True):
        ns[at:at] = [original[at] - back_ms * 1_000_000 + k for k in range(count)]
    path = _psl(tmp_path_factory.mktemp("psl") / "Polar_VeritySense_B5A7C10F_20240301223000_ACC.txt", ns)
    rec = read_recording(path)
    assert np.all(np.diff(rec.t) > 0)
    assert set(rec.t.tolist()) <= {(n + POLAR_EPOCH_UNIX_NS) / 1e9 for n in ns}
    assert rec.t.shape[0] >= 240 - back_ms // 19 - 1 and rec.t.shape[0] <= len(ns)


def test_psl_refusals_say_why_and_the_fix(tmp_path):
    restarted = _sensor_ns(START, 100) + _sensor_ns(START - 60, 100)
    with pytest.raises(RecordingError, match=r"goes back by 61\.9 s .*split the file"):
        read_recording(_psl(tmp_path / "a_ACC.txt", restarted))
    never_set = _sensor_ns(dt.datetime(2017, 1, 1, tzinfo=dt.UTC).timestamp(), 100)
    with pytest.raises(RecordingError, match="was not set"):
        read_recording(_psl(tmp_path / "b_ACC.txt", never_set))
    gyro = tmp_path / "c_GYRO.txt"
    gyro.write_text("Phone timestamp;sensor timestamp [ns];X [dps];Y [dps];Z [dps]\nx;1;2;3;4\n")
    with pytest.raises(RecordingError, match=r"not an accelerometer one.*_ACC\.txt"):
        read_recording(gyro)
    text = tmp_path / "d_ACC.txt"
    text.write_text("Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]\nx;1;2;3;four\n")
    with pytest.raises(RecordingError, match="whole numbers"):
        read_recording(text)


def test_a_zip_that_is_not_a_gt3x_is_refused(tmp_path):
    path = tmp_path / "photos.gt3x"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.jpg", b"x")
    with pytest.raises(RecordingError, match=r"without the info\.txt and log\.bin"):
        read_recording(path)


def test_local_clock_to_unix_honours_daylight_saving():
    berlin = zone_of("Europe/Berlin")
    # 2024-03-31 01:30 local (UTC+1) and 03:30 local (UTC+2, after the change)
    local = np.array([dt.datetime(2024, 3, 31, h, 30).replace(tzinfo=dt.UTC).timestamp() for h in (1, 3)])
    expected = [dt.datetime(2024, 3, 31, h, 30, tzinfo=berlin).timestamp() for h in (1, 3)]
    np.testing.assert_array_equal(local_to_unix(local, berlin), expected)
    with pytest.raises(RecordingError, match="IANA name"):
        zone_of("Mars/Olympus")


@settings(max_examples=60, deadline=None)
@given(st.floats(946_684_800, 4_000_000_000), st.sampled_from(["UTC", "Asia/Kolkata", "America/St_Johns"]))
def test_local_clock_round_trip_in_zones_with_fixed_offsets_in_the_hour(unix_s, zone_name):
    zone = zone_of(zone_name)
    when = dt.datetime.fromtimestamp(unix_s, zone)
    if dt.datetime.fromtimestamp(unix_s - 3600, zone).utcoffset() != when.utcoffset():
        return  # within an hour after a change: the hour's offset is looked up at its start
    local = np.array([unix_s + when.utcoffset().total_seconds()])
    assert local_to_unix(local, zone)[0] == pytest.approx(unix_s, abs=1e-6)


# --------------------------------------------------------------------------------------------- nights
@pytest.fixture(scope="module")
def three_days():
    return simulate_days("rls-moderate", seed=1, days=3, rate_hz=30.0, legs="left")


def test_a_multi_day_recording_is_split_into_its_nights(three_days):
    nights, _ = find_nights(three_days.legs)
    truth = three_days.in_bed()
    assert len(nights) == len(truth) == 3
    for night, (lights_off, lights_on) in zip(nights, truth, strict=True):
        assert night.split
        assert night.start <= lights_off and lights_on <= night.end  # the whole time in bed ...
        assert night.end - night.start <= (lights_on - lights_off) + 2 * 3600  # ... and not the day around it
        assert night.in_bed_s == pytest.approx(lights_on - lights_off, abs=1800)
    for a, b in itertools.pairwise(nights):
        assert a.end <= b.start
        noon = a.end + (b.start - a.end) / 2
        assert not any(n.start <= noon <= n.end for n in nights)  # daytime is no night


def test_one_nights_recording_is_scored_whole(night):
    legs = {side: (leg.t, leg.xyz) for side, leg in night.legs.items()}
    nights, skipped = find_nights(legs)
    assert [(n.start, n.split) for n in nights] == [(min(leg.t[0] for leg in night.legs.values()), False)]
    assert skipped == []


def test_plm_score_refuses_a_file_of_several_nights(tmp_path, capsys):
    """Two nights and a day (32 h, within the 36 h of one recording): scored as one, the day was time in bed."""
    from plm.cli import main

    days = simulate_days("mild", seed=2, days=2, rate_hz=30.0, legs="left", night_h=7.0)
    path = write_leg("csv", tmp_path, "left", *days.legs["left"], 30.0).path
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert "holds 2 nights" in err and "plm import" in err and "Traceback" not in err


def test_simulate_night_cli_writes_each_format(tmp_path, capsys):
    from plm.cli import main

    for fmt in ("psl", "gt3x", "cwa"):
        out = tmp_path / fmt
        assert (
            main(["simulate", "night", "--format", fmt, "--duration-h", "0.5", "--legs", "left", "--out", str(out)])
            == 0
        )
        files = [p for p in out.iterdir() if p.name != "truth.json"]
        assert len(files) == 1 and sniff(files[0]) == fmt
        assert json.loads((out / "truth.json").read_text())["in_bed"]
    assert main(["simulate", "night", "--format", "gt3x", "--rate", "25", "--out", str(tmp_path / "bad")]) == 2
    assert "even number of Hz" in capsys.readouterr().err


def _noon_anchor(t: float) -> float:
    """The UTC noon at or before ``t`` (what detector.storage.diary.night_start_for is in UTC)."""
    return (t - 43200) // 86400 * 86400 + 43200


def _at(day: int, hour: float) -> float:
    return START - 22.5 * 3600 + day * 86400 + hour * 3600  # START is 22:30 UTC


def test_times_in_bed_of_one_night_are_joined_and_a_nap_is_not():
    from detector.recordings.nights import join_spells

    h = 3600.0
    nap, night = (_at(0, 14), _at(0, 15), 1 * h), (_at(0, 22), _at(1, 7), 9 * h)
    assert join_spells([nap, night], _noon_anchor) == [nap, night]
    up_two_hours = [(_at(0, 21), _at(0, 23.5), 2.5 * h), (_at(1, 1.5), _at(1, 7), 5.5 * h)]
    assert join_spells(up_two_hours, _noon_anchor) == [(_at(0, 21), _at(1, 7), 8 * h)]
    two_halves = [(_at(0, 20), _at(0, 22.5), 2.5 * h), (_at(1, 3), _at(1, 8), 5 * h)]
    assert join_spells(two_halves, _noon_anchor) == [(_at(0, 20), _at(1, 8), 7.5 * h)]
    next_night = (_at(1, 22), _at(2, 6), 8 * h)
    assert join_spells([night, next_night], _noon_anchor) == [night, next_night]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 6 * 3600), st.floats(600, 10 * 3600)), min_size=1, max_size=8))
def test_joined_nights_never_share_an_anchor(raw):
    """Two nights at one anchor would overwrite each other's summary point."""
    from detector.recordings.nights import MIN_NIGHT_IN_BED_S, join_spells

    spells, t = [], START
    for gap, length in raw:
        t += gap
        spells.append((t, t + length, length))
        t += length
    joined = join_spells(spells, _noon_anchor)
    nights = [a for a, _, s in joined if s >= MIN_NIGHT_IN_BED_S]
    assert len({_noon_anchor(a) for a in nights}) == len(nights)
    assert sum(s for _, _, s in joined) == pytest.approx(sum(s for _, _, s in spells))


def test_two_cwa_files_read_at_once_do_not_end_the_process(night, tmp_path):
    """plm import reads two legs' files in two threads; scikit-digital-health's Fortran reader cannot read two at
    once (the process ended with exit code 2), so .cwa files are read one at a time."""
    pytest.importorskip("skdh")
    from concurrent.futures import ThreadPoolExecutor

    paths = []
    for side, leg in night.legs.items():
        t = device_grid(leg.device_ns, leg.index, 50.0)
        paths.append(write_cwa(tmp_path / f"{side}.cwa", t, leg.xyz, 50.0).path)
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            assert all(r.t.shape[0] > 1000 for r in pool.map(read_recording, paths))
