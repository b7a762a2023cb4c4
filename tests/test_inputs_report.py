"""Issue 18: `plm report --from-file` refuses a --night that is not the recording's, and a night it cannot date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.scoring.synthetic import SyntheticMovement, leg_recording
from plm.cli import main

T0 = 1_708_720_200.0  # 2024-02-23 20:30 UTC: the night of Friday 23 February in Europe/Berlin


def _scored(tmp_path: Path, capsys: pytest.CaptureFixture[str], t0: float = T0, start: str | None = None) -> str:
    moves = [SyntheticMovement(30.0 + 25 * k, 2.0, 8.0) for k in range(10)]
    t, xyz = leg_recording(moves, 700.0, rate_hz=20.0, seed=1, t0=t0)
    leg = tmp_path / "leg.csv"
    leg.write_text(
        "t,x,y,z\n" + "".join(f"{a:.3f},{b:.4f},{c:.4f},{d:.4f}\n" for a, (b, c, d) in zip(t, xyz, strict=True))
    )
    assert main(["score", str(leg), "--json", *(["--start", start] if start else [])]) == 0
    scored = tmp_path / "scored.json"
    scored.write_text(capsys.readouterr().out)
    return str(scored)


def _report(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["report", "--subject", "alice", "--tz", "Europe/Berlin", "--out", str(tmp_path / "n.html"), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_night_that_is_not_the_recordings_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Once a recording of 23 Feb was retitled "Night of Tuesday 20 February"."""
    scored = _scored(tmp_path, capsys)
    code, out, err = _report(capsys, tmp_path, "--from-file", scored, "--night", "2024-02-20")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--night 2024-02-20 does not match" in err
    assert "recorded 2024-02-23 21:30+01:00 to 2024-02-23 21:41+01:00, the night of 2024-02-23" in err
    assert "leave --night out, or give --night 2024-02-23" in err
    assert not (tmp_path / "n.html").exists()


def test_the_recordings_own_night_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scored = _scored(tmp_path, capsys)
    for night in ([], ["--night", "2024-02-23"]):
        code, out, err = _report(capsys, tmp_path, "--from-file", scored, *night)
        assert code == 0, err
        assert "(night of 2024-02-23)" in out


def test_a_file_with_times_from_zero_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scored before `plm score` refused relative times: reported as the "night of 1969-12-31"."""
    scored = Path(_scored(tmp_path, capsys))
    doc = json.loads(scored.read_text())
    shift = doc["start"]
    doc["start"], doc["end"] = 0.0, doc["end"] - shift
    scored.write_text(json.dumps(doc))
    code, out, err = _report(capsys, tmp_path, "--from-file", str(scored))
    assert code == 2 and out == "" and "times count from 0 (t = 0 s), so its night is unknown" in err
    assert "plm score --start ISO-TIME" in err


def test_a_bad_night_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--subject", "alice", "--night", "2024-13-45"])
    assert exit_info.value.code == 2
    assert "argument --night: '2024-13-45' is not a date YYYY-MM-DD (month must be in 1..12)" in capsys.readouterr().err
