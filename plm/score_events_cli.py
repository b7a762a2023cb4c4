"""``plm score-events``: apply the event-level rules to a CSV of leg movements.

A thin I/O shell around :func:`plm.rules.score_events` for researchers and for checking the detector:
it reads ``onset,duration,side`` rows (and optional ``start,end`` gap rows), scores them and prints a
summary or one JSON object. Bad input stops with one clear message naming file, line and problem
(exit code 2) rather than scoring part of a file silently.

Input that parses but cannot be scored right is refused too, because a confident wrong number is the
worst outcome for a health measure (issue 18): times out of any plausible range, onsets or durations
in milliseconds (the rules would count every movement as "long", or find no series), and an ``--hours``
denominator shorter than the events it divides.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from plm.rules import RULESETS, SIDES, EventScore, Gap, LegMovement, get_ruleset, score_events

DISCLAIMER = (
    "This measures leg movements; it does not diagnose. Actigraphy does not replace leg EMG "
    "polysomnography, and single nights vary a lot."
)

T = TypeVar("T")

# Times are seconds, from the start of a recording or Unix time: anything past 2100-01-01 as Unix
# seconds is no time of a recording (1e308 would otherwise be scored as a very late movement).
MAX_TIME_S = 4_102_444_800.0
MAX_DURATION_S = 3600.0  # a movement lasts seconds (long movements a minute or two), never an hour
MAX_NIGHT_S = 36 * 3600.0  # one night's events; more is several nights or onsets in milliseconds
# No list of leg movements has a median duration over a minute (an LM lasts 0.5-10 s; WASM 2016):
# in milliseconds the median is hundreds to thousands.
MS_MEDIAN_DURATION_S = 60.0


class InputError(Exception):
    """A problem in an input file, already phrased as ``FILE:LINE: problem``."""


def _number(path: Path, line: int, column: str, text: str | None) -> float:
    if text is None or not text.strip():
        raise InputError(f"{path}:{line}: column {column!r} is empty")
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}:{line}: {column} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{path}:{line}: {column} must be a finite number, got {text.strip()!r}")
    return value


def _time(path: Path, line: int, column: str, text: str | None) -> float:
    """A time in seconds, refused by value when no recording can have it (see MAX_TIME_S)."""
    value = _number(path, line, column, text)
    if abs(value) > MAX_TIME_S:
        hint = (
            "it looks like Unix time in milliseconds: divide by 1000"
            if 1e11 <= abs(value) <= 1e14
            else "times are seconds from the recording's start or Unix seconds"
        )
        raise InputError(f"{path}:{line}: {column} {value:g} is out of range (beyond the year 2100); {hint}")
    return value


def _open_text(path: Path) -> io.TextIOBase:
    """The file as text; ``.gz`` (recognised by its magic bytes, as ``plm score`` does) is decompressed."""
    with path.open("rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return path.open(newline="", encoding="utf-8-sig")


def _read_rows(path: Path, required: Sequence[str], build: Callable[[int, dict[str, str]], T]) -> list[T]:
    """Read a CSV with a header row; ``build`` turns one row (with its 1-based line number) into a value."""
    try:
        handle = _open_text(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = [name.strip() for name in reader.fieldnames or []]
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:  # OSError, EOFError: a broken .gz
            raise InputError(f"{path}:1: not a readable CSV file ({_short(exc)})") from None
        if not header:
            raise InputError(f"{path}:1: empty file; expected a header row {','.join(required)}")
        missing = [name for name in required if name not in header]
        if missing:
            raise InputError(
                f"{path}:1: missing column(s) {', '.join(missing)}; header is {','.join(header)!r}, "
                f"expected {','.join(required)}"
            )
        reader.fieldnames = header
        values: list[T] = []
        try:
            for row in reader:
                line = reader.line_num
                if not any((cell or "").strip() for cell in row.values() if isinstance(cell, str)):
                    continue  # blank line
                values.append(build(line, row))
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
            raise InputError(f"{path}:{reader.line_num}: not a readable CSV line ({_short(exc)})") from None
    return values


def _short(exc: BaseException, limit: int = 120) -> str:
    """An exception's text cut to one short line: a binary file's decode error quotes its bytes."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_events(path: Path) -> list[LegMovement]:
    """Read ``onset,duration,side`` rows (seconds; side left/right, case-insensitive)."""

    def build(line: int, row: dict[str, str]) -> LegMovement:
        onset = _time(path, line, "onset", row.get("onset"))
        duration = _number(path, line, "duration", row.get("duration"))
        if duration <= 0:
            raise InputError(f"{path}:{line}: duration must be > 0 s, got {row['duration'].strip()!r}")
        if duration > MAX_DURATION_S:
            raise InputError(
                f"{path}:{line}: duration {duration:g} s is out of range (a movement lasts seconds, not over an hour); "
                "durations are seconds (divide milliseconds by 1000)"
            )
        raw_side = row.get("side")
        if raw_side is None or not raw_side.strip():
            raise InputError(f"{path}:{line}: column 'side' is empty")
        side = raw_side.strip().lower()
        if side not in SIDES:
            raise InputError(f"{path}:{line}: side must be 'left' or 'right', got {row.get('side')!r}")
        return LegMovement(onset, duration, side)

    movements = _read_rows(path, ("onset", "duration", "side"), build)
    check_units(path, movements)
    return movements


def check_units(path: Path, movements: Sequence[LegMovement]) -> None:
    """Refuse events whose numbers are not seconds of one night: scored as seconds, milliseconds give a
    plausible wrong answer (durations in ms make every movement "long"; onsets in ms make every interval
    too long for a series), so the file is refused with the fix instead."""
    if not movements:
        return
    median_duration = statistics.median(m.duration for m in movements)
    if median_duration > MS_MEDIAN_DURATION_S:
        raise InputError(
            f"{path}: durations look like milliseconds (median {median_duration:g}; a leg movement lasts "
            "0.5-10 s): give onset and duration in seconds (divide by 1000)"
        )
    first = min(m.onset for m in movements)
    span = max(m.onset + m.duration for m in movements) - first
    if span > MAX_NIGHT_S:
        hint = (
            "if the onsets are in milliseconds, give them in seconds (divide by 1000); else score each night's "
            "events separately"
            if span / 1000 <= MAX_NIGHT_S
            else "score each night's events separately"
        )
        raise InputError(
            f"{path}: the events span {span / 3600:,.1f} h, more than one night ({MAX_NIGHT_S / 3600:g} h at most); "
            + hint
        )


def events_span_s(movements: Sequence[LegMovement]) -> float:
    """Seconds from the first onset to the end of the last movement: the least time the events can come from."""
    if not movements:
        return 0.0
    return max(m.onset + m.duration for m in movements) - min(m.onset for m in movements)


def read_gaps(path: Path) -> list[Gap]:
    """Read ``start,end`` rows (seconds, same time base as the events), with an optional ``side`` column
    (left/right: the leg without data; empty or absent: every leg)."""

    def build(line: int, row: dict[str, str]) -> Gap:
        start = _time(path, line, "start", row.get("start"))
        end = _time(path, line, "end", row.get("end"))
        if end <= start:
            raise InputError(f"{path}:{line}: gap end {end} must be after its start {start}")
        side = (row.get("side") or "").strip().lower() or None
        if side is not None and side not in SIDES:
            raise InputError(
                f"{path}:{line}: side must be 'left', 'right' or empty (every leg), got {row.get('side')!r}"
            )
        return Gap(start, end, side)

    return _read_rows(path, ("start", "end"), build)


def _positive_hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(hours) or hours <= 0:
        raise argparse.ArgumentTypeError(f"hours must be a finite number > 0, got {text!r}")
    return hours


def format_summary(score: EventScore, hours: float | None) -> str:
    """The human-readable report; every number is a measurement, stated with its definition."""
    rules = score.rules
    lines = [
        f"Event-level scoring: {rules.title or rules.name} "
        f"(IMI {rules.min_imi_s:g}-{rules.max_imi_s:g} s, series >= {rules.min_series_length} CLMs)",
        f"  leg movements (LM):          {score.lm_count}",
        f"  long movements (not LM):     {score.long_count}",
        f"  too short (< {rules.min_lm_s:g} s, dropped): {score.short_count}",
        f"  candidate LMs (CLM):         {score.clm_count}",
        f"  periodic LMs (PLM):          {score.plm_count} in {score.series_count} series",
    ]
    if score.periodicity_index is not None:
        lines.append(f"  periodicity index (PLM/CLM): {score.periodicity_index:.2f}")
    if hours is not None:
        lines.append(f"  PLM index:                   {score.plm_index(hours):.1f} per hour over {hours:g} h")
    if score.imis:
        lines.append(f"  median IMI between CLMs:     {statistics.median(score.imis):.1f} s")
    lines.append(DISCLAIMER)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler for ``plm score-events``; returns the exit code."""
    try:
        rules = get_ruleset(args.rules)
        movements = read_events(Path(args.events))
        gaps = read_gaps(Path(args.gaps)) if args.gaps else []
        span_s = events_span_s(movements)
        if args.hours is not None and args.hours * 3600 < span_s:
            raise InputError(
                f"--hours {args.hours:g} is shorter than the events' span ({span_s / 3600:.2f} h from the first "
                "onset to the end of the last movement): give the hours of the recording the events come from"
            )
    except (InputError, ValueError) as exc:
        print(f"plm score-events: error: {exc}", file=sys.stderr)
        return 2
    score = score_events(movements, rules, gaps)
    if args.json:
        data: dict[str, Any] = score.to_dict(hours=args.hours)
        data["note"] = DISCLAIMER
        print(json.dumps(data))
    else:
        print(format_summary(score, args.hours))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score-events`` subcommand to the ``plm`` CLI."""
    parser = subparsers.add_parser(
        "score-events",
        help="score leg-movement events (CSV) by the WASM 2016 or AASM rules",
        description="Apply the event-level LM/PLM rules to EVENTS.csv (columns onset,duration,side; seconds; "
        ".csv.gz accepted). Events in milliseconds, from more than one night, or with an --hours shorter than "
        "their span are refused. Measures; does not diagnose.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("events", metavar="EVENTS.csv", help="CSV with header onset,duration,side (or .csv.gz)")
    parser.add_argument("--rules", default="wasm2016", choices=sorted(RULESETS), help="rule set (default wasm2016)")
    parser.add_argument(
        "--hours",
        type=_positive_hours,
        help="denominator for the PLM index: hours of the recording the events come from (at least their span)",
    )
    parser.add_argument(
        "--gaps",
        metavar="GAPS.csv",
        help="CSV with header start,end[,side]: spans without data (on one leg, or on every leg)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m plm.score_events_cli``), same as ``plm score-events``."""
    parser = argparse.ArgumentParser(prog="plm score-events")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
