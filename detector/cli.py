"""``plm score LEFT [--right RIGHT] [--rules wasm2016|aasm] [--json]``: score recorded nights from CSV."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from detector.csvio import CsvError, read_leg_csv
from detector.scorer import NightScorer, NightSummary
from plm.rules import RULESETS, get_ruleset

FEED_CHUNK_S = 600.0  # the CLI feeds 10-minute chunks so it can show progress (results do not depend on it)


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
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    rules = get_ruleset(args.rules)
    legs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        legs["left"] = read_leg_csv(args.left)
        if args.right:
            legs["right"] = read_leg_csv(args.right)
    except CsvError as exc:
        print(f"plm score: {exc}", file=sys.stderr)
        return 2
    scorer = NightScorer(rules, sides=tuple(legs))
    start = min(float(t[0]) for t, _ in legs.values())
    end = max(float(t[-1]) for t, _ in legs.values())
    progress = _Progress(int(end - start))
    try:
        edge = start
        while edge <= end:
            upper = edge + FEED_CHUNK_S
            for side, (t, xyz) in legs.items():
                lo, hi = np.searchsorted(t, [edge, upper])
                if hi > lo:
                    scorer.feed(side, t[lo:hi], xyz[lo:hi])
            edge = upper
            progress.update(int(min(edge, end) - start))
        summary = scorer.finish()
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
        f"  LM {d['lm_count']}  candidate LM {d['clm_count']}  PLM {d['plm_count']}  series {d['series_count']}"
        f"  periodicity {_fmt(d['periodicity_index'], '', 2)}",
        f"  long movements {d['long_movement_count']}  twitches {d['twitch_count']}  bilateral {d['bilateral_count']}",
    ]
    if d["imis"]:
        lines.append(f"  median IMI       {float(np.median(d['imis'])):.1f} s")
    if d["per_hour"]:
        lines.append("  per hour (PLM)   " + " ".join(str(h["plm_count"]) for h in d["per_hour"]))
    if not any(d["posture_reference"].values()):
        lines.append("  note: no walking seen, so lying/upright is unknown: the whole recording counts as in bed")
    lines.append(f"  {d['notice']}")
    return "\n".join(lines)
