"""``plm note`` (sleep diary) and ``plm report`` (one-page night report).

plm note --subject alice "coffee after 18:00" [--tag stretching] [--time 2024-03-01T21:30] [--tz Europe/Berlin]
plm report --subject alice [--night 2024-03-01] [--from-file scored.json] [--out night.html|night.png|night.pdf]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
NOTE_FLUSH_S = 10.0


def register(subparsers: Any) -> None:
    note = subparsers.add_parser(
        "note",
        help="add a sleep-diary note (caffeine, alcohol, exercise, stretching, late meal, medication, poor sleep)",
        description="Store a sleep-diary note for a night. Tags come from keywords in the text and from --tag. "
        "A note written between 12:00 and 12:00 the next day belongs to the night starting that evening. "
        "The same note can be sent by MQTT to plm/v1/<subject>/_diary.",
    )
    note.add_argument("text", nargs="?", default="", help='the note, e.g. "caffeine after 18:00"')
    note.add_argument("--subject", required=True, help="subject id")
    note.add_argument("--tag", action="append", default=[], help="an explicit tag (repeatable)")
    note.add_argument("--time", help="when the note applies (ISO 8601; default: now)")
    note.add_argument("--tz", help="IANA time zone for the night boundary (default: this machine's)")
    note.add_argument("--dry-run", action="store_true", help="print the InfluxDB lines instead of writing them")
    note.set_defaults(func=run_note)

    report = subparsers.add_parser(
        "report",
        help="one-page night report (HTML, PNG or PDF) from InfluxDB or a scored file",
        description="A one-page report of a night: timeline, movements, PLM series, hourly counts, indices, "
        "the last 14 nights, the diary, and signals worth discussing with a doctor. It measures; it does not diagnose.",
    )
    report.add_argument("--subject", required=True, help="subject id")
    report.add_argument(
        "--night", type=_night_date, help="date the night starts (YYYY-MM-DD; default: the latest night)"
    )
    report.add_argument("--from-file", help="a `plm score --json` output instead of InfluxDB")
    report.add_argument(
        "--out",
        default="night.html",
        help="output file: .html (default night.html), .png (a phone-shaped page) or .pdf (A4); "
        "PNG and PDF need the 'report' extra (matplotlib)",
    )
    report.add_argument("--tz", help="IANA time zone (default: this machine's)")
    report.set_defaults(func=run_report)


def _night_date(text: str) -> dt.date:
    """``--night``: a calendar date; the message names the option (``date`` alone says "month must be in 1..12")."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD ({exc})") from None


def _check_scored_night(summary: dict[str, Any], night: dt.date | None, zone: dt.tzinfo, path: str) -> None:
    """Refuse a scored file whose night cannot be dated right, or that is not the night ``--night`` names.

    A report's title is the first thing read: "Night of Tuesday 20 February" over a recording of 23 February,
    or "night of 1969-12-31" over times counted from 0, are plausible wrong answers (issue 18)."""
    from detector.recordings.csvio import CLOCK_TIME_FROM_S
    from detector.reporting.data import ReportDataError
    from detector.storage.diary import night_date

    start, end = summary.get("start"), summary.get("end")
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return  # no times to check (an older or hand-made file): the report dates it as before
    if start < CLOCK_TIME_FROM_S:
        raise ReportDataError(
            f"{path}: the recording's times count from 0 (t = {start:g} s), so its night is unknown: "
            "score it again with `plm score --start ISO-TIME` (the clock time of t = 0)"
        )
    first, last = night_date(start, zone), night_date(end, zone)
    if night is not None and not first <= night <= last:

        def local(t: float) -> str:
            return dt.datetime.fromtimestamp(t, zone).isoformat(sep=" ", timespec="minutes")

        raise ReportDataError(
            f"--night {night} does not match {path}: it was recorded {local(start)} to {local(end)}, the night of "
            f"{first}: leave --night out, or give --night {first}"
        )


def _settings(args: argparse.Namespace):
    from plm.config import load_settings

    return load_settings(getattr(args, "config", None))


def note_outbox(settings: Any) -> Path:
    """Where ``plm note`` keeps notes InfluxDB has not taken yet: ``detector.state_dir`` when it is
    configured, else this user's data directory (platformdirs: ~/.local/share/plm-monitor on Linux), never
    a ``var/`` folder of whatever directory the command happens to run in."""
    if "state_dir" in settings.detector.model_fields_set:
        return Path(settings.detector.state_dir) / "diary-outbox.sqlite"
    import platformdirs

    return platformdirs.user_data_path("plm-monitor", appauthor=False) / "diary-outbox.sqlite"


# The handlers import the diary, report and InfluxDB modules when they run: `plm --help` and other
# commands do not pay for them.
def run_note(args: argparse.Namespace) -> int:
    from detector.reporting.data import InfluxQL, ReportDataError, existing_note
    from detector.storage.diary import (
        DiaryError,
        diary_lines,
        make_note,
        merge_notes,
        night_date,
        night_start_for,
        read_back,
        zone_of,
    )

    try:
        zone = zone_of(args.tz)
        when = time.time()
        if args.time:
            parsed = dt.datetime.fromisoformat(args.time)
            when = (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).timestamp()
        note = make_note(args.text, args.tag, when)
    except (DiaryError, ValueError) as exc:
        print(f"plm note: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(diary_lines(args.subject, note, when, zone)))
        return 0
    from detector.storage.influx import InfluxSink

    settings = _settings(args)
    anchor = night_start_for(when, zone)
    earlier = None
    try:
        stored = existing_note(InfluxQL(settings.influx), args.subject, anchor)
        earlier = None if stored is None else read_back(stored)  # its note count and "not kept" marker
    except ReportDataError as exc:
        log.warning("could not read earlier notes of that night (%s); writing this one alone", exc)
    merged = merge_notes(earlier, note)
    refused = earlier is not None and merged.not_kept > earlier.not_kept
    note = merged
    outbox = note_outbox(settings)
    outbox.parent.mkdir(parents=True, exist_ok=True)
    sink = InfluxSink(settings.influx, outbox)
    try:
        sink.put(diary_lines(args.subject, note, when, zone))
        delivered = sink.flush(NOTE_FLUSH_S)
    finally:
        sink.close()
    tags = ", ".join(note.tags) or "no tags"
    day = night_date(when, zone)
    if not delivered:
        why = sink.last_error or f"no answer within {NOTE_FLUSH_S:g} s"
        print(
            f"plm note: the note did not reach InfluxDB at {settings.influx.url} ({why}); "
            f"it is kept in {outbox} and sent with the next `plm note`.",
            file=sys.stderr,
        )
        return 1
    if refused:  # the night is full: the stored marker now counts this note as not kept
        print(
            f"plm note: not kept: the night of {day:%a %d %b %Y} is full "
            f"({note.notes} notes kept; {note.not_kept} not kept, this one included)",
            file=sys.stderr,
        )
        return 1
    print(f"noted for the night of {day:%a %d %b %Y} ({tags})")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from detector.reporting.data import InfluxQL, ReportDataError, load_from_influx, load_scored_file
    from detector.reporting.render import FORMATS, RenderUnavailable, ensure_available, render_bytes
    from detector.reporting.report import build_report, render_html
    from detector.storage.diary import DiaryError, zone_of

    try:
        zone = zone_of(args.tz)
        night = args.night
        out = Path(args.out)
        fmt = out.suffix.lower().lstrip(".")
        if fmt not in ("html", "htm", *FORMATS):
            raise ReportDataError(f"{out.name}: the report is written as .html, .png or .pdf (from the file's suffix)")
        if fmt in FORMATS:
            ensure_available()  # before a possibly slow InfluxDB read
        if args.from_file:
            data = load_scored_file(Path(args.from_file))
            _check_scored_night(data["summary"], night, zone, args.from_file)
            data["night"] = night
        else:
            data = load_from_influx(InfluxQL(_settings(args).influx), args.subject, night, zone)
        report = build_report(
            args.subject, data["summary"], data["events"], data["history"], data["diary"], data["night"], zone
        )
    except (ReportDataError, DiaryError, ValueError, RenderUnavailable) as exc:
        print(f"plm report: {exc}", file=sys.stderr)
        return 2
    try:
        if fmt in FORMATS:
            out.write_bytes(render_bytes(report, fmt))
        else:
            out.write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        print(f"plm report: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} (night of {report.night:%Y-%m-%d}): {report.headline}")
    return 0
