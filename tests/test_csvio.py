"""Reading a leg's CSV: the numpy fast path gives the same doubles as ``float()`` on every field, every
other file goes through the general parser (with or without pandas), and bad files are named by line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.recordings import csvio
from detector.recordings.csvio import CsvError, read_leg_csv


def _reference(text: str) -> tuple[np.ndarray, np.ndarray]:
    """What the file says, by Python's float() (correctly rounded) on each field."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n")[1:] if line]
    rows = np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float64)
    return rows[:, 0], rows[:, 1:4]


def _no_general_parser(monkeypatch) -> None:
    def fail(*_args):
        raise AssertionError("the fast path should have read this file")

    monkeypatch.setattr(csvio, "_parse_general", fail)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, including the sign of zero."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _night_text(n: int, seed: int = 1, t_format: str = "{:.3f}", g_format: str = "{:.3f}", step: float = 0.02) -> str:
    rng = np.random.default_rng(seed)
    t = 1_689_719_400.0 + np.cumsum(rng.uniform(0.75 * step, 1.25 * step, n))
    xyz = rng.normal(0.0, 0.05, (n, 3)) + np.array([0.0, 0.0, 1.0])
    lines = ["t,x,y,z"] + [
        ",".join([t_format.format(a), *(g_format.format(v) for v in row)]) for a, row in zip(t, xyz, strict=True)
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("t_format", "g_format", "step"),
    [("{:.3f}", "{:.3f}", 0.02), ("{:.6f}", "{:.4f}", 0.02), ("{:.1f}", "{:.5f}", 0.2), ("{:.0f}.", "{:.1f}", 2.0)],
)
def test_fast_path_equals_float_on_many_blocks(tmp_path: Path, monkeypatch, t_format, g_format, step) -> None:
    text = _night_text(150_000, t_format=t_format, g_format=g_format, step=step)  # > 2 blocks of the fast parser
    path = tmp_path / "leg.csv"
    path.write_text(text)
    _no_general_parser(monkeypatch)
    t, xyz = read_leg_csv(path)
    ref_t, ref_xyz = _reference(text)
    assert _same(t, ref_t) and _same(xyz, ref_xyz)
    assert t.flags.c_contiguous and xyz.flags.c_contiguous and xyz.shape == (150_000, 3)


plain_numbers = st.builds(
    lambda whole, frac, negative, style: (
        ("-" if negative else "")
        + {"int": whole, "dot": f"{whole}.{frac}", "lead": f".{frac}", "trail": f"{whole}."}[style]
    ),
    st.integers(min_value=0, max_value=9_999_999).map(str) | st.sampled_from(["0", "00", "007"]),
    st.integers(min_value=0, max_value=9_999_999).map(lambda n: f"{n:07d}".rstrip("0") or "0") | st.just("5"),
    st.booleans(),
    st.sampled_from(["int", "dot", "dot", "lead", "trail"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.tuples(plain_numbers, plain_numbers, plain_numbers), min_size=1, max_size=40),
    start=st.integers(min_value=0, max_value=10**9),
    decimals=st.integers(min_value=0, max_value=6),
    newline=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    columns=st.sampled_from(["t,x,y,z", "z,y,x,t", "x,t,extra,y,z"]),
)
def test_fast_path_equals_float_for_any_plain_decimals(
    tmp_path: Path, monkeypatch, values, start, decimals, newline, final_newline, columns
) -> None:
    """Mixed decimals, signs, '.5', '5.', CRLF, a missing last newline, other column orders: the fast
    path reads them all, and every value is float() of its field."""
    names = columns.split(",")
    lines = [columns]
    for i, (x, y, z) in enumerate(values):
        fields = {"t": f"{start + i + 0.5:.{decimals}f}" if decimals else str(start + i), "x": x, "y": y, "z": z}
        fields["extra"] = "7"
        lines.append(",".join(fields[name] for name in names))
    text = newline.join(lines) + (newline if final_newline else "")
    body_start = text.index("\n") + 1
    got = csvio._parse_plain(text.encode(), body_start, len(names), [names.index(c) for c in csvio.COLUMNS])
    assert got is not None
    lines = [line for line in text.replace("\r\n", "\n").split("\n")[1:] if line]
    rows = [dict(zip(names, line.split(","), strict=True)) for line in lines]
    ref = np.array([[float(r[c]) for c in csvio.COLUMNS] for r in rows])
    assert _same(got[0], np.ascontiguousarray(ref[:, 0])) and _same(got[1], np.ascontiguousarray(ref[:, 1:]))


@pytest.mark.parametrize(
    "body",
    [
        "1,0,0,1e0\n2,0,0,1\n",  # exponent
        "1, 0,0,1\n2,0,0,1\n",  # space
        "1,+0,0,1\n2,0,0,1\n",  # plus sign
        "1,0.00000000000000001,0,1\n2,0,0,1\n",  # longer than the fast path reads
        "1,0,0,0.9999999999999999\n2,0,0,1\n",  # more digits than a double holds exactly
        '"1",0,0,1\n2,0,0,1\n',  # quotes
    ],
)
@pytest.mark.parametrize("pandas", [True, False])
def test_other_numbers_go_to_the_general_parser(tmp_path: Path, monkeypatch, body: str, pandas: bool) -> None:
    if not pandas:
        monkeypatch.setattr(csvio, "_pandas_module", False)  # as without the fast-csv extra
    path = tmp_path / "leg.csv"
    path.write_text("t,x,y,z\n" + body)
    if '"' in body:
        if pandas:
            t, _ = read_leg_csv(path)  # pandas reads quoted numbers
            assert t.tolist() == [1.0, 2.0]
        else:
            with pytest.raises(CsvError, match="line 2: column t is not a number"):
                read_leg_csv(path)
        return
    t, xyz = read_leg_csv(path)
    first = body.split("\n")[0].split(",")
    assert t.tolist() == [1.0, 2.0]
    assert xyz[0].tolist() == [float(v) for v in first[1:]]


@pytest.mark.parametrize("pandas", [True, False])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("t,x,y,z\n1,0,0,1\n2,0,0,nan\n", "line 3: value is NaN or infinite"),
        ("t,x,y,z\n1,0,0,1\n2,0,-,1\n", "line 3: column y is not a number: '-'"),
        ("t,x,y,z\n1,0,0,1\n2,0,.,1\n", "line 3: column y is not a number: '.'"),
        ("t,x,y,z\n1,0,0,1\n2,0,1.2.3,1\n", "line 3: column y is not a number: '1.2.3'"),
        ("t,x,y,z\n1,0,0,1\n2,0,1-2,1\n", "line 3: column y is not a number: '1-2'"),
        ("t,x,y,z\n1,0,0,1\n2,0,,1\n", "line 3: column y is not a number: ''"),
        ("t,x,y,z\n1.000,0,0,1\n1.000,0,0,1\n", "line 3: duplicate timestamp"),
        ("t,x,y,z\n", "no samples"),
        ("t,x,y,z", "no samples"),
        ("t,x,y,z\n\n  \n", "line 2: empty line"),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, monkeypatch, content: str, message: str, pandas: bool) -> None:
    if not pandas:
        monkeypatch.setattr(csvio, "_pandas_module", False)
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CsvError) as err:
        read_leg_csv(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_gzip_and_short_first_values(tmp_path: Path, monkeypatch) -> None:
    """Fields within the first bytes of the file (the parser reads up to 24 bytes before a field's end)."""
    text = "t,x,y,z\n0,0,0,1\n1,-.5,0.,1\n2,0,0,1\n"
    path = tmp_path / "leg.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    _no_general_parser(monkeypatch)
    t, xyz = read_leg_csv(path)
    assert t.tolist() == [0.0, 1.0, 2.0] and xyz[1].tolist() == [-0.5, 0.0, 1.0]


def test_negative_zero_and_units_check(tmp_path: Path) -> None:
    path = tmp_path / "leg.csv"
    path.write_text("t,x,y,z\n1,-0.000,0,1\n2,0,0,1\n")
    _, xyz = read_leg_csv(path)
    assert np.signbit(xyz[0, 0]) and not np.signbit(xyz[1, 0])
    path.write_text("t,x,y,z\n1,0,0,9.81\n2,0,0,9.79\n3,0,0,9.8\n")
    with pytest.raises(CsvError, match=r"m/s\^2 \(median \|a\| = 9.8\)"):
        read_leg_csv(path)


tokens = st.sampled_from(["0", "1", "-1", "0.5", "-.25", "7.", "1e3", " 2", "+3", "nan", "", "-", ".", "1.2.3", "x"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(min_value=-2, max_value=3), st.lists(tokens | plain_numbers, min_size=3, max_size=4)),
        min_size=1,
        max_size=12,
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_fast_path_accepts_and_rejects_like_the_general_parser(tmp_path: Path, monkeypatch, rows, newline) -> None:
    """Whatever the bytes, reading with the fast path gives the general parser's arrays or its error."""
    lines = ["t,x,y,z"] + [
        ",".join([f"{1_700_000_000 + i + step / 4:.2f}", *fields]) for i, (step, fields) in enumerate(rows)
    ]
    path = tmp_path / "leg.csv"
    path.write_bytes((newline.join(lines) + newline).encode())

    def outcome() -> tuple:
        try:
            t, xyz = read_leg_csv(path)
            return ("ok", t.tobytes(), xyz.tobytes())
        except CsvError as exc:
            return ("error", str(exc))

    monkeypatch.setattr(csvio, "_pandas_module", False)
    fast = outcome()
    monkeypatch.setattr(csvio, "_parse_plain", lambda *_args: None)
    assert fast == outcome()


_SEPARATORS = st.sampled_from([",", ";", "\t", "|", " "])
_CELLS = st.sampled_from(["0", "1", "-1", "0.5", "0,5", "1.708e9", "", "x", "1.2.3", "1,2"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sep=_SEPARATORS,
    header=st.permutations(["t", "x", "y", "z"]),
    rows=st.lists(st.lists(_CELLS, min_size=3, max_size=5), max_size=4),
    bom=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
)
def test_any_separator_reads_or_is_a_csv_error(tmp_path: Path, sep, header, rows, bom, newline, final_newline) -> None:
    """Issue 18: ';'/tab files, decimal commas and headers alone (with or without a final newline, BOM,
    CRLF) are read or refused with a CsvError, never another exception."""
    lines = [sep.join(header), *(sep.join(row) for row in rows)]
    text = ("\ufeff" if bom else "") + newline.join(lines) + (newline if final_newline else "")
    path = tmp_path / "leg.csv"
    path.write_bytes(text.encode())
    try:
        t, xyz = read_leg_csv(path)
    except CsvError:
        return
    assert t.shape[0] == xyz.shape[0] == len(rows)


def test_a_semicolon_header_alone_is_no_samples(tmp_path: Path) -> None:
    path = tmp_path / "leg.csv"
    for text in ("t;x;y;z", "\ufefft;x;y;z\r\n"):
        path.write_bytes(text.encode())
        with pytest.raises(CsvError, match="no samples after the header"):
            read_leg_csv(path)
