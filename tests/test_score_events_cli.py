"""Tests for `plm score-events`: output, JSON shape, and clear errors (exit code 2) on bad files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plm.score_events_cli import main

SERIES_CSV = "onset,duration,side\n0,2,left\n20,2,right\n40.5,2,left\n40,2,right\n60,2,left\n200,12,left\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    assert main([str(events), "--json", "--hours", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["lm_count"], data["clm_count"], data["plm_count"], data["series_count"]) == (4, 4, 4, 1)
    assert data["long_count"] == 1
    assert data["periodicity_index"] == 1.0
    assert data["plm_index"] == 2.0
    assert [(e["side"], e["kind"], e["plm"]) for e in data["events"]] == [
        ("left", "lm", True),
        ("right", "lm", True),
        ("bilateral", "lm", True),
        ("left", "lm", True),
        ("left", "long", False),
    ]
    assert "does not diagnose" in data["note"]


def test_gaps_and_rules_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    gaps = write(tmp_path, "gaps.csv", "start,end\n30,35\n")
    assert main([str(events), "--json", "--gaps", str(gaps)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plm_count"] == 0 and "plm_index" not in data
    # AASM: onsets 40 and 40.5 on different legs still combine; IMIs 20 s are in range
    assert main([str(events), "--json", "--rules", "aasm"]) == 0
    assert json.loads(capsys.readouterr().out)["plm_count"] == 4


def test_human_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    assert main([str(events), "--hours", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "periodic LMs (PLM):          4 in 1 series" in out
    assert "8.0 per hour" in out
    assert "does not diagnose" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("onset,dur,side\n0,2,left\n", "events.csv:1: missing column(s) duration"),
        ("onset,duration,side\n0,2,left\nabc,2,left\n", "events.csv:3: onset 'abc' is not a number"),
        ("onset,duration,side\n0,0,left\n", "events.csv:2: duration must be > 0"),
        ("onset,duration,side\n0,-1,left\n", "events.csv:2: duration must be > 0"),
        ("onset,duration,side\n0,2,both\n", "events.csv:2: side must be 'left' or 'right'"),
        ("onset,duration,side\nNaN,2,left\n", "events.csv:2: onset must be a finite number"),
        ("onset,duration,side\n0,2\n", "events.csv:2: column 'side' is empty"),
        ("", "events.csv:1: empty file"),
    ],
)
def test_bad_event_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    events = write(tmp_path, "events.csv", text)
    assert main([str(events), "--json"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_bad_gap_file_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    gaps = write(tmp_path, "gaps.csv", "start,end\n10,5\n")
    assert main([str(events), "--gaps", str(gaps)]) == 2
    assert "gaps.csv:2: gap end 5.0 must be after its start 10.0" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: cannot read file" in capsys.readouterr().err


def test_bad_hours_is_a_usage_error(tmp_path: Path) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    with pytest.raises(SystemExit) as exc:
        main([str(events), "--hours", "0"])
    assert exc.value.code == 2


@pytest.mark.skipif(shutil.which("plm") is None, reason="plm entry point not installed")
def test_plm_entry_point_subprocess(tmp_path: Path) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    done = subprocess.run(
        ["plm", "score-events", str(events), "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plm_count"] == 4
    bad = write(tmp_path, "bad.csv", "onset,duration,side\n0,2,middle\n")
    done = subprocess.run(
        [sys.executable, "-m", "plm.score_events_cli", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "bad.csv:2: side must be" in done.stderr and "Traceback" not in done.stderr
