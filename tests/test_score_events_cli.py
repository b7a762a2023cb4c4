"""Tests for `plm score-events`: output, JSON shape, and clear errors (exit code 2) on bad files."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    # a gap that cuts into the 20-s movement: its links go, three CLMs are left on either side
    gaps = write(tmp_path, "gaps.csv", "start,end\n21,35\n")
    assert main([str(events), "--json", "--gaps", str(gaps)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plm_count"] == 0 and "plm_index" not in data
    # a gap in the rest between two movements leaves their link
    gaps.write_text("start,end\n30,35\n", encoding="utf-8")
    assert main([str(events), "--json", "--gaps", str(gaps)]) == 0
    assert json.loads(capsys.readouterr().out)["plm_count"] == 4
    # a gap on the left leg only: the right leg saw the 20-s movement whole
    gaps.write_text("start,end,side\n21,35,Left\n", encoding="utf-8")
    assert main([str(events), "--json", "--gaps", str(gaps)]) == 0
    assert json.loads(capsys.readouterr().out)["plm_count"] == 4
    gaps.write_text("start,end,side\n21,35,both\n", encoding="utf-8")
    assert main([str(events), "--json", "--gaps", str(gaps)]) == 2
    assert "side must be" in capsys.readouterr().err
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


# --------------------------------------------------------------------------- issue 18: plausible wrong answers
def _series_rows(scale: float, onsets_only: bool = False, n: int = 60, imi_s: float = 26.49) -> str:
    """A periodic series of ``n`` 2-s movements, written with onsets (and durations) multiplied by ``scale``."""
    rows = [f"{k * imi_s * scale:.3f},{2 * (1 if onsets_only else scale):g},left" for k in range(n)]
    return "onset,duration,side\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_series_rows(1000), "durations look like milliseconds (median 2000"),
        (_series_rows(1000, onsets_only=True), "if the onsets are in milliseconds, give them in seconds"),
        ("onset,duration,side\n0,2,left\n200000,2,left\n", "more than one night (36 h at most); if the onsets are in"),
        ("onset,duration,side\n0,2,left\n1e9,2,left\n", "more than one night (36 h at most); score each night"),
        ("onset,duration,side\n1e308,2,left\n", "events.csv:2: onset 1e+308 is out of range"),
        ("onset,duration,side\n1708727400000,2,left\n", "looks like Unix time in milliseconds: divide by 1000"),
        ("onset,duration,side\n-1e12,2,left\n", "onset -1e+12 is out of range"),
        ("onset,duration,side\n0,1e308,left\n", "duration 1e+308 s is out of range"),
    ],
    ids=["ms", "ms-onsets", "55-h", "many-nights", "1e308", "unix-ms", "negative", "huge-duration"],
)
def test_times_that_cannot_be_seconds_of_one_night_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """Scored as seconds, these gave "LM 0, long movements 60" or "60 LMs, 0 PLMs, median IMI 26,490 s"."""
    events = write(tmp_path, "events.csv", text)
    assert main([str(events), "--json"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1


def test_the_same_events_in_seconds_are_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, "events.csv", _series_rows(1))
    assert main([str(events), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plm_count"] == 60


def test_gap_times_out_of_range_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, "events.csv", SERIES_CSV)
    gaps = write(tmp_path, "gaps.csv", "start,end\n30,1e300\n")
    assert main([str(events), "--gaps", str(gaps)]) == 2
    assert "gaps.csv:2: end 1e+300 is out of range" in capsys.readouterr().err


def test_hours_shorter_than_the_events_span_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--hours 0.1 for events spanning 0.44 h gave a PLM index of 600/h."""
    events = write(tmp_path, "events.csv", _series_rows(1))  # 59 * 26.49 s + 2 s = 0.43 h
    assert main([str(events), "--hours", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--hours 0.1 is shorter than the events' span (0.43 h" in err
    assert main([str(events), "--hours", "0.44", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plm_index"] == pytest.approx(60 / 0.44)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    onsets=st.lists(st.floats(0, 30 * 3600), min_size=1, max_size=30),
    hours=st.floats(0.001, 40),
)
def test_a_plm_index_is_never_over_events_per_hour_of_their_span(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], onsets: list[float], hours: float
) -> None:
    """Invariant: whenever an index is printed, its denominator covers every event it counts, so the index
    is at most (number of events) / (their span in hours)."""
    events = write(tmp_path, "events.csv", "onset,duration,side\n" + "".join(f"{o!r},2,left\n" for o in onsets))
    code = main([str(events), "--json", "--hours", repr(hours)])
    out = capsys.readouterr().out
    span_h = (max(onsets) + 2 - min(onsets)) / 3600
    if hours < span_h:
        assert code == 2 and out == ""
    else:
        assert code == 0
        assert json.loads(out)["plm_index"] <= len(onsets) / span_h + 1e-9


def test_gzip_events_are_read_like_plm_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(SERIES_CSV.encode()))
    assert main([str(gz), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plm_count"] == 4
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(SERIES_CSV.encode())[:20])
    assert main([str(broken), "--json"]) == 2
    assert "broken.csv.gz:1: not a readable CSV file" in capsys.readouterr().err


def test_a_binary_file_is_named_with_a_short_excerpt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "events.csv"
    binary.write_bytes(bytes(range(256)) * 80)
    assert main([str(binary)]) == 2
    err = capsys.readouterr().err
    assert "events.csv" in err and len(err) < 300 and len(err.strip().splitlines()) == 1
