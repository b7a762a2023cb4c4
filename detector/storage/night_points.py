"""The database points of one night's summary: one definition for the live service and for tools.

Pure: a summary (``NightSummary.fields``) and its movements in, line protocol out. The night point is
written at the night's noon anchor (where that night's diary flags land, see detector.storage.diary), hourly
points at each hour of the recording, and one point per PLM series with its mean IMI.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from detector.storage import schema
from detector.storage.diary import night_start_for


def night_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of a summary that the ``night`` measurement stores."""
    night = {k: fields.get(k) for k in (*schema.NIGHT_INT_FIELDS, *schema.NIGHT_FLOAT_FIELDS) if k in fields}
    night["end_s"] = fields.get("end")
    night["rules"] = fields.get("rules")
    return night


def hourly_counts(hour: Mapping[str, Any], events: list[Mapping[str, Any]], end_s: float, missing: float) -> dict:
    """Counts of one clock hour of the recording; the hour's PLM index is per hour *recorded*."""
    lo, hi = hour["start"], hour["start"] + 3600
    scored = [e for e in events if lo <= e["onset"] < hi and e["kind"] != "twitch"]
    recorded_h = max(min(hi, end_s) - lo, 1.0) / 3600
    return {
        "lm_count": hour["lm_count"],
        "plm_count": hour["plm_count"],
        "twitch_count": hour["twitch_count"],
        "clm_count": sum(1 for e in scored if e["candidate"]),
        "long_movement_count": sum(1 for e in scored if e["kind"] == "long"),
        "recorded_h": recorded_h,
        "plm_index": hour["plm_count"] / recorded_h,
        "missing_fraction": missing,
    }


def summary_lines(
    subject: str, fields: Mapping[str, Any], events: Iterable[Mapping[str, Any]], *, final: bool
) -> list[str]:
    """Night, hourly and series points of a (live or final) summary; empty before the first sample."""
    start = fields.get("start")
    if start is None:
        return []
    events = list(events)
    end = fields.get("end") or start
    night_start = night_start_for(start)
    lines = [schema.night_point(subject, night_start, night_fields(fields), final)]
    if "wear_insufficient" in fields:
        lines.append(
            schema.night_wear_point(
                subject,
                night_start,
                float(fields.get("nonwear_h") or 0.0),
                fields.get("worn_fraction"),
                bool(fields["wear_insufficient"]),
            )
        )
    for span in fields.get("nonwear", []):
        lines.append(schema.nonwear_point(subject, span["side"], span["start"], span["end"], final))
    missing = float(fields.get("missing_fraction") or 0.0)
    for hour in fields.get("per_hour", []):
        lines.append(schema.hourly_point(subject, hour["start"], hourly_counts(hour, events, end, missing)))
    for series in fields.get("series", []):
        imis = [e["imi"] for e in events if e.get("series_id") == series["series_id"] and e["plm"] and e["imi"]]
        mean_imi = statistics.fmean(imis) if imis else None
        lines.append(schema.series_from(subject, series, mean_imi, final=final))
    return lines
