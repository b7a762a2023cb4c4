"""Night report: the pure model (indices, 14 nights, signals phrased as information), the HTML
(self-contained, print and phone friendly), and ``plm report`` from a real influxd filled by the
pipeline and from a ``plm score --json`` file."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path

import pytest

from detector.reporting.report import KIND_COLOURS, PLM_THRESHOLD, build_report, render_html, rolling_median
from detector.scoring.scorer import score_arrays
from plm.cli import main
from simulator import simulate_night

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_fill import fill_influx_live

NIGHT = dt.date(2024, 3, 1)
START = dt.datetime(2024, 3, 1, 22, 30, tzinfo=dt.UTC).timestamp()


@pytest.fixture(scope="module")
def scored() -> dict:
    night = simulate_night("rls-severe", seed=5, rate_hz=25, duration_h=1.0, start_unix_s=START)
    legs = night.legs
    return score_arrays((legs["left"].t, legs["left"].xyz), (legs["right"].t, legs["right"].xyz)).to_dict()


def split(doc: dict) -> tuple[dict, list]:
    summary = dict(doc)
    return summary, summary.pop("events")


def history(values: list[float | None], last: dt.date = NIGHT) -> list[tuple[dt.date, float | None]]:
    return [(last - dt.timedelta(days=len(values) - 1 - i), v) for i, v in enumerate(values)]


def test_rolling_median_is_trailing_and_skips_missing_nights() -> None:
    assert rolling_median([1, 2, None, 30, 4, 5, 6, 7, 8]) == [None, None, None, 2, 3, 4, 4.5, 5.5, 6.5]
    assert rolling_median([None] * 5) == [None] * 5


def test_model_shows_the_night_and_the_last_14(scored: dict) -> None:
    summary, events = split(scored)
    report = build_report("alice", summary, events, history([3.0, 40.0, 18.0], NIGHT - dt.timedelta(days=1)), tz=dt.UTC)
    assert report.night == NIGHT
    stats = {s.label: s for s in report.stats}
    assert stats["PLM index"].value == f"{summary['plm_index']:.1f}/h"
    assert stats["PLM index"].high == (summary["plm_index"] > PLM_THRESHOLD)
    assert stats["PLMs"].value == str(summary["plm_count"])
    assert len(report.history) == 14 and report.history[-1].date == NIGHT
    assert report.history[-1].plm_index == summary["plm_index"], "tonight is part of the last 14 nights"
    assert [h.plm_index for h in report.history[-3:-1]] == [40.0, 18.0]
    assert len(report.movements) == len(events)
    assert sum(m.plm for m in report.movements) == summary["plm_count"]
    assert "does not diagnose" in report.notice


def test_signals_are_information_not_diagnosis(scored: dict) -> None:
    summary, events = split(scored)
    summary["plm_index"] = 30.0
    weeks = history([25.0, 31.0, None, 22.0, 18.0, 40.0, 27.0, 12.0, 35.0, 29.0, 33.0, 21.0, 26.0])
    weeks = [(d - dt.timedelta(days=1), v) for d, v in weeks]
    diary = [(NIGHT - dt.timedelta(days=6), "started a new medication", ("medication",))]
    report = build_report("alice", summary, events, weeks, diary, tz=dt.UTC)
    text = " ".join(report.signals)
    assert "more than two weeks" in text and "above 15/h on most recorded nights over 14 days" in text
    page = render_html(report)
    assert len(re.findall(r"\b12 of\b", page)) == 1, "the count of nights above 15/h is said once"
    assert "Above 15/h on 12 of the 13 recorded nights." in page
    assert "medication" in text and "discuss them with the doctor" in text
    assert "both legs" in text
    lowered = text.lower()
    for forbidden in ("you have", "diagnos", "disorder", "stop taking", "you should stop"):
        assert forbidden not in lowered, forbidden
    quiet = build_report("bob", {**summary, "plm_index": 2.0, "plmw_index": 0.0}, [], history([1.0, 2.0]), tz=dt.UTC)
    assert quiet.signals == ()


def test_html_is_self_contained_and_readable_on_phone_and_paper(scored: dict) -> None:
    summary, events = split(scored)
    diary = [(NIGHT, 'coffee <after> 18:00 & "wine"', ("caffeine", "alcohol"))]
    page = render_html(build_report("alice", summary, events, history([12.0, 22.0]), diary, tz=dt.UTC))
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower() and not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert 'name="viewport"' in page and "@media print" in page
    assert page.count("<svg") == 3  # timeline, hourly bars, last 14 nights
    assert "coffee &lt;after&gt; 18:00 &amp; &quot;wine&quot;" in page, "diary text is escaped"
    assert "does not diagnose" in page
    assert f"{summary['plm_index']:.1f}/h" in page
    plm_bars = page.count(f'fill="{KIND_COLOURS["plm"]}"/>')
    assert plm_bars >= summary["plm_count"], "one hour is not dense: every PLM is drawn on the timeline"
    assert "Night of Friday 01 March 2024" in page


@pytest.mark.services
def test_plm_report_from_influxd_filled_by_the_pipeline(influxd_factory, mosquitto, tmp_path: Path) -> None:
    server = influxd_factory()
    fill = fill_influx_live(server, mosquitto, tmp_path / "detector", "carol", nights=4, duration_h=0.5)
    config = tmp_path / "plm.toml"
    config.write_text(f'[influx]\nurl = "{server.url}"\napi = 1\n')
    out = tmp_path / "night.html"
    assert main(["--config", str(config), "report", "--subject", "carol", "--out", str(out)]) == 0
    page = out.read_text()
    last = fill.nights[-1]
    assert f"{last.summary['plm_index']:.1f}/h" in page
    assert f"Night of {dt.date.fromtimestamp(last.anchor_s):%A %d %B %Y}" in page
    for night in fill.nights:  # the last-14 chart holds every filled night
        assert f"{night.summary['plm_index']:.1f}</title>" in page
    assert "started a new medication; slept badly" in page
    assert "medication" in page and "discuss them with the doctor" in page
    first = fill.nights[0]
    out2 = tmp_path / "first.html"
    day = dt.date.fromtimestamp(first.anchor_s).isoformat()
    assert main(["--config", str(config), "report", "--subject", "carol", "--night", day, "--out", str(out2)]) == 0
    assert f"{first.summary['plm_index']:.1f}/h" in out2.read_text()
    assert main(["--config", str(config), "report", "--subject", "nobody", "--out", str(out2)]) == 2


def test_plm_report_from_a_scored_file(scored: dict, tmp_path: Path, capsys) -> None:
    path = tmp_path / "scored.json"
    path.write_text(json.dumps(scored))
    out = tmp_path / "n.html"
    assert main(["report", "--subject", "dora", "--from-file", str(path), "--tz", "UTC", "--out", str(out)]) == 0
    assert f"{scored['plm_index']:.1f}/h" in out.read_text()
    assert main(["report", "--subject", "dora", "--from-file", str(path), "--out", str(tmp_path / "n.svg")]) == 2
    assert ".html, .png or .pdf" in capsys.readouterr().err
    path.write_text("{}")
    assert main(["report", "--subject", "dora", "--from-file", str(path), "--out", str(out)]) == 2
    assert "plm score --json" in capsys.readouterr().err


def test_out_of_bed_spans_are_shaded_on_the_timeline(scored: dict) -> None:
    """Movements while the legs are upright are shown but not counted: the timeline says where that was."""
    summary, events = split(scored)
    up = {"start": START + 600.0, "end": START + 900.0}
    page = render_html(build_report("alice", {**summary, "out_of_bed": [up]}, events, tz=dt.UTC))
    assert "<title>out of bed (leg upright): 22:40-22:45</title>" in page
    assert "out of bed (leg upright)</span>" in page  # in the legend
    plain = render_html(build_report("alice", {**summary, "out_of_bed": []}, events, tz=dt.UTC))
    assert "out of bed" not in plain


@pytest.mark.services
def test_report_from_influxd_shades_the_minutes_no_leg_was_in_bed(influxd_factory, tmp_path: Path) -> None:
    """The live detector stores in_bed per leg and minute; a report read back from InfluxDB shades the
    minutes where neither leg was in bed, as one read from `plm score --json` shades its out_of_bed spans."""
    import tempfile

    from detector.reporting.data import InfluxQL, load_from_influx
    from detector.storage import schema
    from detector.storage.influx import InfluxSink
    from plm.config import InfluxSettings

    server = influxd_factory()
    settings = InfluxSettings(url=server.url, api=1, bucket=server.database)
    start = dt.datetime(2024, 3, 1, 22, 30, tzinfo=dt.UTC).timestamp()
    lines = [schema.night_point("erin", start, {"plm_index": 12.0, "lm_count": 20, "end_s": start + 1200}, final=True)]
    out = {"left": {10, 11, 12, 13, 16}, "right": {10, 11, 12, 16}}  # minute 13: the right leg still in bed
    for side, minutes in out.items():
        for m in range(20):
            tags = {"subject": "erin", "side": side}
            lines.append(schema.line(schema.ACTIVITY, tags, {"in_bed": m not in minutes}, schema.to_ms(start + 60 * m)))
    with tempfile.TemporaryDirectory() as tmp:
        sink = InfluxSink(settings, Path(tmp) / "outbox.sqlite")
        try:
            sink.put(lines)
            assert sink.flush(30)
        finally:
            sink.close()
    data = load_from_influx(InfluxQL(settings), "erin", dt.date(2024, 3, 1), dt.UTC)
    assert data["summary"]["out_of_bed"] == [
        {"start": start + 600, "end": start + 780},
        {"start": start + 960, "end": start + 1020},
    ]
    page = render_html(build_report("erin", data["summary"], data["events"], tz=dt.UTC, night=data["night"]))
    assert "<title>out of bed (leg upright): 22:40-22:43</title>" in page
