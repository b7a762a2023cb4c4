"""The issue's equivalence, literally: a night streamed through the real mosquitto into the real influxd
stores exactly the movements that `plm score` reports for the same night's CSV files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from detector.live.service import LiveDetector
from plm import wire
from plm.mqtt import connect, make_client
from simulator import simulate_night
from tests.live_helpers import batches_as_arrays, interleave, night_batches, settings_for, wait_for

pytestmark = pytest.mark.services


def _write_csv(path, t: np.ndarray, xyz: np.ndarray) -> None:
    # microsecond timestamps (what a careful exporter writes) and the milli-g resolution of the wire
    np.savetxt(
        path,
        np.column_stack((t, xyz)),
        fmt=("%.6f", "%.3f", "%.3f", "%.3f"),
        delimiter=",",
        header="t,x,y,z",
        comments="",
    )


def test_streamed_night_equals_plm_score_of_the_files(mosquitto, influxd, tmp_path):
    night = simulate_night("rls-moderate", seed=777, duration_h=0.5, jitter_ms=0, gap=False)
    per_side = night_batches(night)
    for side in ("left", "right"):
        _write_csv(tmp_path / f"{side}.csv", *batches_as_arrays(per_side[side]))
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "plm.cli",
            "score",
            str(tmp_path / "left.csv"),
            "--right",
            str(tmp_path / "right.csv"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    offline = json.loads(scored.stdout)

    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance="files")
    detector = LiveDetector(settings)
    detector.start()
    publisher = make_client(settings.mqtt, "files-publisher")
    connect(publisher, settings.mqtt)
    try:
        infos = [
            publisher.publish(wire.acc_topic("filesubject", f"{side}-ankle"), wire.encode_binary(b), qos=1)
            for side, b in interleave(per_side)
        ]
        for info in infos:
            info.wait_for_publish(30)
        for side in ("left", "right"):
            status = wire.encode_status(wire.SensorStatus(state="offline", side=side))
            publisher.publish(wire.status_topic("filesubject", f"{side}-ankle"), status, qos=1).wait_for_publish(10)
        assert wait_for(lambda: detector.stats.nights_finished == 1, 60)
        assert detector.sink.flush(30)
    finally:
        detector.stop()
        publisher.disconnect()

    rows = influxd.query("SELECT plm, side, kind FROM movement WHERE subject = 'filesubject'", database="plm")
    values = rows["results"][0]["series"][0]["values"]
    stored = sorted((t, side, kind, plm) for t, plm, side, kind in values)
    expected = sorted((round(e["onset"] * 1000), e["side"], e["kind"], e["plm"]) for e in offline["events"])
    assert [s[1:] for s in stored] == [e[1:] for e in expected]
    # onsets agree to the millisecond (the files carry microsecond timestamps)
    assert all(abs(s[0] - e[0]) <= 1 for s, e in zip(stored, expected, strict=True))
    assert offline["plm_count"] == sum(1 for s in stored if s[3]) > 0
