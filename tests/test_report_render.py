"""The night report as PNG (phone page) and PDF (A4): valid one-page files that carry the same
numbers and sentences as the HTML, because both are drawn from one NightReport."""

from __future__ import annotations

import datetime as dt
import re
import struct
import zlib
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="PNG/PDF reports need the 'report' extra: pip install -e '.[report]'")

import matplotlib

from detector.reporting.render import A4_IN, PHONE_DPI, PHONE_WIDTH_IN, render_bytes
from detector.reporting.report import DOCTOR_REASONS, MEDICATION_NOTE, NOTICE, build_report, render_html
from detector.scoring.scorer import score_arrays
from plm.cli import main
from simulator import simulate_night

NIGHT = dt.date(2024, 3, 1)
START = dt.datetime(2024, 3, 1, 22, 30, tzinfo=dt.UTC).timestamp()
WEEKS = [25.0, 31.0, None, 22.0, 18.0, 40.0, 27.0, 12.0, 35.0, 29.0, 33.0, 21.0, 26.0]


@pytest.fixture(scope="module")
def scored() -> dict:
    night = simulate_night("rls-severe", seed=5, rate_hz=25, duration_h=1.0, start_unix_s=START)
    legs = night.legs
    return score_arrays((legs["left"].t, legs["left"].xyz), (legs["right"].t, legs["right"].xyz)).to_dict()


@pytest.fixture(scope="module")
def report(scored: dict):
    summary = dict(scored)
    events = summary.pop("events")
    history = [(NIGHT - dt.timedelta(days=len(WEEKS) - i), v) for i, v in enumerate(WEEKS)]
    diary = [
        (NIGHT - dt.timedelta(days=6), "started a new medication (antihistamine)", ("medication",)),
        (NIGHT - dt.timedelta(days=2), "coffee after 18:00 & a glass of wine", ("caffeine", "alcohol")),
    ]
    return build_report("alice", summary, events, history, diary, tz=dt.UTC)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def pdf_text(data: bytes) -> str:
    """The text shown by an uncompressed matplotlib PDF with TrueType (fonttype 42) fonts: its
    content streams' TJ strings are 2-byte codes equal to the characters' code points."""
    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        if stream[:2] == b"x\x9c":  # a compressed stream (fonts) is not page text
            try:
                stream = zlib.decompress(stream)
            except zlib.error:
                continue
        for block in re.findall(rb"BT(.*?)ET", stream, re.S):
            line = bytearray()
            i = 0
            while i < len(block):
                if block[i : i + 1] != b"(":
                    i += 1
                    continue
                i += 1
                raw = bytearray()
                while block[i : i + 1] != b")":
                    if block[i : i + 1] == b"\\":
                        i += 1
                        escaped = block[i : i + 1]
                        if escaped.isdigit():
                            digits = re.match(rb"[0-7]{1,3}", block[i : i + 3]).group(0)
                            raw.append(int(digits, 8))
                            i += len(digits)
                            continue
                        raw += {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(escaped, escaped)
                    else:
                        raw += block[i : i + 1]
                    i += 1
                i += 1
                line += raw
            out.append(bytes(line).decode("utf-16-be", errors="replace"))
    return "\n".join(out)


def test_png_is_a_phone_shaped_page(report) -> None:
    data = render_bytes(report, "png")
    width, height = png_size(data)
    assert width == round(PHONE_WIDTH_IN * PHONE_DPI), "as wide as a phone screen in device pixels"
    assert 1.6 * width < height < 5 * width, "one tall page, read by scrolling"
    assert len(data) > 50_000, "a drawn page, not an empty canvas"


def test_pdf_is_one_a4_page_with_the_reports_words_as_text(report) -> None:
    with matplotlib.rc_context({"pdf.compression": 0}):
        data = render_bytes(report, "pdf")
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 1, "exactly one page"
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", data).group(1).split()]
    assert box[2] == pytest.approx(A4_IN[0] * 72, abs=1) and box[3] == pytest.approx(A4_IN[1] * 72, abs=1)
    text = pdf_text(data)
    flat = " ".join(text.split())
    stats = {s.label: s.value for s in report.stats}
    assert stats["PLM index"] in flat and float(stats["PLM index"][:-2]) > 15
    assert "15/h" in flat, "the threshold line is labelled"
    assert "does not diagnose" in flat and "It does not diagnose." in NOTICE
    assert report.headline in flat
    for signal in report.signals:  # the doctor-information block, word for word as in the HTML
        assert " ".join(signal.split()) in flat, signal[:60]
    assert any("more than two weeks" in s for s in report.signals)
    assert " ".join(DOCTOR_REASONS.split()) in flat and MEDICATION_NOTE in flat
    assert "coffee after 18:00 & a glass of wine" in flat, "the diary"
    assert "Night of Friday 01 March 2024" in flat
    for label in ("Timeline", "PLMs per hour", "Last 14 nights", "Sleep diary", "left", "right"):
        assert label in text, label
    page = render_html(report)
    assert stats["PLM index"] in page and report.headline.split(",")[0] in page, "HTML says the same"


def test_plm_report_writes_png_and_pdf_by_suffix(scored: dict, tmp_path: Path, capsys) -> None:
    import json

    path = tmp_path / "scored.json"
    path.write_text(json.dumps(scored))
    for name, magic in (("night.png", b"\x89PNG"), ("night.PDF", b"%PDF-")):
        out = tmp_path / name
        code = main(["report", "--subject", "dora", "--from-file", str(path), "--tz", "UTC", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert out.read_bytes().startswith(magic)
    out = tmp_path / "missing-dir" / "night.pdf"
    assert main(["report", "--subject", "dora", "--from-file", str(path), "--out", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_out_of_bed_shading_is_drawn_on_the_png(report) -> None:
    """The same report with an out-of-bed span differs on the page (a shaded band), and the legend says so."""
    import dataclasses

    assert report.start_s is not None and report.end_s is not None
    mid = (report.start_s + report.end_s) / 2
    shaded = dataclasses.replace(report, out_of_bed=((mid - 600.0, mid + 600.0),))
    plain = dataclasses.replace(report, out_of_bed=())
    assert render_bytes(shaded, "png") != render_bytes(plain, "png")
    assert "out of bed (leg upright)" in pdf_text(render_bytes(shaded, "pdf"))  # in the legend ...
    assert "out of bed" not in pdf_text(render_bytes(plain, "pdf"))  # ... only when it is drawn


def test_pdf_report_prints_one_line_not_the_font_subsetters_log(scored: dict, tmp_path: Path) -> None:
    """`plm report --out night.pdf` logs at INFO like every command; fontTools' ~100 INFO lines about
    subsetting the embedded font are not for the person who asked for a report."""
    import json
    import subprocess
    import sys

    path = tmp_path / "scored.json"
    path.write_text(json.dumps(scored))
    out = tmp_path / "night.pdf"
    cmd = [sys.executable, "-m", "plm.cli", "report", "--subject", "dora", "--from-file", str(path), "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "fontTools" not in run.stderr and "pruned" not in run.stderr, run.stderr[:500]
    assert run.stdout.startswith(f"wrote {out}") and len((run.stdout + run.stderr).splitlines()) == 1
    assert out.read_bytes().startswith(b"%PDF-")


def test_png_and_pdf_show_no_markup_around_plm_note(report) -> None:
    """The empty-diary hint names the command; the HTML sets it as code, the drawn page as plain words."""
    import dataclasses

    bare = dataclasses.replace(report, diary=())
    flat = " ".join(pdf_text(render_bytes(bare, "pdf")).split())
    assert "Add one with the command plm note." in flat and "`" not in flat
    assert "<code>plm note</code>" in render_html(bare)
