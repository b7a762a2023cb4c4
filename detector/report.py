"""The one-page night report: a pure data model (:func:`build_report`) and an HTML rendering.

The report answers what a person asks in the morning -- how many periodic leg movements, when, is it
getting better or worse, is it worth showing a doctor -- and says plainly that it measures and does
not diagnose. The "reasons to see a doctor" of docs/background are shown as *information* the
monitor can give (persistence over two weeks, movements while awake at rest, a change after a
diary-marked new medication, both legs), never as a diagnosis, and never as advice to change a
medication.

HTML is the primary format: self-contained (inline CSS and SVG, no script), readable on a phone
(fluid layout, SVG scales) and on paper (print stylesheet, A4). Loading data (InfluxDB or a scored
file) lives in :mod:`detector.report_cli`; this module does no I/O.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PLM_THRESHOLD = 15.0
HISTORY_NIGHTS = 14
NOTICE = (
    "This report measures leg movements with ankle accelerometers. It does not diagnose. Sleep and wake "
    "are estimated from activity, not measured. A PLM index above 15 per hour is the threshold sleep "
    "medicine uses for adults; one night varies a lot, several weeks say more."
)
MEDICATION_NOTE = (
    "Do not start, stop or change a medication because of these numbers; discuss them with the doctor "
    "who prescribed it."
)
DOCTOR_REASONS = (
    "Reasons people are commonly advised to see a doctor about leg twitching or movements: they do not "
    "improve after lifestyle changes, last more than two weeks, start when resting, start after a new "
    "medication, affect more than one part of the body, or come with other worrying symptoms. This monitor "
    "can show some of these; it cannot tell their cause."
)
NO_SIGNALS = "None of the signals below showed up in the recorded nights."
LEGEND = (  # (label, colour) of the timeline, shared by the HTML and the PNG/PDF renderings
    ("PLM", "#d32f2f"),
    ("leg movement", "#ef8a17"),
    ("long movement", "#7b1fa2"),
    ("twitch", "#c9a400"),
    ("PLM series", "rgba(211,47,47,.25)"),
)
OUT_OF_BED = ("out of bed (leg upright)", "#c3c8d2")
OUT_OF_BED_FILL = OUT_OF_BED[1]


@dataclass(frozen=True)
class Stat:
    label: str
    value: str
    note: str = ""
    high: bool = False


@dataclass(frozen=True)
class Movement:
    onset: float
    duration: float
    side: str
    kind: str
    plm: bool


@dataclass(frozen=True)
class HistoryNight:
    date: dt.date
    plm_index: float | None
    median7: float | None = None

    @property
    def above(self) -> bool:
        return self.plm_index is not None and self.plm_index > PLM_THRESHOLD


@dataclass(frozen=True)
class DiaryEntry:
    date: dt.date
    text: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class NightReport:
    subject: str
    night: dt.date
    tz: dt.tzinfo
    start_s: float | None
    end_s: float | None
    stats: tuple[Stat, ...]
    movements: tuple[Movement, ...]
    series: tuple[tuple[float, float, int], ...]
    hourly: tuple[tuple[float, int, int], ...]  # (hour start, PLMs, LMs)
    history: tuple[HistoryNight, ...]
    diary: tuple[DiaryEntry, ...]
    signals: tuple[str, ...]
    headline: str
    notice: str = NOTICE
    rules: str = "wasm2016"
    data_notes: tuple[str, ...] = field(default=())
    out_of_bed: tuple[tuple[float, float], ...] = field(default=())  # spans with the legs upright


def _fmt(value: Any, digits: int | None = 1, unit: str = "") -> str:
    """``digits=None``: a count. InfluxDB's JSON turns 0.0 into 0, so the kind comes from the caller."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if digits is None:
        return f"{round(value)}{unit}"
    return f"{float(value):.{digits}f}{unit}"


def rolling_median(values: Sequence[float | None], window: int = 7) -> list[float | None]:
    """Trailing median over the last ``window`` entries (skipping missing nights); None until 3 exist."""
    out: list[float | None] = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(statistics.median(chunk) if len(chunk) >= 3 else None)
    return out


def _signals(
    summary: Mapping[str, Any],
    movements: Sequence[Movement],
    history: Sequence[HistoryNight],
    diary: Sequence[DiaryEntry],
    night: dt.date,
) -> list[str]:
    """Observations that match the reasons people are advised to see a doctor, as information."""
    out: list[str] = []
    recorded = [h for h in history if h.plm_index is not None]
    above = [h for h in recorded if h.above]
    if recorded:
        span_days = (recorded[-1].date - recorded[0].date).days + 1
        if above and span_days >= 14 and len(above) * 2 >= len(recorded):
            out.append(
                f"The PLM index was above {PLM_THRESHOLD:g}/h on {len(above)} of {len(recorded)} recorded nights "
                f"over {span_days} days. Movements that persist for more than two weeks are one of the reasons "
                "people are advised to talk to a doctor."
            )
        elif above:
            out.append(
                f"The PLM index was above {PLM_THRESHOLD:g}/h on {len(above)} of {len(recorded)} recorded nights "
                f"in the last {HISTORY_NIGHTS} nights. Keep recording: a pattern over two weeks says more than "
                "single nights."
            )
    plmw = summary.get("plmw_index")
    wake_h = summary.get("wake_in_bed_h")
    if plmw is not None and plmw >= PLM_THRESHOLD and (wake_h is None or wake_h >= 0.25):
        out.append(
            f"Periodic leg movements also happened while you were probably awake and resting in bed "
            f"({plmw:.0f} per hour of estimated wake). Movements that start at rest are something doctors ask about."
        )
    meds = sorted((d for d in diary if "medication" in d.tags), key=lambda d: d.date)
    if meds:
        start = meds[0].date
        before = [h.plm_index for h in recorded if h.date < start]
        after = [h.plm_index for h in recorded if h.date >= start]
        change = ""
        if before and after:
            change = (
                f" The median PLM index was {statistics.median(before):.0f}/h on {len(before)} night(s) before "
                f"and {statistics.median(after):.0f}/h on {len(after)} night(s) from then on."
            )
        out.append(
            f"Your diary mentions a medication on {start:%a %d %b} (\u201c{meds[0].text[:80]}\u201d).{change} "
            f"Leg movements that start after a new medication are worth mentioning to a doctor. {MEDICATION_NOTE}"
        )
    sides = {m.side for m in movements if m.kind != "twitch"}
    if {"left", "right"} <= sides or "bilateral" in sides:
        both = sum(1 for m in movements if m.side == "bilateral")
        out.append(
            f"Movements were recorded on both legs ({both} at the same time on both). The monitor only sees "
            "the ankles; tell a doctor about other body parts yourself."
        )
    return out


def build_report(
    subject: str,
    summary: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    history: Sequence[tuple[dt.date, float | None]] = (),
    diary: Sequence[tuple[dt.date, str, Sequence[str]]] = (),
    night: dt.date | None = None,
    tz: dt.tzinfo | None = None,
) -> NightReport:
    """The content of a night report from the night summary (``plm score --json`` fields, or the
    InfluxDB ``night`` point), its movements, the PLM index of recent nights and the diary."""
    zone = tz or dt.UTC
    start = summary.get("start")
    end = summary.get("end")
    if night is None:
        if start is None:
            raise ValueError("the night date is needed when the summary has no start time")
        local = dt.datetime.fromtimestamp(start, zone)
        night = (local - dt.timedelta(hours=12)).date()
    movements = tuple(
        sorted(
            (
                Movement(float(e["onset"]), float(e["duration"]), str(e["side"]), str(e["kind"]), bool(e.get("plm")))
                for e in events
            ),
            key=lambda m: m.onset,
        )
    )
    series = tuple(
        (float(s["start"]), float(s["end"]), int(s["count"]))
        for s in summary.get("series", [])
        if s.get("start") is not None and s.get("end") is not None
    )
    out_of_bed = tuple(
        (float(s["start"]), float(s["end"]))
        for s in summary.get("out_of_bed") or []
        if s.get("start") is not None and s.get("end") is not None and s["end"] > s["start"]
    )
    hourly = tuple(
        (float(h["start"]), int(h.get("plm_count") or 0), int(h.get("lm_count") or 0))
        for h in summary.get("per_hour", [])
    )
    nights = {d: v for d, v in history}
    if summary.get("plm_index") is not None or night not in nights:
        nights[night] = summary.get("plm_index")  # the reported night's own summary wins
    days = [night - dt.timedelta(days=k) for k in range(HISTORY_NIGHTS - 1, -1, -1)]
    values = [nights.get(d) for d in days]
    medians = rolling_median(values)
    hist = tuple(HistoryNight(d, v, m) for d, v, m in zip(days, values, medians, strict=True))
    notes = tuple(
        sorted(
            (
                DiaryEntry(d, text, tuple(tags))
                for d, text, tags in diary
                if night - dt.timedelta(days=13) <= d <= night
            ),
            key=lambda e: e.date,
        )
    )
    plm_index = summary.get("plm_index")
    high = plm_index is not None and plm_index > PLM_THRESHOLD
    stats = (
        Stat("PLM index", _fmt(plm_index, 1, "/h"), "PLMs per hour in bed", high),
        Stat(
            "Estimated PLMS index",
            _fmt(summary.get("plms_index"), 1, "/h"),
            "per hour of estimated sleep",
            (summary.get("plms_index") or 0) > PLM_THRESHOLD,
        ),
        Stat("PLMs", _fmt(summary.get("plm_count"), None), "in periodic series"),
        Stat("Leg movements", _fmt(summary.get("lm_count"), None), "0.5–10 s (15 s on both legs)"),
        Stat("PLM series", _fmt(summary.get("series_count"), None), "≥ 4 movements 10–90 s apart"),
        Stat("Periodicity index", _fmt(summary.get("periodicity_index"), 2), "PLMs / candidate LMs"),
        Stat("Time in bed", _fmt(summary.get("time_in_bed_h"), 1, " h"), "estimated from posture"),
        Stat("Twitches", _fmt(summary.get("twitch_count"), None), "shorter than 0.5 s, counted apart"),
    )
    recorded = [h for h in hist if h.plm_index is not None]
    above = sum(1 for h in recorded if h.above)
    if plm_index is None:
        headline = "No PLM index for this night (not enough data)."
    else:
        headline = (
            f"{_fmt(summary.get('plm_count'), None)} periodic leg movements, {plm_index:.1f} per hour in bed "
            f"({'above' if high else 'at or below'} {PLM_THRESHOLD:g}/h). "
            f"{above} of the last {len(recorded)} recorded nights were above {PLM_THRESHOLD:g}/h."
        )
    data_notes = []
    missing = summary.get("missing_fraction")
    if missing is not None and missing > 0.1:
        data_notes.append(f"{missing * 100:.0f} % of the night has no data from a sensor; counts are lower than real.")
    return NightReport(
        subject=subject,
        night=night,
        tz=zone,
        start_s=start,
        end_s=end,
        stats=stats,
        movements=movements,
        series=series,
        hourly=hourly,
        history=hist,
        diary=notes,
        signals=tuple(_signals(summary, movements, hist, notes, night)),
        headline=headline,
        rules=str(summary.get("rules") or "wasm2016"),
        data_notes=tuple(data_notes),
        out_of_bed=out_of_bed,
    )


# ----------------------------------------------------------------------------------------- HTML

_CSS = """
:root{--red:#c62828;--ink:#1d2330;--muted:#5b6475;--line:#d8dce4;--plm:#d32f2f;--lm:#ef8a17;--long:#7b1fa2;
--tw:#c9a400;--series:rgba(211,47,47,.13)}
*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
margin:0;background:#fff}main{max-width:960px;margin:0 auto;padding:16px}
h1{font-size:1.35rem;margin:0 0 2px}h2{font-size:1.02rem;margin:18px 0 6px;border-bottom:1px solid var(--line);
padding-bottom:3px}p{margin:4px 0}.muted{color:var(--muted);font-size:.88rem}
.notice{border-left:4px solid #455a64;background:#f3f5f8;padding:8px 10px;font-size:.9rem;margin:10px 0}
.headline{font-size:1.05rem;font-weight:600;margin:8px 0}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:8px}
.stat{border:1px solid var(--line);border-radius:6px;padding:6px 8px}.stat b{display:block;font-size:1.3rem}
.stat.high{border-color:var(--red)}.stat.high b{color:var(--red)}.stat span{font-size:.78rem;color:var(--muted)}
svg{width:100%;height:auto;display:block}svg text{font:11px system-ui,sans-serif;fill:#333}
ul{margin:4px 0;padding-left:20px}li{margin:3px 0}
table{border-collapse:collapse;width:100%;font-size:.88rem}td,th{border-bottom:1px solid var(--line);padding:3px 6px;
text-align:left}.legend span{display:inline-block;margin-right:12px;font-size:.8rem}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
@media print{@page{size:A4;margin:12mm}body{font-size:10.5pt}main{max-width:none;padding:0}
section{break-inside:avoid}.notice{background:none}}
"""

_KIND_COLOUR = {"plm": "#d32f2f", "lm": "#ef8a17", "long": "#7b1fa2", "twitch": "#c9a400"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _clock(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%H:%M")


def legend_of(report: NightReport) -> tuple[tuple[str, str], ...]:
    """The timeline's legend: the out-of-bed shading only when the report has it (a night scored from files;
    the live detector's per-minute posture is not used for it)."""
    return (*LEGEND, OUT_OF_BED) if report.out_of_bed else LEGEND


def timeline_svg(report: NightReport, width: int = 900) -> str:
    """Movements per leg (both-leg movements on both rows), PLM series shaded, hourly ticks."""
    if report.start_s is None or report.end_s is None or report.end_s <= report.start_s:
        return '<p class="muted">No recording times for a timeline.</p>'
    left_pad, top, row_h, gap = 54, 18, 26, 8
    span = report.end_s - report.start_s
    plot_w = width - left_pad - 8
    height = top + 2 * row_h + gap + 24

    def x(ts: float) -> float:
        return left_pad + (ts - report.start_s) / span * plot_w

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Timeline of leg movements">']
    for s0, s1, count in report.series:
        parts.append(
            f'<rect x="{x(s0):.1f}" y="{top - 4}" width="{max(x(s1) - x(s0), 1):.1f}" height="{2 * row_h + gap + 8}" '
            f'fill="rgba(211,47,47,.13)"><title>PLM series: {count} movements</title></rect>'
        )
    rows = {"left": top, "right": top + row_h + gap}
    for side, y in rows.items():
        parts.append(f'<text x="4" y="{y + row_h / 2 + 4}">{side}</text>')
        parts.append(f'<rect x="{left_pad}" y="{y}" width="{plot_w}" height="{row_h}" fill="#f6f7f9"/>')
    for s0, s1 in report.out_of_bed:  # movements there are shown, not counted as LMs of the night
        parts.append(
            f'<rect x="{x(s0):.1f}" y="{top}" width="{max(x(s1) - x(s0), 1):.1f}" height="{2 * row_h + gap}" '
            f'fill="{OUT_OF_BED_FILL}" fill-opacity=".55"><title>out of bed (leg upright): {_clock(s0, report.tz)}'
            f"-{_clock(s1, report.tz)}</title></rect>"
        )
    for m in report.movements:
        state = "plm" if m.plm else m.kind
        colour = _KIND_COLOUR.get(state, "#666")
        sides = ("left", "right") if m.side == "bilateral" else (m.side,)
        for side in sides:
            if side not in rows:
                continue
            y = rows[side]
            w = max(x(m.onset + m.duration) - x(m.onset), 1.2)
            parts.append(
                f'<rect x="{x(m.onset):.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{colour}"/>'
            )
    base = top + 2 * row_h + gap
    first_hour = math.ceil(report.start_s / 3600) * 3600
    for ts in range(int(first_hour), int(report.end_s) + 1, 3600):
        parts.append(
            f'<line x1="{x(ts):.1f}" x2="{x(ts):.1f}" y1="{top}" y2="{base + 4}" stroke="#aab" stroke-width=".5"/>'
        )
        parts.append(f'<text x="{x(ts):.1f}" y="{base + 18}" text-anchor="middle">{_clock(ts, report.tz)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    threshold: float | None = None,
    line: Sequence[float | None] | None = None,
    width: int = 900,
    height: int = 170,
    title: str = "",
) -> str:
    """A small bar chart; bars above ``threshold`` red, an optional line (e.g. the 7-night median)."""
    known = [v for v in values if v is not None] + [v for v in (line or []) if v is not None]
    top_value = max([*known, threshold or 0, 1.0]) * 1.15
    left_pad, bottom, top = 34, 34, 10
    plot_h = height - bottom - top
    n = max(len(values), 1)
    slot = (width - left_pad - 6) / n

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    parts.append(f'<line x1="{left_pad}" x2="{width - 6}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999"/>')
    parts.append(
        f'<text x="{left_pad - 4}" y="{y(top_value / 1.15):.1f}" text-anchor="end">{top_value / 1.15:.0f}</text>'
    )
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        cx = left_pad + slot * i + slot * 0.15
        if v is None:
            parts.append(
                f'<text x="{cx + slot * 0.35:.1f}" y="{y(0) - 4:.1f}" text-anchor="middle" fill="#999">·</text>'
            )
        else:
            red = threshold is not None and v > threshold
            parts.append(
                f'<rect x="{cx:.1f}" y="{y(v):.1f}" width="{slot * 0.7:.1f}" height="{max(y(0) - y(v), 0.5):.1f}" '
                f'fill="{"#d32f2f" if red else "#5c7cfa"}"><title>{_e(label)}: {v:.1f}</title></rect>'
            )
            parts.append(f'<text x="{cx + slot * 0.35:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle">{v:.0f}</text>')
        parts.append(
            f'<text x="{cx + slot * 0.35:.1f}" y="{height - bottom + 14}" text-anchor="middle">{_e(label)}</text>'
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{left_pad}" x2="{width - 6}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" stroke="#d32f2f" '
            f'stroke-dasharray="5 4"/><text x="{width - 8}" y="{y(threshold) - 3:.1f}" text-anchor="end" '
            f'fill="#d32f2f">{threshold:g}/h</text>'
        )
    if line:
        pts = [f"{left_pad + slot * i + slot * 0.5:.1f},{y(v):.1f}" for i, v in enumerate(line) if v is not None]
        if len(pts) > 1:
            parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#1b2a6b" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: NightReport) -> str:
    """The report as one self-contained HTML page (no script, no external resources)."""
    r = report
    when = ""
    if r.start_s is not None and r.end_s is not None:
        when = f"{_clock(r.start_s, r.tz)}–{_clock(r.end_s, r.tz)}"
    stats = "".join(
        f'<div class="stat{" high" if s.high else ""}">{_e(s.label)}<b>{_e(s.value)}</b><span>{_e(s.note)}</span></div>'
        for s in r.stats
    )
    hourly = (
        bars_svg(
            [_clock(h[0], r.tz) for h in r.hourly], [float(h[1]) for h in r.hourly], title="PLMs per hour", height=150
        )
        if r.hourly
        else '<p class="muted">No hourly counts.</p>'
    )
    history = bars_svg(
        [f"{h.date:%d.%m}" for h in r.history],
        [h.plm_index for h in r.history],
        threshold=PLM_THRESHOLD,
        line=[h.median7 for h in r.history],
        title="PLM index, last 14 nights",
    )
    recorded = [h for h in r.history if h.plm_index is not None]
    above = sum(1 for h in recorded if h.above)
    diary = (
        "<table><tr><th>night of</th><th>note</th><th>tags</th></tr>"
        + "".join(
            f"<tr><td>{d.date:%a %d %b}</td><td>{_e(d.text)}</td><td>{_e(', '.join(d.tags))}</td></tr>" for d in r.diary
        )
        + "</table>"
        if r.diary
        else '<p class="muted">No diary notes in the last 14 nights. Add one with <code>plm note</code>.</p>'
    )
    signals = (
        "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in r.signals) + "</ul>"
        if r.signals
        else f'<p class="muted">{_e(NO_SIGNALS)}</p>'
    )
    data_notes = "".join(f'<p class="muted">{_e(n)}</p>' for n in r.data_notes)
    legend = "".join(f'<span><i style="background:{c}"></i>{label}</span>' for label, c in legend_of(r))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Night report {r.night:%Y-%m-%d} – {_e(r.subject)}</title>
<style>{_CSS}</style></head>
<body><main>
<header><h1>Night of {r.night:%A %d %B %Y}</h1>
<p class="muted">{_e(r.subject)} · {when} · scoring rules {_e(r.rules)} · leg-movement monitor</p></header>
<p class="notice">{_e(r.notice)}</p>
<p class="headline">{_e(r.headline)}</p>
{data_notes}
<section><h2>Indices</h2><div class="stats">{stats}</div></section>
<section><h2>Timeline</h2>{timeline_svg(r)}<p class="legend">{legend}</p></section>
<section><h2>PLMs per hour</h2>{hourly}</section>
<section><h2>Last 14 nights</h2>{history}
<p class="muted">PLM index per night; red above {PLM_THRESHOLD:g}/h; line: median of the last 7 nights.
{above} of {len(recorded)} recorded nights above {PLM_THRESHOLD:g}/h.</p></section>
<section><h2>Sleep diary</h2>{diary}</section>
<section><h2>Worth knowing before a doctor's visit</h2>{signals}
<p class="muted">{_e(DOCTOR_REASONS)} {_e(MEDICATION_NOTE)}</p></section>
<footer><p class="muted">{_e(NOTICE)}</p></footer>
</main></body></html>
"""
