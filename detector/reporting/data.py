"""Read what a night report needs: from InfluxDB (InfluxQL over the v1 /query API) or a scored file.

Why InfluxQL over ``/query``: it is the one read path every InfluxDB speaks (1.x natively, 2.x via the
DBRP mapping every bucket gets, 3.x through its v1 compatibility API), the same one the dashboards use.
Auth: ``Authorization: Token`` when a token is configured (2.x/3.x), else HTTP Basic (1.x).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from detector.storage.diary import DiaryNote, anchor_of_date, night_date
from plm.config import InfluxSettings

DAY_MS = 86_400_000


class ReportDataError(RuntimeError):
    """The data for a report cannot be read; the message says from where and why."""


class InfluxQL:
    """A minimal InfluxQL client: ``query(q)`` returns the ``series`` of the first statement."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings

    def query(self, q: str) -> list[dict[str, Any]]:
        s = self.settings
        params = urllib.parse.urlencode({"db": s.bucket, "q": q, "epoch": "ms"})
        request = urllib.request.Request(f"{s.url}/query?{params}")
        if s.token is not None:
            request.add_header("Authorization", f"Token {s.token.get_secret_value()}")
        elif s.password is not None:
            basic = base64.b64encode(f"{s.username}:{s.password.get_secret_value()}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=s.timeout_s) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            hint = " (check influx.token / influx.password)" if exc.code in (401, 403) else ""
            raise ReportDataError(f"InfluxDB at {s.url} answered HTTP {exc.code}{hint}") from None
        except (OSError, ValueError) as exc:
            raise ReportDataError(f"cannot query InfluxDB at {s.url}: {exc}") from None
        result = (answer.get("results") or [{}])[0]
        if "error" in result:
            raise ReportDataError(f"InfluxDB refused a query ({result['error']}): {q}")
        return result.get("series", [])


def _rows(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in series:
        tags = s.get("tags") or {}
        for values in s["values"]:
            out.append({**tags, **dict(zip(s["columns"], values, strict=True))})
    return out


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def latest_night(client: InfluxQL, subject: str, tz: dt.tzinfo | str | None) -> dt.date:
    rows = _rows(client.query(f'SELECT last("plm_index") FROM "night" WHERE "subject" = {_quote(subject)}'))
    if not rows:
        raise ReportDataError(f"no night summary for subject {subject!r} in InfluxDB")
    return night_date(rows[0]["time"] / 1000, tz)


def load_from_influx(
    client: InfluxQL, subject: str, night: dt.date | None, tz: dt.tzinfo | str | None
) -> dict[str, Any]:
    """Everything :func:`detector.reporting.report.build_report` takes, for the night starting on ``night``."""
    night = night or latest_night(client, subject, tz)
    anchor = int(anchor_of_date(night, tz) * 1000)
    subj = f'"subject" = {_quote(subject)}'
    span = f"time >= {anchor}ms AND time < {anchor + DAY_MS}ms"
    nights = _rows(client.query(f'SELECT * FROM "night" WHERE {subj} AND {span}'))
    if not nights:
        raise ReportDataError(
            f"no night summary for {subject!r} on the night of {night} (noon to noon, {tz or 'local'})"
        )
    summary = {k: v for k, v in nights[-1].items() if v is not None and not k.startswith("diary_")}
    movements = _rows(client.query(f'SELECT * FROM "movement" WHERE {subj} AND {span} GROUP BY "side", "kind"'))
    events = [
        {
            "onset": m["time"] / 1000,
            "duration": m["duration_s"],
            "side": m["side"],
            "kind": m["kind"],
            "plm": bool(m.get("plm")),
            "imi": m.get("imi_s"),
            "series_id": m.get("series_id"),
        }
        for m in movements
    ]
    series = _rows(client.query(f'SELECT * FROM "plm_series" WHERE {subj} AND {span}'))
    summary["series"] = [{"start": s["time"] / 1000, "end": s["end_ms"] / 1000, "count": s["count"]} for s in series]
    hourly = _rows(client.query(f'SELECT * FROM "hourly" WHERE {subj} AND {span}'))
    summary["per_hour"] = [{"start": h["time"] / 1000, **h} for h in hourly]
    if events:
        summary["start"] = min(e["onset"] for e in events)
        summary["end"] = max(e["onset"] + e["duration"] for e in events)
    # the recording's first and last minute of activity bound the timeline better than the movements
    first = client.query(f'SELECT "activity_g" FROM "activity" WHERE {subj} AND {span} LIMIT 1')
    last = client.query(f'SELECT "activity_g" FROM "activity" WHERE {subj} AND {span} ORDER BY time DESC LIMIT 1')
    if first and last:
        summary["start"] = _rows(first)[0]["time"] / 1000
        summary["end"] = _rows(last)[0]["time"] / 1000 + 60
    if summary.get("end_ms") is not None:
        summary["end"] = max(summary.get("end") or 0, summary["end_ms"] / 1000)
    summary["start"] = summary.get("start") or anchor / 1000
    if "out_of_bed" not in summary:
        summary["out_of_bed"] = out_of_bed_spans(client, subj, span)
    if "nonwear" not in summary:
        summary["nonwear"] = [
            {"side": r["side"], "start": r["time"] / 1000, "end": r["end_ms"] / 1000}
            for r in _rows(client.query(f'SELECT "end_ms" FROM "nonwear" WHERE {subj} AND {span} GROUP BY "side"'))
            if r.get("end_ms") is not None
        ]
    history_span = f"time >= {anchor - 13 * DAY_MS}ms AND time < {anchor + DAY_MS}ms"
    history = [
        (night_date(r["time"] / 1000, tz), r["plm_index"])
        for r in _rows(client.query(f'SELECT "plm_index" FROM "night" WHERE {subj} AND {history_span}'))
    ]
    diary = [
        (
            night_date(r["time"] / 1000, tz),
            str(r.get("text") or "").replace("\\n", "\n"),
            tuple(t for t in str(r.get("tags") or "").split(",") if t),
        )
        for r in _rows(client.query(f'SELECT "text", "tags" FROM "diary" WHERE {subj} AND {history_span}'))
    ]
    return {"summary": summary, "events": events, "history": history, "diary": diary, "night": night}


def out_of_bed_spans(client: InfluxQL, subject_clause: str, span: str) -> list[dict[str, float]]:
    """Minutes that no leg's estimate put in bed, merged into spans (what ``plm score --json`` gives as
    ``out_of_bed``). The live detector writes ``in_bed`` per leg and minute, and once a night has ended it
    rewrites every minute of it from the final night (the upright direction is learned from the whole night),
    so for a finished night these are the minutes its summary counted out of bed."""
    rows = _rows(client.query(f'SELECT "in_bed" FROM "activity" WHERE {subject_clause} AND {span} GROUP BY "side"'))
    in_bed: dict[int, bool] = {}
    for r in rows:
        if r.get("in_bed") is not None:
            in_bed[int(r["time"])] = in_bed.get(int(r["time"]), False) or bool(r["in_bed"])
    spans: list[dict[str, float]] = []
    for stamp in sorted(t for t, lying in in_bed.items() if not lying):
        start = stamp / 1000
        if spans and spans[-1]["end"] >= start:
            spans[-1]["end"] = start + 60.0
        else:
            spans.append({"start": start, "end": start + 60.0})
    return spans


def existing_note(client: InfluxQL, subject: str, anchor_s: float) -> DiaryNote | None:
    """The diary note already stored for a night (to merge a new note into it), or None."""
    ms = round(anchor_s * 1000)
    rows = _rows(
        client.query(f'SELECT "text", "tags" FROM "diary" WHERE "subject" = {_quote(subject)} AND time = {ms}ms')
    )
    if not rows:
        return None
    tags = tuple(t for t in str(rows[0].get("tags") or "").split(",") if t)
    return DiaryNote(str(rows[0].get("text") or "").replace("\\n", "\n"), tags)


def load_scored_file(path: Path) -> dict[str, Any]:
    """A ``plm score --json`` output: the summary fields plus ``events``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportDataError(f"cannot read scored night {path}: {exc}") from None
    if not isinstance(doc, dict) or "events" not in doc or "plm_index" not in doc:
        raise ReportDataError(f"{path} is not the JSON of `plm score --json` (needs 'plm_index' and 'events')")
    events = doc.pop("events")
    return {"summary": doc, "events": events, "history": [], "diary": [], "night": None}
