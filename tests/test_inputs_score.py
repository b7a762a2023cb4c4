"""Issue 18: `plm score` refuses recordings it cannot score right, with one line naming the problem and the fix.

A confident wrong number is the worst outcome of a health measure: legs from different nights, the same leg
twice, a few seconds of data, times from 0 (dated 1970) or out of range once all printed a plausible summary.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.recordings.csvio import MIN_DATA_S, clock_time
from detector.scoring.synthetic import SyntheticMovement, leg_recording
from plm.cli import main

T0 = 1_708_727_400.0  # 2024-02-23 22:30 UTC
RATE = 20.0  # Hz: enough for the detector (>= 10), small files


def _moves(n: int = 12, imi: float = 25.0) -> list[SyntheticMovement]:
    return [SyntheticMovement(30.0 + k * imi, 2.0, 8.0) for k in range(n)]


def _leg(seconds: float = 900.0, seed: int = 1, t0: float = T0) -> tuple[np.ndarray, np.ndarray]:
    return leg_recording(_moves(), seconds, rate_hz=RATE, seed=seed, t0=t0)


def _write(path: Path, t: np.ndarray, xyz: np.ndarray, sep: str = ",", t_format: str = "{:.3f}") -> str:
    rows = (
        sep.join([t_format.format(a), f"{b:.4f}", f"{c:.4f}", f"{d:.4f}"]) for a, (b, c, d) in zip(t, xyz, strict=True)
    )
    path.write_text(sep.join("txyz") + "\n" + "\n".join(rows) + "\n")
    return str(path)


def _score(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["score", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _score(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture()
def legs(tmp_path: Path) -> tuple[str, str]:
    left = _write(tmp_path / "left.csv", *_leg(seed=1))
    right = _write(tmp_path / "right.csv", *_leg(seed=2))
    return left, right


def test_two_legs_of_one_night_are_scored(capsys, legs) -> None:
    code, out, _ = _score(capsys, legs[0], "--right", legs[1], "--json")
    assert code == 0 and json.loads(out)["sides"] == ["left", "right"]


def test_legs_from_different_nights_are_refused_naming_both_ranges(capsys, tmp_path) -> None:
    """Once: "recording 146 h, missing 98.6 %, PLM 175, PLM index 0.0/h" with exit code 0."""
    left = _write(tmp_path / "left.csv", *_leg(seed=1))
    t, xyz = _leg(seed=2, t0=T0 + 3 * 86400)
    right = _write(tmp_path / "right.csv", t, xyz)
    err = _refused(capsys, left, "--right", right)
    assert "the legs were not recorded together" in err
    assert f"left.csv covers {clock_time(T0)} to " in err and f"right.csv covers {clock_time(t[0])} to " in err
    assert "give two recordings of the same night, or score each leg alone" in err


def test_legs_overlapping_for_a_small_part_are_refused(capsys, tmp_path) -> None:
    left = _write(tmp_path / "left.csv", *_leg(seed=1))
    right = _write(tmp_path / "right.csv", *_leg(seed=2, t0=T0 + 700))  # 200 s of 900 together
    assert "(together 3 min)" in _refused(capsys, left, "--right", right)


def test_a_leg_that_stopped_early_is_still_scored(capsys, tmp_path) -> None:
    """A sensor whose battery died: all of the shorter leg lies within the other; missing data says the rest."""
    left = _write(tmp_path / "left.csv", *_leg(1800.0, seed=1))
    right = _write(tmp_path / "right.csv", *_leg(700.0, seed=2))
    code, out, _ = _score(capsys, left, "--right", right, "--json")
    assert code == 0 and json.loads(out)["missing_fraction"] > 0.2


def test_the_same_file_for_both_legs_is_refused(capsys, legs) -> None:
    """Once scored as two legs: index 87.5 -> 90.0 and "bilateral 206" > "LM in bed 201"."""
    assert "left.csv is given for both legs" in _refused(capsys, legs[0], "--right", legs[0])


def test_a_copy_of_one_leg_is_refused(capsys, tmp_path, legs) -> None:
    copy = tmp_path / "copy.csv"
    copy.write_bytes(Path(legs[0]).read_bytes())
    assert "hold the same signal (their sample-to-sample changes correlate 1.00" in _refused(
        capsys, legs[0], "--right", str(copy)
    )


def test_a_near_copy_with_noise_and_shifted_times_is_refused(capsys, tmp_path) -> None:
    t, xyz = _leg(seed=1)
    left = _write(tmp_path / "left.csv", t, xyz)
    noisy = xyz + np.random.default_rng(5).normal(0, 0.0005, xyz.shape)
    right = _write(tmp_path / "right.csv", t + 0.013, noisy)
    assert "hold the same signal" in _refused(capsys, left, "--right", right)


@pytest.mark.parametrize("samples", [2, int(RATE * 60), int(RATE * (MIN_DATA_S - 5))])
def test_recordings_under_ten_minutes_are_refused(capsys, tmp_path, samples: int) -> None:
    """Once a 2-sample file printed a full summary with "PLM index 0.0"."""
    t, xyz = _leg()
    path = _write(tmp_path / "short.csv", t[:samples], xyz[:samples])
    err = _refused(capsys, path)
    assert f"short.csv: only {np.diff(t[:samples]).sum() / 60:.1f} min of samples ({samples} samples)" in err
    assert "a recording needs at least 10 minutes to be scored" in err


def test_ten_minutes_spread_over_hours_of_gaps_are_not_enough(capsys, tmp_path) -> None:
    t, xyz = _leg(900.0)
    t = t.copy()
    t[len(t) // 2 :] += 6 * 3600  # a sensor off for six hours: 15 minutes of samples
    path = _write(tmp_path / "gappy.csv", t, xyz)
    assert _score(capsys, path)[0] == 0
    t2 = np.concatenate([t[: int(RATE * 200)], t[-int(RATE * 200) :]])
    xyz2 = np.concatenate([xyz[: int(RATE * 200)], xyz[-int(RATE * 200) :]])
    assert "only 6.7 min of samples" in _refused(capsys, _write(tmp_path / "gappy2.csv", t2, xyz2))


def test_more_than_one_night_in_one_file_is_refused(capsys, tmp_path) -> None:
    t, xyz = _leg()
    t = t.copy()
    t[len(t) // 2 :] += 3 * 86400
    err = _refused(capsys, _write(tmp_path / "long.csv", t, xyz))
    assert "more than one night (36 h at most): score one night at a time" in err


def test_relative_times_are_refused_without_start(capsys, tmp_path) -> None:
    """Times from 0 once gave a report of the "night of 1969-12-31"."""
    t, xyz = _leg(t0=0.0)
    path = _write(tmp_path / "rel.csv", t, xyz)
    err = _refused(capsys, path)
    assert "rel.csv: t counts from 0 s, not a clock time" in err and "give --start ISO-TIME" in err


def test_relative_times_with_start_are_dated_from_it(capsys, tmp_path) -> None:
    t, xyz = _leg(t0=0.0)
    path = _write(tmp_path / "rel.csv", t, xyz)
    absolute = _write(tmp_path / "abs.csv", t + T0, xyz)
    code, out, _ = _score(capsys, path, "--start", "2024-02-23T22:30+00:00", "--json")
    assert code == 0
    relative_doc = json.loads(out)
    assert relative_doc["start"] == pytest.approx(T0)
    code, out, _ = _score(capsys, absolute, "--json")
    assert code == 0
    absolute_doc = json.loads(out)
    assert relative_doc["plm_count"] == absolute_doc["plm_count"]
    assert relative_doc["plm_index"] == pytest.approx(absolute_doc["plm_index"])


def test_start_with_clock_times_is_refused(capsys, legs) -> None:
    err = _refused(capsys, legs[0], "--start", "2024-02-23T22:30")
    assert "--start is for times counted from 0" in err and "leave --start out" in err


def test_a_bad_start_names_the_option(capsys, legs) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["score", legs[0], "--start", "2024-13-45"])
    assert exit_info.value.code == 2
    assert "argument --start: '2024-13-45' is not an ISO 8601 time" in capsys.readouterr().err


def test_one_leg_relative_and_one_with_clock_times_is_refused(capsys, tmp_path) -> None:
    left = _write(tmp_path / "left.csv", *_leg(seed=1))
    right = _write(tmp_path / "right.csv", *_leg(seed=2, t0=0.0))
    assert "the legs' time bases differ" in _refused(capsys, left, "--right", right, "--start", "2024-02-23T22:30")


@pytest.mark.parametrize(
    ("shift", "scale", "message"),
    [
        (None, 1.0, "timestamp t=1e+308 is out of range (after the year 2100)"),
        (-1000.0, 1.0, "timestamps start at t=-1000, before 0"),
        (T0 * 1000, 1000.0, "t looks like Unix time in milliseconds: write it in seconds (divide by 1000)"),
        (0.0, 1000.0, "timestamps look like milliseconds (median step 50 between samples)"),
    ],
    ids=["1e308", "negative", "unix-ms", "relative-ms"],
)
def test_times_out_of_range_or_in_milliseconds_are_refused(capsys, tmp_path, shift, scale, message) -> None:
    t, xyz = _leg(t0=0.0)
    t = t * scale + (shift or 0.0)
    if shift is None:
        t[-1] = 1e308  # one sample far beyond any recording: once scored as a very late one
    path = tmp_path / "leg.csv"
    path.write_text("t,x,y,z\n" + "".join(f"{float(a)!r},{b},{c},{d}\n" for a, (b, c, d) in zip(t, xyz, strict=True)))
    assert message in _refused(capsys, str(path))


def test_rules_come_from_the_configuration_unless_given(capsys, legs, tmp_path, monkeypatch) -> None:
    """The README promises `plm score` honours detector.rules; it always scored WASM 2016."""
    monkeypatch.delenv("PLM_CONFIG", raising=False)
    monkeypatch.delenv("PLM_DETECTOR__RULES", raising=False)
    assert json.loads(_score(capsys, legs[0], "--json")[1])["rules"] == "wasm2016"
    monkeypatch.setenv("PLM_DETECTOR__RULES", "aasm")
    assert json.loads(_score(capsys, legs[0], "--json")[1])["rules"] == "aasm"
    assert json.loads(_score(capsys, legs[0], "--json", "--rules", "wasm2016")[1])["rules"] == "wasm2016"
    monkeypatch.delenv("PLM_DETECTOR__RULES")
    config = tmp_path / "plm.toml"
    config.write_text('[detector]\nrules = "aasm"\n')
    code = main(["--config", str(config), "score", legs[0], "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["rules"] == "aasm"
    config.write_text('[detector]\nrules = "aasm2"\n')
    assert main(["--config", str(config), "score", legs[0], "--json"]) == 2
    assert "detector.rules" in capsys.readouterr().err


# ----------------------------------------------------------------------------- messages that say more
def test_a_binary_file_is_named_with_a_short_excerpt(capsys, tmp_path) -> None:
    """Once 18 KB of escaped bytes."""
    binary = tmp_path / "program"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 100)
    err = _refused(capsys, str(binary))
    assert "program: not a text file (it starts with b'\\x7fELF" in err and len(err) < 250


def test_a_header_only_file_warns_nothing(capsys, tmp_path) -> None:
    """Once numpy's "loadtxt: input contained no data" warning, with an internal path, came first."""
    path = tmp_path / "empty.csv"
    path.write_text("t,x,y,z\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "empty.csv: no samples after the header" in _refused(capsys, str(path))


def test_out_of_order_times_are_plain_numbers(capsys, tmp_path) -> None:
    path = tmp_path / "unsorted.csv"
    path.write_text("t,x,y,z\n2.5,0,0,1\n1.5,0,0,1\n")
    err = _refused(capsys, str(path))
    assert "line 3: unsorted (earlier than the line before) timestamp t=1.5" in err and "np." not in err


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_files_are_read_when_unambiguous(capsys, tmp_path, sep) -> None:
    t, xyz = _leg()
    commas = _write(tmp_path / "commas.csv", t, xyz)
    other = _write(tmp_path / "other.csv", t, xyz, sep=sep)
    expected = json.loads(_score(capsys, commas, "--json")[1])
    code, out, _ = _score(capsys, other, "--json")
    assert code == 0 and json.loads(out) == expected


def test_semicolons_with_decimal_commas_are_read(capsys, tmp_path) -> None:
    t, xyz = _leg()
    commas = _write(tmp_path / "commas.csv", t, xyz)
    text = _write(tmp_path / "tmp.csv", t, xyz, sep=";")
    european = tmp_path / "european.csv.gz"
    european.write_bytes(gzip.compress(Path(text).read_text().replace(".", ",").encode()))
    expected = json.loads(_score(capsys, commas, "--json")[1])
    code, out, _ = _score(capsys, str(european), "--json")
    assert code == 0 and json.loads(out) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t;x;y;z\n1,5;0.1;0;1\n", "values are separated by semicolons (;) and the numbers mix ',' and '.'"),
        ("t\tx\ty\tz\n1,5\t0\t0\t1\n", "values are separated by tabs and the numbers mix"),
        ("t|x|y|z\n1|0|0|1\n", "the header is separated by '|', not commas"),
        ("t,x,y,z\n1,5,0,1,0,0,1\n", "expected 4 comma-separated values, found 7 (a decimal comma?"),
    ],
    ids=["semicolon-mixed", "tab-comma", "pipe", "comma-decimal"],
)
def test_other_separators_are_named(capsys, tmp_path, text: str, message: str) -> None:
    path = tmp_path / "leg.csv"
    path.write_text(text)
    assert message in _refused(capsys, str(path))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    left_start=st.floats(0, 4 * 3600),
    right_start=st.floats(0, 4 * 3600),
    left_s=st.floats(300, 3600),
    right_s=st.floats(300, 3600),
)
def test_two_legs_are_scored_only_when_recorded_together(
    capsys, tmp_path, left_start: float, right_start: float, left_s: float, right_s: float
) -> None:
    """Invariant: a two-leg result is printed only when the legs overlap for at least half the shorter one
    and each has 10 minutes of samples; otherwise one line says why."""
    t, xyz = leg_recording([], 3600.0 * 5, rate_hz=10.0, seed=3, t0=T0)
    t2, xyz2 = leg_recording([], 3600.0 * 5, rate_hz=10.0, seed=4, t0=T0)
    a = (t >= T0 + left_start) & (t <= T0 + left_start + left_s)
    b = (t2 >= T0 + right_start) & (t2 <= T0 + right_start + right_s)
    left = _write(tmp_path / "left.csv", t[a], xyz[a])
    right = _write(tmp_path / "right.csv", t2[b], xyz2[b])
    code, out, err = _score(capsys, left, "--right", right, "--json")
    overlap = min(left_start + left_s, right_start + right_s) - max(left_start, right_start)
    shorter = min(left_s, right_s)
    margin = 1.0  # s: sampling rounds each span by up to a sample interval
    scorable = shorter >= MIN_DATA_S + margin and overlap >= 0.5 * shorter + margin
    refusable = shorter < MIN_DATA_S - margin or overlap < 0.5 * shorter - margin
    if code == 0:
        assert not refusable, (overlap, shorter)
        union_h = (max(left_start + left_s, right_start + right_s) - min(left_start, right_start)) / 3600
        assert json.loads(out)["recording_h"] <= union_h + 1e-6
    else:
        assert not scorable, err
        assert code == 2 and len(err.strip().splitlines()) == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(duration_s=st.floats(600, 1500), rate=st.sampled_from([25.0, 52.0, 100.0]), seed=st.integers(0, 50))
def test_time_in_bed_never_exceeds_the_recording(duration_s, rate, seed) -> None:
    """An epoch covers its samples' n / rate seconds, the recording runs from first to last sample: time in bed
    was one sample interval longer than the recording (issue 18, item 5)."""
    from detector.scoring.scorer import score_arrays

    t, xyz = leg_recording([], duration_s, rate_hz=rate, seed=seed, t0=1_700_000_000.0)
    fields = score_arrays((t, xyz)).fields
    assert fields["time_in_bed_h"] * 3600 <= float(t[-1] - t[0]) + 1e-9
    assert fields["sleep_h"] <= fields["time_in_bed_h"]
