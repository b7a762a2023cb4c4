"""``plm score LEFT [--right RIGHT] [--rules wasm2016|aasm] [--json]``: score recorded nights from CSV.

Start-up is part of the wall time a user waits for (issue 4: an 8-h two-leg night in <= 3 s), so the
module imports nothing heavy for ``register``; ``run`` reads the CSV files in a background thread
while the main thread imports the scorer (numpy releases the GIL while it parses, the imports hold it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from plm.rules import RULESETS, get_ruleset

if TYPE_CHECKING:
    import numpy as np

    from detector.scorer import NightSummary

FEED_CHUNK_S = 600.0  # on a terminal the CLI feeds 10-minute chunks to show progress (results do not depend on it)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score leg movements and PLM from ankle acceleration CSV files",
        description="Score leg movements (LM) and periodic limb movements (PLM) from t,x,y,z CSV files "
        "(t in seconds, x/y/z in g; .csv.gz accepted). It measures; it does not diagnose.",
    )
    parser.add_argument("left", help="left-leg CSV (or the only leg)")
    parser.add_argument("--right", help="right-leg CSV")
    parser.add_argument(
        "--rules", default="wasm2016", choices=sorted(RULESETS), help="scoring rules (default wasm2016)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.set_defaults(func=run, exit_without_teardown=True)  # see plm.cli: saves ~0.7 s of interpreter teardown


class _Progress:
    """A one-line stderr progress bar, only on a terminal and only once scoring takes a moment."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled or time.monotonic() - self.start < 0.5:
            return
        width = 30
        filled = int(width * done / self.total)
        sys.stderr.write(f"\rscoring [{'#' * filled}{'.' * (width - filled)}] {100 * done // self.total:3d}%")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 50 + "\r")
            sys.stderr.flush()


class _LegReader(threading.Thread):
    """Reads the legs' CSV files off the main thread; ``result()`` gives the arrays or raises the CsvError."""

    def __init__(self, paths: dict[str, str]) -> None:
        super().__init__(name="plm-score-read", daemon=True)
        self.paths = paths
        self.legs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        from detector.csvio import read_leg_csv

        try:
            for side, path in self.paths.items():
                self.legs[side] = read_leg_csv(path)
        except BaseException as exc:  # handed to the main thread, which reports or re-raises it
            self.error = exc

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.legs


def run(args: argparse.Namespace) -> int:
    rules = get_ruleset(args.rules)
    reader = _LegReader({"left": args.left, **({"right": args.right} if args.right else {})})
    reader.start()
    from detector.csvio import CsvError
    from detector.scorer import NightScorer, score_arrays

    try:
        legs = reader.result()
    except CsvError as exc:
        print(f"plm score: {exc}", file=sys.stderr)
        return 2
    start = min(float(t[0]) for t, _ in legs.values())
    end = max(float(t[-1]) for t, _ in legs.values())
    progress = _Progress(int(end - start))
    try:
        if progress.enabled:
            summary = _score_in_chunks(NightScorer(rules, sides=tuple(legs)), legs, start, end, progress)
        else:  # nobody watches: the whole night at once, the same scorer (and the fastest path through it)
            summary = score_arrays(legs["left"], legs.get("right"), rules=rules)
    except ValueError as exc:
        progress.close()
        print(f"plm score: {exc}", file=sys.stderr)
        return 2
    progress.close()
    if args.json:
        print(json.dumps(summary.to_dict(), separators=(",", ":")))
    else:
        print(format_summary(summary))
    return 0


def _score_in_chunks(scorer: Any, legs: dict[str, Any], start: float, end: float, progress: _Progress) -> NightSummary:
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
