"""``plm score LEFT [--right RIGHT] [--rules wasm2016|aasm] [--json]``: score recorded nights from files (CSV,
Polar Sensor Logger, .gt3x, .cwa: detector/recordings).

Start-up is part of the wall time a user waits for (issue 4: an 8-h two-leg night in <= 3 s), so the
module imports nothing heavy for ``register``; ``run`` reads the CSV files in a background thread
while the main thread imports the scorer (numpy releases the GIL while it parses, the imports hold it).

What cannot be scored right is refused before scoring, with the reason and the fix (issue 18): see
``detector.recordings.csvio.check_recording`` and ``check_legs``. Times counted from 0 are scored only with
``--start`` (the clock time of t = 0): the result is dated, and a date of 1970 would be a wrong one.
The rules come from ``--rules``, else from ``detector.rules`` of the configuration when one is given
(``--config``, ``PLM_CONFIG`` or ``PLM_DETECTOR__RULES``), else WASM 2016; the configuration (pydantic)
is loaded only then, so a plain ``plm score`` still starts in the time of its own imports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import threading
from typing import TYPE_CHECKING, Any

from plm.progress import ProgressBar
from plm.rules import RULESETS, get_ruleset

if TYPE_CHECKING:
    import numpy as np

    from detector.scoring.scorer import NightSummary

FEED_CHUNK_S = 600.0  # on a terminal the CLI feeds 10-minute chunks to show progress (results do not depend on it)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score leg movements and PLM from ankle acceleration files (CSV, Polar Sensor Logger, .gt3x, .cwa)",
        description="Score leg movements (LM) and periodic limb movements (PLM) from t,x,y,z CSV files "
        "(t in Unix seconds, x/y/z in g; .csv.gz accepted; ';' or tab separated files too), Polar Sensor Logger "
        "ACC files, ActiGraph .gt3x (extra [gt3x]) or Axivity .cwa (extra [cwa]) recordings of one night. Refused, with the "
        "reason: less than 10 minutes of samples, times in milliseconds or out of range, more than one night, "
        "legs from different nights or the same leg twice, and times from 0 without --start. "
        "It measures; it does not diagnose.",
    )
    parser.add_argument("left", help="left-leg recording (or the only leg): CSV, Polar Sensor Logger, .gt3x or .cwa")
    parser.add_argument("--right", help="right-leg recording")
    parser.add_argument(
        "--timezone",
        metavar="ZONE",
        help="IANA time zone of devices that keep local time (.cwa; .gt3x without a TimeZone line), "
        "e.g. Europe/Berlin (default: this machine's)",
    )
    parser.add_argument(
        "--rules",
        choices=sorted(RULESETS),
        help="scoring rules (default: detector.rules of the configuration, else wasm2016)",
    )
    parser.add_argument(
        "--start",
        type=_start_time,
        metavar="ISO-TIME",
        help="the clock time of t = 0, for files whose t counts seconds from the recording's start "
        "(e.g. 2024-02-23T22:30; without an offset, this machine's local time)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.set_defaults(func=run, exit_without_teardown=True)  # see plm.cli: saves ~0.7 s of interpreter teardown


def _start_time(text: str) -> float:
    """``--start``: an ISO 8601 time (local when it has no UTC offset) as Unix seconds."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. 2024-02-23T22:30") from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


def _rules_name(args: argparse.Namespace) -> str:
    """``--rules``, else the configured ``detector.rules`` (loading the configuration only when there is one)."""
    if args.rules:
        return args.rules
    configured = getattr(args, "config", None) or os.environ.get("PLM_CONFIG")
    if not configured and not any(k.upper() == "PLM_DETECTOR__RULES" for k in os.environ):
        return "wasm2016"
    from plm.config import load_settings

    return load_settings(getattr(args, "config", None)).detector.rules


class _LegReader(threading.Thread):
    """Reads the legs' files off the main thread (detector/recordings: every format it knows); ``result()``
    gives the arrays or raises the CsvError (a RecordingError is one)."""

    def __init__(self, paths: dict[str, str], timezone: str | None = None) -> None:
        super().__init__(name="plm-score-read", daemon=True)
        self.paths = paths
        self.timezone = timezone
        self.legs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        from detector.recordings import read_recording

        try:
            for side, path in self.paths.items():
                recording = read_recording(path, timezone=self.timezone)
                self.legs[side] = (recording.t, recording.xyz)
        except BaseException as exc:  # handed to the main thread, which reports or re-raises it
            self.error = exc

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.legs


def run(args: argparse.Namespace) -> int:
    paths = {"left": args.left, **({"right": args.right} if args.right else {})}
    reader = _LegReader(paths, args.timezone)
    reader.start()
    rules = get_ruleset(_rules_name(args))
    from detector.recordings.csvio import CsvError
    from detector.scoring.scorer import NightScorer, score_arrays

    try:
        legs = _checked(paths, reader.result(), args.start)
    except CsvError as exc:
        print(f"plm score: {exc}", file=sys.stderr)
        return 2
    start = min(float(t[0]) for t, _ in legs.values())
    end = max(float(t[-1]) for t, _ in legs.values())
    progress = ProgressBar(int(end - start), "scoring")
    try:
        if progress.enabled:
            summary = _score_in_chunks(NightScorer(rules, sides=tuple(legs)), legs, start, end, progress)
        else:  # nobody watches: the whole night at once, the same scorer (and the fastest path through it)
            summary = score_arrays(legs["left"], legs.get("right"), rules=rules)
    except ValueError as exc:
        progress.clear()
        print(f"plm score: {exc}", file=sys.stderr)
        return 2
    progress.clear()
    if args.json:
        print(json.dumps(summary.to_dict(), separators=(",", ":")))
    else:
        print(format_summary(summary))
    return 0


def _checked(
    paths: dict[str, str], legs: dict[str, tuple[np.ndarray, np.ndarray]], start: float | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The legs if they can be scored right (relative times moved to ``start``); CsvError says why not."""
    from pathlib import Path

    from detector.recordings.csvio import CsvError, check_legs, check_recording, describe_span, is_relative

    for side, (t, _) in legs.items():
        check_recording(paths[side], t)
    _one_night(paths, legs)
    if len(legs) == 2:
        check_legs(*((Path(paths[side]), *legs[side]) for side in ("left", "right")))
    side, (t, _) = next(iter(legs.items()))
    if start is None and is_relative(t):
        raise CsvError(
            f"{paths[side]}: t counts from {float(t[0]):g} s, not a clock time (Unix seconds), so the night "
            "cannot be dated: give --start ISO-TIME (the clock time of t = 0, e.g. --start 2024-02-23T22:30)"
        )
    if start is not None:
        if not is_relative(t):
            raise CsvError(
                f"--start is for times counted from 0, and {paths[side]} has clock times ({describe_span(t)}): "
                "leave --start out"
            )
        legs = {s: (t + start, xyz) for s, (t, xyz) in legs.items()}
    return legs


def _one_night(paths: dict[str, str], legs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Refuse a recording that holds more than one night (scored as one, its days would count as time in bed).

    Only recordings longer than :data:`ONE_NIGHT_S` are searched (detector/recordings/nights.py, the
    scorer's in-bed logic, one extra pass): a night's file costs nothing more."""
    from detector.recordings.nights import ONE_NIGHT_S

    if max(float(t[-1] - t[0]) for t, _ in legs.values()) <= ONE_NIGHT_S:
        return
    from detector.recordings.csvio import CsvError
    from detector.recordings.nights import find_nights

    nights, _ = find_nights(legs, name=paths["left"])
    if len(nights) > 1:
        when = ", ".join(dt.datetime.fromtimestamp(n.start).strftime("%m-%d %H:%M") for n in nights[:4])
        raise CsvError(
            f"{paths['left']}: holds {len(nights)} nights (from {when}{' ...' if len(nights) > 4 else ''}), scored as "
            "one they would count the days as time in bed: import them with plm import FILE --subject ID (one "
            "night each), or cut out one night"
        )


def _score_in_chunks(
    scorer: Any, legs: dict[str, Any], start: float, end: float, progress: ProgressBar
) -> NightSummary:
    import numpy as np

    edge = start
    while edge <= end:
        upper = edge + FEED_CHUNK_S
        for side, (t, xyz) in legs.items():
            lo, hi = np.searchsorted(t, [edge, upper])
            if hi > lo:
                scorer.feed(side, t[lo:hi], xyz[lo:hi])
        edge = upper
        progress.update(int(min(edge, end) - start))
    return scorer.finish()


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def format_summary(summary: NightSummary) -> str:
    d = summary.to_dict()
    lines = [
        f"Leg movements ({d['rules']}, {' + '.join(d['sides'])} leg{'s' if len(d['sides']) > 1 else ''})",
        f"  recording        {_fmt(d['recording_h'], ' h', 2)}   missing data {100 * d['missing_fraction']:.1f} %"
        + ("  (more than 10 %: interpret with care)" if d["missing_flag"] else ""),
        f"  time in bed      {_fmt(d['time_in_bed_h'], ' h', 2)}   estimated sleep {_fmt(d['sleep_h'], ' h', 2)}",
        f"  PLM index        {_fmt(d['plm_index'], ' /h in bed')}",
        f"  PLMS index       {_fmt(d['plms_index'], ' /h of estimated sleep')}   PLMW index {_fmt(d['plmw_index'], ' /h')}",
        f"  LM in bed {d['lm_count']}  (not counted: {d.get('lm_out_of_bed_count', 0)} while up or getting"
        f" into/out of bed)  bed transitions {len(d.get('bed_transitions', []))}",
        f"  all recorded: candidate LM {d['clm_count']}  PLM {d['plm_count']}  series {d['series_count']}"
        f"  periodicity {_fmt(d['periodicity_index'], '', 2)}",
        f"  long movements {d['long_movement_count']}  twitches {d['twitch_count']}  bilateral {d['bilateral_count']}",
    ]
    if d["imis"]:
        lines.append(f"  median IMI       {statistics.median(d['imis']):.1f} s")
    if d["per_hour"]:
        lines.append("  per hour (PLM)   " + " ".join(str(h["plm_count"]) for h in d["per_hour"]))
    if not any(d["posture_reference"].values()):
        lines.append("  note: no walking seen, so lying/upright is unknown: the whole recording counts as in bed")
    lines.append(f"  {d['notice']}")
    return "\n".join(lines)
