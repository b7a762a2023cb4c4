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
NO_DIARY = "No diary notes in the last 14 nights. Add one with the command {command}."
"""``{command}`` is ``plm note``: the HTML sets it as code, the PNG/PDF as plain words (no markup)."""

# The timeline's colours, shared by the HTML and the PNG/PDF renderings. From Okabe & Ito's palette for
# colour-blind readers: vermillion, blue, black and sky blue stay apart under simulated deuteranopia,
# protanopia and tritanopia (tests/test_report_timeline.py checks that with Machado et al. 2009). Each kind
# also has its own lane in a leg's row, so the position tells the kind even where colours fail.
KIND_COLOURS = {"plm": "#d55e00", "lm": "#0072b2", "long": "#000000", "twitch": "#56b4e9"}
SERIES_COLOUR = "#f0b890"  # a light vermillion: the PLM series strip above the legs
LANE_COLOUR = "#eef0f4"  # the background of an empty lane
LEGEND = (  # (label, colour) of the timeline
    ("PLM", KIND_COLOURS["plm"]),
    ("leg movement", KIND_COLOURS["lm"]),
    ("long movement", KIND_COLOURS["long"]),
    ("twitch", KIND_COLOURS["twitch"]),
    ("PLM series", SERIES_COLOUR),
)
NAVY = "#1b2a6b"  # the 7-night median line
OUT_OF_BED = ("out of bed (leg upright)", "#c3c8d2")
OUT_OF_BED_FILL = OUT_OF_BED[1]
NONWEAR = ("sensor off the ankle", "#7d8594")
NONWEAR_FILL = NONWEAR[1]
LANES = ("plm", "lm", "twitch")
"""A leg's row, top to bottom: PLMs, other leg movements (long ones included), twitches."""
LANE_LABELS = {"plm": "PLM", "lm": "LM", "twitch": "twitch"}
_LANE_OF = {"plm": "plm", "lm": "lm", "long": "lm", "twitch": "twitch"}
TIMELINE_WIDTH = 840.0
"""The plot width (HTML px) at which both renderings decide whether marks overlap, so they decide alike."""
MIN_MARK_PX = 1.5
DENSE_OVERLAP = 0.15
"""Per-minute density instead of one mark per movement once this share of neighbouring marks in a lane
would touch at :data:`TIMELINE_WIDTH`."""
DENSITY_FULL = 3
"""In a per-minute density lane a column is full height at this many movements started in the minute."""


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
    nonwear: tuple[tuple[str, float, float], ...] = field(default=())  # (side, start, end): sensor off the ankle


@dataclass(frozen=True)
class Mark:
    """One drawn item of a timeline lane: a movement (``count`` 1), or in a dense night one minute
    holding ``count`` movement onsets, drawn :func:`density_height` tall."""

    start: float
    end: float
    colour: str
    count: int = 1


@dataclass(frozen=True)
class Timeline:
    dense: bool
    lanes: dict[tuple[str, str], tuple[Mark, ...]]  # (side, lane) -> marks
    series: tuple[tuple[float, float, int], ...]


def density_height(count: int) -> float:
    """The share of a lane's height a per-minute column takes: 1/3 for one movement, full at three or more."""
    return min(count, DENSITY_FULL) / DENSITY_FULL


def timeline_of(report: NightReport) -> Timeline:
    """What both renderings draw on the timeline: per leg and lane, one mark per movement, or -- when marks
    would overlap at :data:`TIMELINE_WIDTH` (a dense night on a long line) -- one column per minute whose
    height says how many movements started in it. A movement of both legs is drawn on both."""
    per_lane: dict[tuple[str, str], list[Movement]] = {(side, lane): [] for side in ("left", "right") for lane in LANES}
    for m in report.movements:
        lane = "plm" if m.plm else _LANE_OF.get(m.kind)
        if lane is None:
            continue
        for side in ("left", "right") if m.side == "bilateral" else (m.side,):
            if (side, lane) in per_lane:
                per_lane[(side, lane)].append(m)
    start, end = report.start_s, report.end_s
    span = (end - start) if start is not None and end is not None and end > start else None

    def colour(m: Movement) -> str:
        return KIND_COLOURS["plm"] if m.plm else KIND_COLOURS.get(m.kind, "#666666")

    dense = span is not None and _overlap_share(per_lane.values(), span) > DENSE_OVERLAP
    lanes: dict[tuple[str, str], tuple[Mark, ...]] = {}
    t0, t1 = start or 0.0, end or 0.0  # a dense timeline has both (dense needs a span)
    for key, moves in per_lane.items():
        if not dense:
            lanes[key] = tuple(Mark(m.onset, m.onset + m.duration, colour(m)) for m in moves)
            continue
        minutes: dict[int, list[Movement]] = {}
        for m in moves:
            minutes.setdefault(int((m.onset - t0) // 60), []).append(m)
        lanes[key] = tuple(
            Mark(
                t0 + 60.0 * k,
                min(t0 + 60.0 * (k + 1), t1),
                KIND_COLOURS["long"] if any(m.kind == "long" and not m.plm for m in ms) else colour(ms[0]),
                len(ms),
            )
            for k, ms in sorted(minutes.items())
        )
    return Timeline(dense, lanes, report.series)


def _overlap_share(lanes: Any, span: float) -> float:
    """The share of neighbouring marks (in any one lane) that would touch or overlap when the night is
    drawn :data:`TIMELINE_WIDTH` px wide with marks at least :data:`MIN_MARK_PX` wide."""
    scale = TIMELINE_WIDTH / span
    pairs = touching = 0
    for moves in lanes:
        last_end = None
        for m in sorted(moves, key=lambda m: m.onset):
            x0 = m.onset * scale
            if last_end is not None:
                pairs += 1
                touching += x0 < last_end + 1.0
            last_end = max(x0 + max(m.duration * scale, MIN_MARK_PX), last_end or -math.inf)
    return touching / pairs if pairs else 0.0


def history_caption(report: NightReport) -> str:
    """The caption of the last-14-nights chart, with the only count of nights above the threshold."""
    recorded = [h for h in report.history if h.plm_index is not None]
    above = sum(1 for h in recorded if h.above)
    line = (
        "line: median of the last 7 recorded nights"
        if any(h.median7 is not None for h in report.history)
        else "a line of the 7-night median appears from the third recorded night"
    )
    return f"PLM index per night; red above {PLM_THRESHOLD:g}/h; {line}. {nights_above(above, len(recorded))}"


def nights_above(above: int, recorded: int) -> str:
    """How many of the recorded nights were above the threshold, as a person would say it."""
    t = f"{PLM_THRESHOLD:g}/h"
    if recorded == 0:
        return "No night of the last 14 has a PLM index."
    if recorded == 1:
        return f"One night recorded so far; it was {'above' if above else 'not above'} {t}."
    if above == 0:
        return f"Neither recorded night was above {t}." if recorded == 2 else f"No recorded night was above {t}."
    if above == recorded:
        return (
            f"Both recorded nights were above {t}."
            if recorded == 2
            else f"All {recorded} recorded nights were above {t}."
        )
    return f"Above {t} on {above} of the {recorded} recorded nights."


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
        # the count itself is said once, under the last-14-nights chart (history_caption)
        if above and span_days >= 14 and len(above) * 2 >= len(recorded):
            out.append(
                f"The PLM index was above {PLM_THRESHOLD:g}/h on most recorded nights over {span_days} days. "
                "Movements that persist for more than two weeks are one of the reasons people are advised to "
                "talk to a doctor."
            )
        elif above and span_days < 14:
            out.append(
                "Fewer than two weeks are recorded so far. Keep recording: a pattern over two weeks says more "
                "than single nights."
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
        before = [h.plm_index for h in recorded if h.date < start and h.plm_index is not None]
        after = [h.plm_index for h in recorded if h.date >= start and h.plm_index is not None]
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
    nonwear = tuple(
        (str(s["side"]), float(s["start"]), float(s["end"]))
        for s in summary.get("nonwear") or []
        if s.get("side") in ("left", "right") and s.get("start") is not None and s.get("end") is not None
    )
    # too little of the night worn: no index, whatever value a live update wrote before the sensor came off
    insufficient = bool(summary.get("wear_insufficient"))
    if insufficient:
        summary = {**summary, "plm_index": None, "plms_index": None, "plmw_index": None}
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
    if insufficient:
        headline = (
            f"No PLM index for this night: the sensor was off the ankle for {_fmt(summary.get('nonwear_h'), 1, ' h')}"
            ", too much of the night to stand for all of it."
        )
    elif plm_index is None:
        headline = "No PLM index for this night (not enough data)."
    else:  # how many recent nights were above the threshold: said once, under the 14-night chart
        headline = (
            f"{_fmt(summary.get('plm_count'), None)} periodic leg movements, {plm_index:.1f} per hour in bed "
            f"({'above' if high else 'at or below'} {PLM_THRESHOLD:g}/h)."
        )
    data_notes = []
    missing = summary.get("missing_fraction")
    if missing is not None and missing > 0.1:
        data_notes.append(f"{missing * 100:.0f} % of the night has no data from a sensor; counts are lower than real.")
    if nonwear:
        off_h = sum(b - a for _, a, b in nonwear) / 3600
        data_notes.append(
            f"A sensor was off the ankle for {off_h:.1f} h in all (shaded on its leg's row): time with no sensor on "
            "an ankle is not time in bed and is in no index."
        )
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
        nonwear=nonwear,
    )


# ----------------------------------------------------------------------------------------- HTML

_CSS = """
:root{--red:#c62828;--ink:#1d2330;--muted:#5b6475;--line:#d8dce4}
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
svg text.lane{font-size:9px;fill:#5b6475}
ul{margin:4px 0;padding-left:20px}li{margin:3px 0}
table{border-collapse:collapse;width:100%;font-size:.88rem}td,th{border-bottom:1px solid var(--line);padding:3px 6px;
text-align:left}.legend span{display:inline-block;margin-right:12px;font-size:.8rem}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
@media print{@page{size:A4;margin:12mm}body{font-size:10.5pt}main{max-width:none;padding:0}
section{break-inside:avoid}.notice{background:none}}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _clock(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%H:%M")


def legend_of(report: NightReport) -> tuple[tuple[str, str], ...]:
    """The timeline's legend: the out-of-bed shading only when the report has it (a night scored from files;
    the live detector's per-minute posture is not used for it)."""
    extra = ((OUT_OF_BED,) if report.out_of_bed else ()) + ((NONWEAR,) if report.nonwear else ())
    return (*LEGEND, *extra)


def timeline_note(timeline: Timeline) -> str:
    """How to read the timeline's rows (and its per-minute columns in a dense night)."""
    text = "Each leg's row: PLMs on top, other leg movements in the middle, twitches at the bottom."
    if timeline.dense:
        text += (
            " Too many movements for one mark each: every column is one minute, one third tall for one movement "
            f"started in it, full for {DENSITY_FULL} or more."
        )
    return text


LANE_PX = {"plm": 12, "lm": 12, "twitch": 8}
"""Lane heights of the HTML timeline; the PNG keeps the same proportions."""


def timeline_svg(report: NightReport, width: int = 900, timeline: Timeline | None = None) -> str:
    """Per leg three lanes (PLM, LM, twitch; both-leg movements on both legs), the PLM series strip on top,
    out-of-bed spans shaded, hourly ticks; per-minute density columns when single marks would overlap."""
    start_s, end_s = report.start_s, report.end_s
    if start_s is None or end_s is None or end_s <= start_s:
        return '<p class="muted">No recording times for a timeline.</p>'
    tl = timeline or timeline_of(report)
    left_pad, top, series_h, leg_gap, lane_gap = 82, 4, 7, 9, 2
    span = end_s - start_s
    plot_w = width - left_pad - 8

    def x(ts: float) -> float:
        return left_pad + (ts - start_s) / span * plot_w

    lane_y: dict[tuple[str, str], float] = {}
    y = top + series_h
    for side in ("left", "right"):
        y += leg_gap
        for lane in LANES:
            lane_y[(side, lane)] = y
            y += LANE_PX[lane] + lane_gap
    base = y - lane_gap
    height = base + 22
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Timeline of leg movements">']
    parts.append(f'<text class="lane" x="{left_pad - 4}" y="{top + series_h}" text-anchor="end">PLM series</text>')
    for s0, s1, count in tl.series:
        parts.append(
            f'<rect x="{x(s0):.1f}" y="{top}" width="{max(x(s1) - x(s0), 1):.1f}" height="{series_h}" '
            f'fill="{SERIES_COLOUR}"><title>PLM series: {count} movements, {_clock(s0, report.tz)}'
            f"-{_clock(s1, report.tz)}</title></rect>"
        )
    for side in ("left", "right"):
        y0 = lane_y[(side, LANES[0])]
        y1 = lane_y[(side, LANES[-1])] + LANE_PX[LANES[-1]]
        parts.append(f'<text x="4" y="{(y0 + y1) / 2 + 4:.1f}" font-weight="600">{side}</text>')
        for lane in LANES:
            ly = lane_y[(side, lane)]
            parts.append(
                f'<text class="lane" x="{left_pad - 4}" y="{ly + LANE_PX[lane] - 2}" text-anchor="end">'
                f"{LANE_LABELS[lane]}</text>"
                f'<rect x="{left_pad}" y="{ly}" width="{plot_w}" height="{LANE_PX[lane]}" fill="{LANE_COLOUR}"/>'
            )
    lanes_top = top + series_h + leg_gap
    for s0, s1 in report.out_of_bed:  # movements there are shown, not counted as LMs of the night
        parts.append(
            f'<rect x="{x(s0):.1f}" y="{lanes_top}" width="{max(x(s1) - x(s0), 1):.1f}" '
            f'height="{base - lanes_top}" fill="{OUT_OF_BED_FILL}" fill-opacity=".55"><title>out of bed (leg '
            f"upright): {_clock(s0, report.tz)}-{_clock(s1, report.tz)}</title></rect>"
        )
    for side, s0, s1 in report.nonwear:  # that leg's sensor lay on a table: nothing measured there
        y0 = lane_y[(side, LANES[0])]
        y1 = lane_y[(side, LANES[-1])] + LANE_PX[LANES[-1]]
        parts.append(
            f'<rect x="{x(s0):.1f}" y="{y0}" width="{max(x(s1) - x(s0), 1):.1f}" height="{y1 - y0}" '
            f'fill="{NONWEAR_FILL}" fill-opacity=".6"><title>{side} sensor off the ankle: {_clock(s0, report.tz)}'
            f"-{_clock(s1, report.tz)}</title></rect>"
        )
    for key, marks in tl.lanes.items():
        ly, lh = lane_y[key], LANE_PX[key[1]]
        for m in marks:
            if tl.dense:  # a column per minute, as tall as the movements started in it
                h = lh * density_height(m.count)
                w = max(x(m.end) - x(m.start), 1.0)
                parts.append(
                    f'<rect x="{x(m.start):.1f}" y="{ly + lh - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                    f'fill="{m.colour}"/>'
                )
            else:
                w = max(x(m.end) - x(m.start), MIN_MARK_PX)
                parts.append(
                    f'<rect x="{x(m.start):.1f}" y="{ly + 1}" width="{w:.1f}" height="{lh - 2}" fill="{m.colour}"/>'
                )
    first_hour = math.ceil(start_s / 3600) * 3600
    for ts in range(int(first_hour), int(end_s) + 1, 3600):
        parts.append(
            f'<line x1="{x(ts):.1f}" x2="{x(ts):.1f}" y1="{top}" y2="{base + 4}" stroke="#99a" stroke-width=".5"/>'
        )
        parts.append(f'<text x="{x(ts):.1f}" y="{base + 17}" text-anchor="middle">{_clock(ts, report.tz)}</text>')
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
    """A small bar chart; bars above ``threshold`` red, an optional line (e.g. the 7-night median). The
    threshold's label sits in a margin right of the last bar, where no bar can cover it."""
    known = [v for v in values if v is not None] + [v for v in (line or []) if v is not None]
    top_value = max([*known, threshold or 0, 1.0]) * 1.15
    left_pad, bottom, top = 34, 34, 10
    right = width - (44 if threshold is not None else 6)  # the plot's right edge
    plot_h = height - bottom - top
    n = max(len(values), 1)
    slot = (right - left_pad) / n

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    parts.append(f'<line x1="{left_pad}" x2="{right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999"/>')
    parts.append(
        f'<text x="{left_pad - 4}" y="{y(top_value / 1.15):.1f}" text-anchor="end">{top_value / 1.15:.0f}</text>'
    )
    values_text: list[str] = []
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
            values_text.append(  # drawn last, haloed: a line across the bars never hides a number
                f'<text x="{cx + slot * 0.35:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle" stroke="#fff" '
                f'stroke-width="3" paint-order="stroke">{v:.0f}</text>'
            )
        parts.append(
            f'<text x="{cx + slot * 0.35:.1f}" y="{height - bottom + 14}" text-anchor="middle">{_e(label)}</text>'
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{left_pad}" x2="{right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" stroke="#d32f2f" '
            f'stroke-dasharray="5 4"/><text class="threshold" x="{right + 4}" y="{y(threshold) + 4:.1f}" '
            f'text-anchor="start" fill="#d32f2f">{threshold:g}/h</text>'
        )
    pts = [(left_pad + slot * i + slot * 0.5, y(v)) for i, v in enumerate(line or []) if v is not None]
    if pts:  # a white casing keeps the line visible across red and blue bars; a dot marks every night of it
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        if len(pts) == 1:
            coords = f"{pts[0][0] - slot * 0.4:.1f},{pts[0][1]:.1f} {pts[0][0] + slot * 0.4:.1f},{pts[0][1]:.1f}"
        parts.append(
            f'<g class="median"><title>median of the last 7 recorded nights</title>'
            f'<polyline points="{coords}" fill="none" stroke="#fff" stroke-width="4.5"/>'
            f'<polyline points="{coords}" fill="none" stroke="{NAVY}" stroke-width="2"/>'
            + "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{NAVY}" stroke="#fff"/>' for px, py in pts)
            + "</g>"
        )
    parts.extend(values_text)
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
    diary = (
        "<table><tr><th>night of</th><th>note</th><th>tags</th></tr>"
        + "".join(
            f"<tr><td>{d.date:%a %d %b}</td><td>{_e(d.text)}</td><td>{_e(', '.join(d.tags))}</td></tr>" for d in r.diary
        )
        + "</table>"
        if r.diary
        else f'<p class="muted">{NO_DIARY.format(command="<code>plm note</code>")}</p>'
    )
    signals = (
        "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in r.signals) + "</ul>"
        if r.signals
        else f'<p class="muted">{_e(NO_SIGNALS)}</p>'
    )
    data_notes = "".join(f'<p class="muted">{_e(n)}</p>' for n in r.data_notes)
    legend = "".join(f'<span><i style="background:{c}"></i>{label}</span>' for label, c in legend_of(r))
    timeline = timeline_of(r)
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
<section><h2>Timeline</h2>{timeline_svg(r, timeline=timeline)}<p class="legend">{legend}</p>
<p class="muted">{_e(timeline_note(timeline))}</p></section>
<section><h2>PLMs per hour</h2>{hourly}</section>
<section><h2>Last 14 nights</h2>{history}
<p class="muted">{_e(history_caption(r))}</p></section>
<section><h2>Sleep diary</h2>{diary}</section>
<section><h2>Worth knowing before a doctor's visit</h2>{signals}
<p class="muted">{_e(DOCTOR_REASONS)} {_e(MEDICATION_NOTE)}</p></section>
<footer><p class="muted">{_e(NOTICE)}</p></footer>
</main></body></html>
"""
