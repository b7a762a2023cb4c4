"""`plm demo` end to end: simulator -> mosquitto -> detector -> influxd, read back with InfluxQL."""

from __future__ import annotations

import math
import os
import time

import pytest

from plm.cli import main
from plm.ops.demo import COMPARED, run_demo
from plm.ops.localservices import ServiceError

pytestmark = pytest.mark.services


def test_demo_night_read_back_equals_the_detector_and_is_close_to_truth(tmp_path):
    started = time.monotonic()
    try:
        result = run_demo(tmp_path, hours=1.0, speed=1000.0, profile="rls-severe", seed=0)
    except ServiceError as exc:
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
    stored, announced, truth = result.stored, result.announced, result.truth
    assert stored["final"] is True and announced["final"] is True
    for key in COMPARED:  # InfluxDB holds exactly what the detector computed and announced
        a, b = stored.get(key), announced.get(key)
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9), key
    assert truth["plm_count"] > 10  # a severe night: the comparison is not vacuous
    assert abs(stored["plm_count"] - truth["plm_count"]) <= max(5, 0.25 * truth["plm_count"])
    assert abs(stored["time_in_bed_h"] - truth["time_in_bed_h"]) <= 0.25
    assert result.report is not None and result.report.read_text().lstrip().lower().startswith("<!doctype html")


def test_demo_cli_prints_the_table_and_the_grafana_hint(tmp_path, capsys):
    code = main(["demo", "--hours", "0.25", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    out = captured.out
    if code != 0 and "not installed" in captured.err and os.environ.get("PLM_REQUIRE_SERVICES") != "1":
        pytest.skip(captured.err)
    assert code == 0, out
    assert "InfluxDB" in out and "truth" in out and "plm_count" in out
    assert "does not diagnose" in out
    assert "InfluxQL" in out and "database plm" in out


def test_the_environment_hint_points_plm_note_at_the_demos_influxdb(monkeypatch):
    """`plm demo --keep` prints what a `plm note` / `plm report` in another shell needs: exported, those
    variables give settings that reach the demo's 1.x InfluxDB (issue 18)."""
    import shlex

    from plm.config import load_settings
    from plm.ops.demo import DemoResult, env_hint

    result = DemoResult("demo", {}, {}, {}, influx_url="http://127.0.0.1:48123", database="plmdemo")
    export = next(line for line in env_hint(result).splitlines() if line.strip().startswith("export "))
    for k in [k for k in os.environ if k.startswith("PLM_")]:
        monkeypatch.delenv(k)
    for assignment in shlex.split(export.strip())[1:]:
        key, _, value = assignment.partition("=")
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.influx.url == result.influx_url and settings.influx.bucket == result.database
    assert settings.influx.api == 1
