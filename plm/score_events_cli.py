"""``plm score-events``: apply the event-level rules to a CSV of leg movements.

A thin I/O shell around :func:`plm.rules.score_events` for researchers and for checking the detector:
it reads ``onset,duration,side`` rows (and optional ``start,end`` gap rows), scores them and prints a
summary or one JSON object. Bad input stops with one clear message naming file, line and problem
(exit code 2) rather than scoring part of a file silently.
"""

from __future__ import annotations

import argparse
import csv
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


def _read_rows(path: Path, required: Sequence[str], build: Callable[[int, dict[str, str]], T]) -> list[T]:
    """Read a CSV with a header row; ``build`` turns one row (with its 1-based line number) into a value."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = [name.strip() for name in reader.fieldnames or []]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}:1: not a readable CSV file ({exc})") from None
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
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}:{reader.line_num}: not a readable CSV line ({exc})") from None
    return values


def read_events(path: Path) -> list[LegMovement]:
    """Read ``onset,duration,side`` rows (seconds; side left/right, case-insensitive)."""

    def build(line: int, row: dict[str, str]) -> LegMovement:
        onset = _number(path, line, "onset", row.get("onset"))
        duration = _number(path, line, "duration", row.get("duration"))
        if duration <= 0:
            raise InputError(f"{path}:{line}: duration must be > 0 s, got {row['duration'].strip()!r}")
        raw_side = row.get("side")
        if raw_side is None or not raw_side.strip():
            raise InputError(f"{path}:{line}: column 'side' is empty")
        side = raw_side.strip().lower()
        if side not in SIDES:
            raise InputError(f"{path}:{line}: side must be 'left' or 'right', got {row.get('side')!r}")
        return LegMovement(onset, duration, side)

    return _read_rows(path, ("onset", "duration", "side"), build)


def read_gaps(path: Path) -> list[Gap]:
    """Read ``start,end`` rows (seconds, same time base as the events)."""

    def build(line: int, row: dict[str, str]) -> Gap:
        start = _number(path, line, "start", row.get("start"))
        end = _number(path, line, "end", row.get("end"))
        if end <= start:
            raise InputError(f"{path}:{line}: gap end {end} must be after its start {start}")
        return Gap(start, end)

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


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``score-events`` subcommand to the ``plm`` CLI."""
    parser = subparsers.add_parser(
        "score-events",
        help="score leg-movement events (CSV) by the WASM 2016 or AASM rules",
        description="Apply the event-level LM/PLM rules to EVENTS.csv (columns onset,duration,side; seconds). "
        "Measures; does not diagnose.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("events", metavar="EVENTS.csv", help="CSV with header onset,duration,side")
    parser.add_argument("--rules", default="wasm2016", choices=sorted(RULESETS), help="rule set (default wasm2016)")
    parser.add_argument("--hours", type=_positive_hours, help="denominator for the PLM index (e.g. hours of sleep)")
    parser.add_argument("--gaps", metavar="GAPS.csv", help="CSV with header start,end: spans without data")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m plm.score_events_cli``), same as ``plm score-events``."""
    parser = argparse.ArgumentParser(prog="plm score-events")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
