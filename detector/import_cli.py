"""``plm import FILE... --subject S [--left FILE] [--right FILE]``: recorded nights into InfluxDB, as if streamed.

Reads every file with detector/recordings (the project's CSV, Polar Sensor Logger ACC text, ActiGraph .gt3x,
Axivity .cwa), puts each leg's files together in time, finds the nights in them (detector/recordings/nights.py:
a multi-day actigraph file becomes one night per time in bed), and scores each night through the live
detector's own core (detector/recordings/replay.py), writing its points with the live service's durable
InfluxDB sink. Importing the same files again writes the same points over themselves; ``--replace`` first deletes
what the subject has stored in each night's time, so a corrected file replaces its night
(detector/recordings/replace.py).

Which leg a positional FILE is: what the file says (a .gt3x's Side), else the subject's configured sensor
of that id, else a sensor id naming a side (``left-ankle``); one sensor that says nothing is scored as one
leg (left). Two sensors that say nothing are refused: give them as ``--left`` and ``--right``.

What cannot be scored right is refused (exit 2) with the reason and the fix, before anything is written:
an unreadable file, a missing reader package, two sensors of unknown legs, a leg's files overlapping in
time. A night that fails the checks of ``plm score`` (too short, legs from different times, the same signal
twice) is left out and listed with its reason; the other nights are imported, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from plm.progress import ProgressBar
from plm.rules import RULESETS

FORMAT_NAMES = {
    "csv": "CSV file",
    "psl": "Polar Sensor Logger file",
    "gt3x": "ActiGraph .gt3x file",
    "cwa": "Axivity .cwa file",
}
FLUSH_TIMEOUT_S = 60.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import",
        help="import recorded nights (CSV, Polar Sensor Logger, ActiGraph .gt3x, Axivity .cwa) into InfluxDB",
        description="Score recorded nights through the live detector's core and write them to InfluxDB, so the "
        "dashboards, reports and trends show them like streamed nights. Multi-day recordings are split into "
        "nights by time in bed. Importing the same files again changes nothing. It measures; it does not diagnose.",
    )
    parser.add_argument(
        "files", nargs="*", default=[], metavar="FILE", help="recordings whose leg the file or its sensor id says"
    )
    parser.add_argument("--subject", required=True, help="subject id the nights belong to (as in plm.toml)")
    parser.add_argument("--left", action="append", default=[], metavar="FILE", help="a left-leg recording (repeatable)")
    parser.add_argument(
        "--right", action="append", default=[], metavar="FILE", help="a right-leg recording (repeatable)"
    )
    parser.add_argument(
        "--timezone",
        metavar="ZONE",
        help="IANA time zone of devices that keep local time (.cwa; .gt3x without a TimeZone line), "
        "e.g. Europe/Berlin (default: this machine's)",
    )
    parser.add_argument(
        "--rules", choices=sorted(RULESETS), help="scoring rules (default: detector.rules of the configuration)"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="first delete what the subject has stored in each imported night's time (one hour either side): for a "
        "corrected file that has fewer movements than the first import (needs credentials that may delete)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detector.recordings.csvio import CsvError
    from plm import wire
    from plm.config import ConfigError, load_settings

    if not (args.files or args.left or args.right):
        print("plm import: no recording given: name the files (FILE..., or --left FILE --right FILE)", file=sys.stderr)
        return 2
    try:
        subject = wire.validate_id(args.subject, "subject id")
    except wire.WireFormatError as exc:
        print(f"plm import: {exc} (letters, digits, '_' and '-', up to 32)", file=sys.stderr)
        return 2
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"plm import: {exc}", file=sys.stderr)
        return 2
    if args.rules:
        settings.detector.rules = args.rules
    try:
        legs, models = _read_legs(args, settings, subject)
        from detector.recordings.nights import find_nights

        joined = {side: (leg["t"], leg["xyz"]) for side, leg in legs.items()}
        nights, skipped = find_nights(joined, name=", ".join(str(leg["paths"][0]) for leg in legs.values()))
    except CsvError as exc:
        print(f"plm import: {exc}", file=sys.stderr)
        return 2
    if not nights:
        found = "; ".join(f"{_clock(k.start)}: {k.reason}" for k in skipped[:3]) or "no time in bed"
        print(f"plm import: no night in the recording ({found}); nothing was written", file=sys.stderr)
        return 2
    return _import(args, settings, subject, legs, models, nights, skipped)


# ----------------------------------------------------------------------------------------------- legs
def _read_legs(args: argparse.Namespace, settings: Any, subject: str) -> tuple[dict[str, dict], dict[str, str]]:
    """Every file read and assigned a leg; each leg's files joined in time. RecordingError says what is wrong."""
    import numpy as np

    from detector.live.routing import side_from_sensor_id
    from detector.recordings import RecordingError, read_recording

    configured = settings.subject(subject)
    by_side: dict[str, list[Any]] = {"left": [], "right": []}
    unsided = []
    given: list[tuple[str | None, Any]] = [
        (side, path) for side, paths in (("left", args.left), ("right", args.right)) for path in paths
    ]
    given += [(None, path) for path in args.files]
    # two threads: the parsers (pandas, numpy, pygt3x's numpy) release the GIL for much of their work, so two
    # legs' files take little more than one
    with ThreadPoolExecutor(max_workers=min(len(given), 2) or 1, thread_name_prefix="plm-import-read") as pool:
        recordings = list(pool.map(lambda job: read_recording(job[1], timezone=args.timezone), given))
    for (given_side, path), rec in zip(given, recordings, strict=True):
        side = given_side or rec.side or _configured_side(configured, rec.sensor_id)
        side = side or side_from_sensor_id(rec.sensor_id or Path(path).name)
        if side is None:
            unsided.append(rec)
        else:
            by_side[side].append(rec)
    if unsided:
        ids = {rec.sensor_id or rec.path.name for rec in unsided}
        if len(ids) > 1 or by_side["left"] or by_side["right"]:
            names = " and ".join(str(rec.path) for rec in unsided[:2])
            raise RecordingError(
                f"{names} are from different sensors and do not say which leg wore which: give them as "
                "--left FILE --right FILE"
            )
        by_side["left"] = unsided  # one sensor that says nothing: one leg
    for rec in recordings:
        _check_times(rec)
    legs: dict[str, dict] = {}
    models: dict[str, str] = {}
    for side, recs in by_side.items():
        if not recs:
            continue
        recs.sort(key=lambda r: float(r.t[0]))
        for a, b in itertools.pairwise(recs):
            if float(b.t[0]) <= float(a.t[-1]):
                raise RecordingError(
                    f"{a.path} and {b.path} are both the {side} leg and overlap in time: give each leg's recording "
                    "once (the same file twice, or a file and its copy?)"
                )
        first = recs[0]
        sensor = _configured_sensor(configured, side) or first.sensor_id or f"{side}-ankle"
        legs[side] = {
            "t": np.concatenate([r.t for r in recs]) if len(recs) > 1 else first.t,
            "xyz": np.concatenate([r.xyz for r in recs]) if len(recs) > 1 else first.xyz,
            "sensor_id": sensor,
            "rate_hz": first.rate_hz,
            "paths": [r.path for r in recs],
        }
        models[side] = FORMAT_NAMES[first.format]
    if len(legs) == 2 and legs["left"]["sensor_id"] == legs["right"]["sensor_id"]:
        for side, leg in legs.items():  # one id for two legs (files that do not tell devices apart)
            leg["sensor_id"] = f"{leg['sensor_id'][: 31 - len(side)]}-{side}"
    return legs, models


def _check_times(rec: Any) -> None:
    """Refuse times that cannot be a night's clock time, before any night is looked for: relative times (from 0),
    milliseconds and years out of range (``plm score``'s checks on the first half hour), and times ahead of
    this machine's clock (the wire refuses batches more than a day ahead; a device clock set wrong)."""
    import numpy as np

    from detector.recordings import RecordingError
    from detector.recordings.csvio import check_recording, clock_time, is_relative

    t = rec.t
    head = t[: int(np.searchsorted(t, float(t[0]) + 1800.0))] if t.shape[0] > 1 else t
    check_recording(rec.path, head if head.shape[0] > 1 else t)
    if is_relative(t):
        raise RecordingError(
            f"{rec.path}: t counts from {float(t[0]):g} s, not a clock time (Unix seconds), so its nights cannot be "
            "dated: write the file with Unix times (plm score --start ISO-TIME scores it, without importing)"
        )
    if np.abs(rec.xyz).max(initial=0.0) > 32.767:
        raise RecordingError(
            f"{rec.path}: values beyond +-32.767 g (largest {float(np.abs(rec.xyz).max()):.4g}): x/y/z must be in g "
            "(a sensor's range is 16 g at most)"
        )
    if float(t[-1]) > time.time() + 86400.0:
        raise RecordingError(
            f"{rec.path}: the samples reach {clock_time(float(t[-1]))}, later than now: the device's clock was set "
            "wrong; fix the times (or the device's clock) and import again"
        )


def _configured_side(configured: Any, sensor_id: str | None) -> str | None:
    if configured is None or sensor_id is None:
        return None
    return next((s.side for s in configured.sensors if s.id == sensor_id), None)


def _configured_sensor(configured: Any, side: str) -> str | None:
    if configured is None:
        return None
    return next((s.id for s in configured.sensors if s.side == side), None)


# --------------------------------------------------------------------------------------------- import
def _import(
    args: argparse.Namespace,
    settings: Any,
    subject: str,
    legs: dict[str, dict],
    models: dict[str, str],
    nights: list[Any],
    skipped: list[Any],
) -> int:
    import numpy as np

    from detector.live.core import DetectorCore
    from detector.recordings.csvio import CsvError, check_legs, check_recording
    from detector.recordings.replay import Leg, replay_night
    from detector.storage.influx import InfluxSink
    from plm.config import SensorSettings, SubjectSettings

    subject_config = SubjectSettings(
        id=subject,
        sensors=[SensorSettings(id=leg["sensor_id"], side=side) for side, leg in legs.items()],
    )
    core_settings = settings.model_copy(update={"subjects": [subject_config]})
    core = DetectorCore(core_settings)
    lines: list[str] = []
    refused = 0
    total_s = sum(n.end - n.start for n in nights) or 1.0
    progress = ProgressBar(total_s, "importing")
    done_s = 0.0
    with tempfile.TemporaryDirectory(prefix="plm-import-") as tmp:
        sink = InfluxSink(settings.influx, Path(tmp) / "outbox.sqlite")
        try:
            for night in nights:
                night_legs = []
                try:
                    for side, leg in legs.items():
                        a, b = np.searchsorted(leg["t"], [night.start, night.end], side="left")
                        b = int(np.searchsorted(leg["t"], night.end, side="right"))
                        if b - a < 2:
                            continue
                        t, xyz = leg["t"][a:b], leg["xyz"][a:b]
                        check_recording(_names(leg), t)
                        night_legs.append(Leg(side, leg["sensor_id"], leg["rate_hz"], t, xyz, models[side]))
                    if len(night_legs) == 2:
                        left, right = night_legs
                        check_legs(
                            (legs["left"]["paths"][0], left.t, left.xyz),
                            (legs["right"]["paths"][0], right.t, right.xyz),
                        )
                    if not night_legs:
                        raise CsvError("no samples")
                except CsvError as exc:
                    refused += 1
                    progress.clear()
                    print(f"night of {_date(night.start)} left out: {exc}", file=sys.stderr)
                    continue
                base = done_s
                if args.replace:
                    from detector.recordings.replace import delete_night
                    from detector.storage.diary import night_start_for

                    try:
                        first = min(float(leg.t[0]) for leg in night_legs)
                        last = max(float(leg.t[-1]) for leg in night_legs)
                        delete_night(settings.influx, subject, first, last, night_start_for(first))
                    except CsvError as exc:
                        progress.clear()
                        print(f"plm import: {exc}", file=sys.stderr)
                        return 1
                try:
                    result = replay_night(
                        core,
                        subject,
                        night_legs,
                        sink.put,
                        functools.partial(_show_from, progress, base - night.start),
                    )
                except RuntimeError as exc:  # the core dead-lettered something: a bug, not the file's fault
                    progress.clear()
                    print(f"plm import: {exc}; nothing more is imported (please report this)", file=sys.stderr)
                    return 1
                done_s = base + night.end - night.start
                lines.append(_night_line(result, night))
            progress.clear()
            if not sink.flush(FLUSH_TIMEOUT_S):
                print(
                    f"plm import: InfluxDB at {settings.influx.url} did not take the points within "
                    f"{FLUSH_TIMEOUT_S:g} s ({sink.last_error or 'no answer'}); nothing is lost by running plm import "
                    "again once it is reachable (the points replace themselves)",
                    file=sys.stderr,
                )
                return 1
            dead = sink.dead_letters()
            if dead:
                print(f"plm import: InfluxDB refused {len(dead)} point(s): {dead[0]}", file=sys.stderr)
                return 1
            written = sink.sent
        finally:
            sink.close()
    for line in lines:
        print(line)
    for skip in skipped:
        print(f"not a night: {_clock(skip.start)} to {_clock(skip.end)}: {skip.reason}")
    database = settings.influx.bucket
    print(
        f"{len(lines)} night{'s' if len(lines) != 1 else ''} of {subject} written to InfluxDB at {settings.influx.url} "
        f"({database}), {written} points; this product measures, it does not diagnose"
    )
    return 2 if refused else 0


def _names(leg: dict) -> str:
    return ", ".join(str(p) for p in leg["paths"][:2]) + (" ..." if len(leg["paths"]) > 2 else "")


def _date(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d")


def _clock(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M")


def _night_line(result: Any, night: Any) -> str:
    s = result.summary
    index = s.get("plm_index")
    in_bed = s.get("time_in_bed_h")
    missing = s.get("missing_fraction")
    bad = f"; refused by the detector: {result.bad}" if result.bad else ""
    return (
        f"night of {_date(result.start)} ({_clock(result.start)} to {dt.datetime.fromtimestamp(result.end):%H:%M}, "
        f"{' + '.join(result.sides)} leg{'s' if len(result.sides) > 1 else ''}): "
        f"PLM index {'n/a' if index is None else f'{index:.1f}/h'} in bed, {s.get('plm_count', 0)} PLMs, "
        f"{s.get('lm_count', 0)} LMs, time in bed {'n/a' if in_bed is None else f'{in_bed:.2f} h'}, "
        f"missing data {0.0 if missing is None else 100 * missing:.1f} %, {result.points} points{bad}"
    )


def _show_from(progress: Any, offset_s: float, wall_s: float) -> None:
    """The progress bar at a night's data time ``wall_s``, counted from the first night's start."""
    progress.update(offset_s + wall_s)
