"""``plm import`` against a real influxd: an imported night has the live path's points, in every format.

The live path here is the real one: the samples published to a real mosquitto in 1-s batches with the sensor
status a collector sends, scored by the live detector (detector.live.service.LiveDetector) into the same
influxd. The import reads the file and feeds the same core in its own way (10-s batches, one group per 30 min
of data, no broker): every point of every measurement must be the same, except the subject."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.live.service import LiveDetector
from detector.recordings import read_recording
from detector.recordings.replay import batches
from detector.storage import schema
from plm import wire
from plm.cli import main
from plm.config import SensorSettings, SubjectSettings
from plm.mqtt import connect, make_client
from simulator import simulate_night
from simulator.formats import device_grid, simulate_days, write_leg
from tests.live_helpers import batches_as_arrays, interleave, night_batches, settings_for, wait_for

pytestmark = pytest.mark.services

START = 1_709_332_200.0  # 2024-03-01 22:30 UTC: in the past, as every recording is
RATES = {"csv": 52.0, "psl": 52.0, "gt3x": 30.0, "cwa": 50.0}
MEASUREMENTS = tuple(
    getattr(schema, name)
    for name in ("MOVEMENT", "LEG_STATE", "ACTIVITY", "NIGHT", "HOURLY", "SERIES", "SENSOR_STATUS", "NONWEAR")
    if hasattr(schema, name)  # every measurement the core writes for a subject (not detector_health, not diary)
)


@pytest.fixture
def influx_env(influxd, monkeypatch):
    monkeypatch.setenv("PLM_INFLUX__URL", influxd.url)
    monkeypatch.setenv("PLM_INFLUX__API", "1")
    monkeypatch.setenv("PLM_INFLUX__BUCKET", influxd.database)
    monkeypatch.delenv("PLM_CONFIG", raising=False)
    return influxd


def _night(seed: int, rate: float, duration_h: float = 1.0):
    return simulate_night(
        "rls-moderate",
        seed=seed,
        rate_hz=rate,
        start_unix_s=START,
        duration_h=duration_h,
        jitter_ms=0,
        drift=False,
        gap=False,
    )


def _write_csv(path, t: np.ndarray, xyz: np.ndarray) -> None:
    np.savetxt(
        path,
        np.column_stack((t, xyz)),
        fmt=("%.17g", "%.3f", "%.3f", "%.3f"),
        delimiter=",",
        header="t,x,y,z",
        comments="",
    )


def _files(fmt: str, tmp_path, seed: int) -> tuple[dict, dict]:
    """The night's files in ``fmt`` (side -> path), and what a collector would publish (side -> batches)."""
    rate = RATES[fmt]
    night = _night(seed, rate)
    if fmt == "csv":
        per_side = night_batches(night)
        paths = {}
        for side, bs in per_side.items():
            paths[side] = tmp_path / f"{side}.csv"
            _write_csv(paths[side], *batches_as_arrays(bs))
        return paths, per_side
    paths = {}
    for side, leg in night.legs.items():
        t = leg.t if fmt == "psl" else device_grid(leg.device_ns, leg.index, rate)
        paths[side] = write_leg(fmt, tmp_path, side, t, leg.xyz, rate, leg.device_ns).path
    per_side = {}
    for side, path in paths.items():
        rec = read_recording(path)
        per_side[side] = list(batches(rec.t, rec.xyz, rec.rate_hz, batch_s=1.0))
    return paths, per_side


def _stream_live(
    mosquitto, influxd, state_dir, subject: str, sensors: dict[str, str], per_side: dict, rate: float, ends: dict
):
    settings = settings_for(mosquitto, influxd, state_dir, instance=f"live-{subject}")
    config = SubjectSettings(id=subject, sensors=[SensorSettings(id=sensors[s], side=s) for s in per_side])
    settings = settings.model_copy(update={"subjects": [config]})
    detector = LiveDetector(settings)
    detector.start()
    publisher = make_client(settings.mqtt, f"pub-{subject}")
    connect(publisher, settings.mqtt)
    try:
        infos = []
        for side, bs in per_side.items():
            hello = wire.SensorStatus(
                state="online", side=side, rate_hz=float(np.float32(rate)), time_ns=round(bs[0].start_ns / 1e9 * 1e9)
            )
            infos.append(publisher.publish(wire.status_topic(subject, sensors[side]), wire.encode_status(hello), qos=1))
        for info in infos:
            info.wait_for_publish(30)
        infos = [
            publisher.publish(wire.acc_topic(subject, sensors[side]), wire.encode_binary(b), qos=1)
            for side, b in interleave(per_side)
        ]
        for info in infos:
            info.wait_for_publish(60)
        for side in per_side:
            bye = wire.SensorStatus(state="offline", side=side, time_ns=round(ends[side] * 1e9))
            publisher.publish(
                wire.status_topic(subject, sensors[side]), wire.encode_status(bye), qos=1
            ).wait_for_publish(10)
        assert wait_for(lambda: detector.stats.nights_finished == 1, 120)
        assert detector.sink.flush(60)
    finally:
        detector.stop()
        publisher.disconnect()


def _points(influxd, subject: str) -> dict[str, list[tuple]]:
    """Every point of ``subject`` per measurement, without the subject, sorted."""
    out = {}
    for m in MEASUREMENTS:
        doc = influxd.query(f'SELECT * FROM "{m}" WHERE "subject" = \'{subject}\'', database=influxd.database)
        series = doc["results"][0].get("series", [])
        rows = []
        for s in series:
            columns = s["columns"]
            for values in s["values"]:
                rows.append(tuple((c, v) for c, v in zip(columns, values, strict=True) if c != "subject"))
        out[m] = sorted(rows, key=repr)
    return out


def _same(key: str, a, b) -> bool:
    """Equal; times (``*_ms``) and seconds to the millisecond: a movement's edges are interpolated between
    samples, and filters run over other chunk boundaries round differently in the last bits."""
    if key.endswith("_ms") and isinstance(a, int) and isinstance(b, int):
        return abs(a - b) <= 1
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-3)
    return a == b


def _assert_same_points(imported: dict, live: dict) -> None:
    for m in MEASUREMENTS:
        assert len(imported[m]) == len(live[m]), f"{m}: {len(imported[m])} imported, {len(live[m])} live"
        for ours, theirs in zip(imported[m], live[m], strict=True):
            ours_d, theirs_d = dict(ours), dict(theirs)
            assert ours_d.keys() == theirs_d.keys(), m
            assert abs(ours_d["time"] - theirs_d["time"]) <= 1, (m, ours_d, theirs_d)
            differing = {k for k in ours_d if k != "time" and not _same(k, ours_d[k], theirs_d[k])}
            assert not differing, (m, {k: (ours_d[k], theirs_d[k]) for k in differing})


@pytest.mark.parametrize("fmt", ["csv", "psl", "gt3x", "cwa"])
def test_an_imported_night_has_the_live_paths_points(fmt, influx_env, mosquitto, tmp_path, capsys):
    if fmt == "gt3x":
        pytest.importorskip("pygt3x")
    if fmt == "cwa":
        pytest.importorskip("skdh")
    paths, per_side = _files(fmt, tmp_path, seed=20 + len(fmt))
    sensors, ends = {}, {}
    for side, path in paths.items():
        rec = read_recording(path)
        sensors[side] = rec.sensor_id or f"{side}-ankle"
        ends[side] = float(rec.t[-1])  # the collector's goodbye: its last sample's time
    subject = f"imp-{fmt}"
    args = ["import", "--subject", subject, "--left", str(paths["left"]), "--right", str(paths["right"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 night of" in out and "PLM index" in out
    imported = _points(influx_env, subject)
    assert imported[schema.MOVEMENT] and imported[schema.ACTIVITY] and imported[schema.SERIES]
    assert len(imported[schema.NIGHT]) == 1 and imported[schema.HOURLY] and imported[schema.SENSOR_STATUS]

    _stream_live(mosquitto, influx_env, tmp_path / "state", f"live-{fmt}", sensors, per_side, RATES[fmt], ends)
    live = _points(influx_env, f"live-{fmt}")
    _assert_same_points(imported, live)

    # the same files again: the same points, none doubled
    assert main(args) == 0
    assert _points(influx_env, subject) == imported


@pytest.mark.parametrize("fmt", ["psl", "gt3x", "cwa"])
def test_a_format_gives_the_night_summary_of_the_projects_csv(fmt, influx_env, tmp_path, capsys):
    """The same night imported from a format and from the project's CSV of the simulator's samples: the same
    counts within the format's quantisation (1/256 g for .gt3x and .cwa, the device's grid for the times)."""
    pytest.importorskip({"psl": "pandas", "gt3x": "pygt3x", "cwa": "skdh"}[fmt])
    rate = RATES[fmt]
    night = _night(40, rate, duration_h=3.0)
    summaries = {}
    for kind in ("csv", fmt):
        files = []
        for side, leg in night.legs.items():
            if kind == "csv":
                path = tmp_path / f"{side}.csv"
                _write_csv(path, leg.t, leg.xyz)
            else:
                t = leg.t if fmt == "psl" else device_grid(leg.device_ns, leg.index, rate)
                path = write_leg(fmt, tmp_path, side, t, leg.xyz, rate, leg.device_ns).path
            files += [f"--{side}", str(path)]
        assert main(["import", "--subject", f"sum-{fmt}-{kind}", *files]) == 0
        capsys.readouterr()
        doc = influx_env.query(f"SELECT * FROM night WHERE subject = 'sum-{fmt}-{kind}'", database=influx_env.database)[
            "results"
        ][0]["series"][0]
        summaries[kind] = dict(zip(doc["columns"], doc["values"][0], strict=True))
    ours, reference = summaries[fmt], summaries["csv"]
    for key in ("plm_count", "lm_count"):
        assert abs(ours[key] - reference[key]) <= max(3, 0.1 * reference[key]), (key, ours[key], reference[key])
    assert reference["plm_count"] > 30
    assert ours["time_in_bed_h"] == pytest.approx(reference["time_in_bed_h"], abs=0.1)


def test_a_week_long_actigraph_file_becomes_its_nights(influx_env, tmp_path, capsys):
    pytest.importorskip("pygt3x")
    days = simulate_days("rls-moderate", seed=3, days=3, rate_hz=30.0, legs="left")
    t, xyz = days.legs["left"]
    path = write_leg("gt3x", tmp_path, "left", t, xyz, 30.0).path
    assert main(["import", str(path), "--subject", "week"]) == 0
    out = capsys.readouterr().out
    assert out.count("night of ") == 3 and "3 nights of week" in out
    doc = influx_env.query("SELECT time_in_bed_h, start_s, end_s FROM night WHERE subject = 'week'", database="plm")
    rows = doc["results"][0]["series"][0]["values"]
    assert len(rows) == 3
    for (_, in_bed_h, _, _), (lights_off, lights_on) in zip(rows, days.in_bed(), strict=True):
        assert in_bed_h == pytest.approx((lights_on - lights_off) / 3600, abs=0.5)


def test_import_refusals_are_one_line_with_the_fix(influx_env, tmp_path, capsys):
    night = _night(50, 52.0, duration_h=0.5)
    psl = {
        side: write_leg("psl", tmp_path, side, leg.t, leg.xyz, 52.0, leg.device_ns).path
        for side, leg in night.legs.items()
    }
    # two sensors that do not say their leg
    assert main(["import", str(psl["left"]), str(psl["right"]), "--subject", "x"]) == 2
    err = capsys.readouterr().err
    assert "--left FILE --right FILE" in err and "Traceback" not in err
    # the same leg twice
    assert main(["import", "--left", str(psl["left"]), "--left", str(psl["left"]), "--subject", "x"]) == 2
    assert "overlap in time" in capsys.readouterr().err
    # a bad subject id, no files
    assert main(["import", str(psl["left"]), "--subject", "a/b"]) == 2
    assert main(["import", "--subject", "x"]) == 2
    assert "no recording given" in capsys.readouterr().err
    # times that cannot be a night's clock: from 0, in milliseconds, ahead of now
    for name, first, step in (
        ("rel", 0.0, 1 / 52),
        ("ms", START * 1000, 1000 / 52),
        ("future", 4_000_000_000.0, 1 / 52),
    ):
        path = tmp_path / f"{name}.csv"
        t = first + np.arange(52 * 700) * step
        _write_csv(path, t, np.tile([0.01, 0.02, 0.99], (t.shape[0], 1)))
        assert main(["import", str(path), "--subject", "x"]) == 2, name
        err = capsys.readouterr().err
        assert {"rel": "not a clock time", "ms": "milliseconds", "future": "later than now"}[name] in err, err
        assert "Traceback" not in err
    # nothing of it was written
    assert not influx_env.query("SELECT * FROM night WHERE subject = 'x'", database="plm")["results"][0].get("series")


def test_a_corrected_file_replaces_its_night_with_replace(influx_env, tmp_path, capsys):
    """A corrected file with fewer movements: imported over the first one, its old movements stay; with --replace
    the night holds exactly what a first import of the corrected file gives."""
    night = _night(60, 52.0, duration_h=1.0)
    first, corrected = {}, {}
    for side, leg in night.legs.items():
        first[side] = tmp_path / f"{side}.csv"
        _write_csv(first[side], leg.t, leg.xyz)
        still = leg.xyz.copy()
        half = leg.t < leg.t[0] + 1800  # the first half hour made still (as if those movements were artefacts)
        still[half] = np.median(leg.xyz[half], axis=0)
        still[half] += np.random.default_rng(0).normal(0, 0.003, still[half].shape)
        corrected[side] = tmp_path / f"{side}-corrected.csv"
        _write_csv(corrected[side], leg.t, still)

    def files(paths):
        return ["--left", str(paths["left"]), "--right", str(paths["right"])]

    assert main(["import", "--subject", "fresh", *files(corrected)]) == 0
    fresh = _points(influx_env, "fresh")
    assert main(["import", "--subject", "fix", *files(first)]) == 0
    before = _points(influx_env, "fix")
    assert len(before[schema.MOVEMENT]) > len(fresh[schema.MOVEMENT])
    assert main(["import", "--subject", "fix", *files(corrected)]) == 0
    assert len(_points(influx_env, "fix")[schema.MOVEMENT]) > len(fresh[schema.MOVEMENT])  # the old ones stayed
    assert main(["import", "--subject", "fix", "--replace", *files(corrected)]) == 0
    assert _points(influx_env, "fix") == fresh
    capsys.readouterr()
