"""``plm simulate night`` and ``plm simulate stream``.

Every option has help text and is checked where it is parsed (ranges as in :mod:`simulator.api` and
:class:`simulator.stream.StreamConfig`), and ``--out`` is made before the night is simulated, so a slip
is one line with exit code 2, not a traceback (issue 18). Errors go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from plm.cli import LazyChoices, make_output_dir, number

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("simulate", help="simulated nights with ground truth (no sensor needed)")
    sub = sim.add_subparsers(dest="simulate_command", metavar="SUBCOMMAND")

    night = sub.add_parser(
        "night",
        help="write one night (or --days N) as a file per leg plus truth.json",
        description="Simulate one night of ankle acceleration (t,x,y,z CSV per leg, t in Unix seconds, x/y/z "
        "in g; or a Polar Sensor Logger, ActiGraph .gt3x or Axivity .cwa file with --format) with its ground "
        "truth (truth.json: every movement and the night's true scores).",
    )
    _common(night)
    night.add_argument(
        "--legs", choices=("both", "left", "right"), default="both", help="which legs wear a sensor (default both)"
    )
    night.add_argument(
        "--start",
        type=number(float, 1e9, 9.9e9),
        default=None,
        help="recording start, Unix seconds (2001-2283; default: an evening chosen by the seed)",
    )
    night.add_argument("--out", required=True, help="output directory (created if missing)")
    night.add_argument("--gzip", action="store_true", help="write <side>.csv.gz instead of <side>.csv")
    night.add_argument(
        "--format",
        choices=("csv", "psl", "gt3x", "cwa"),
        default="csv",
        help="file format: csv (default), psl (Polar Sensor Logger ACC text), gt3x (ActiGraph; 30-100 Hz, even), "
        "cwa (Axivity AX3; 25/50/100/200/400 Hz); default rate 52 Hz, 30 Hz for gt3x, 50 Hz for cwa",
    )
    night.add_argument(
        "--days",
        type=number(int, 1, 14),
        default=None,
        help="a multi-day recording (1-14): that many nights and the days between them in one file per leg, as an "
        "actigraph worn for a week records (no drops, no drift; truth.json lists each night)",
    )
    night.add_argument(
        "--gap",
        choices=("auto", "yes", "no"),
        default="auto",
        help="a sensor-off gap in the night (auto: in 25 %% of seeds)",
    )
    night.add_argument(
        "--taken-off",
        choices=("no", "yes", "auto"),
        default="no",
        help="the sensor taken off the ankle onto a table once, put back on half the time (auto: in 20 %% of seeds)",
    )
    night.add_argument(
        "--strap-slip",
        choices=("no", "yes", "auto"),
        default="no",
        help="the sensor turns on the ankle 0-4 times, the leg still (auto: in 20 %% of seeds)",
    )
    night.add_argument("--no-drops", action="store_true", help="no dropped packets (default: realistic drops)")
    night.add_argument("--no-drift", action="store_true", help="no sensor clock drift (default: realistic drift)")
    night.add_argument(
        "--no-partner", action="store_true", help="no bed-partner vibration (default: some, as in a shared bed)"
    )
    night.set_defaults(func=_night)

    stream = sub.add_parser("stream", help="publish live batches for N simulated subjects to MQTT")
    _common(stream)
    stream.add_argument(
        "--subjects", type=number(int, 1, 10000), default=1, help="number of subjects, 1-10000 (two sensors each)"
    )
    stream.add_argument(
        "--speed", type=number(float, above=0, high=1000), default=1.0, help="1 = real time, up to 1000"
    )
    stream.add_argument(
        "--encoding", choices=("binary", "json"), default="binary", help="payload format (default binary)"
    )
    stream.add_argument(
        "--batch-s", type=number(float, 0.05, 10), default=1.0, help="seconds of samples per MQTT message (0.05-10)"
    )
    stream.add_argument("--prefix", default="sim", help="subject id prefix (sim001, sim002, ...)")
    stream.set_defaults(func=_stream)
    sim.set_defaults(func=lambda _args: (sim.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=LazyChoices(_profile_names),
        default="rls-moderate",
        help="the simulated person: %(choices)s (default rls-moderate)",
    )
    p.add_argument("--seed", type=number(int, 0), default=0, help="random seed: the same seed, the same night")
    p.add_argument(
        "--rate", type=number(float, 10, 500), default=None, help="sample rate in Hz, 10-500 (default 52; see --format)"
    )
    p.add_argument(
        "--duration-h",
        type=number(float),  # the range is simulator.api's to check (its message names 0.25-16 h)
        default=None,
        help="recording length in hours, 0.25-16 (default 8)",
    )
    p.add_argument(
        "--age", type=number(float, 5, 100), default=None, help="subject age in years, 5-100 (default: the profile's)"
    )


def _profile_names() -> tuple[str, ...]:
    from simulator.profiles import PROFILES  # the simulator (numpy) is imported only when its commands run

    return tuple(PROFILES)


def _night(args: argparse.Namespace) -> int:
    from simulator.api import simulate_night

    t0 = time.perf_counter()
    options = {"gap": {"auto": None, "yes": True, "no": False}[args.gap]}
    if args.no_drops:
        options["drops"] = False
    if args.no_drift:
        options["drift"] = False
    if args.no_partner:
        options["partner"] = False
    if args.taken_off != "no":
        options["taken_off"] = {"auto": None, "yes": True}[args.taken_off]
    if args.strap_slip != "no":
        options["strap_slip"] = {"auto": None, "yes": True}[args.strap_slip]
    if args.age is not None:
        options["age"] = args.age
    if problem := make_output_dir(args.out):
        print(f"plm simulate night: {problem}", file=sys.stderr)
        return 2
    if args.days is not None or args.format != "csv":
        return _night_in_format(args, options, t0)
    try:
        night = simulate_night(
            args.profile, args.seed, args.rate or 52.0, args.legs, args.start, args.duration_h, **options
        )
        paths = night.write(args.out, gzip=args.gzip)
    except (ValueError, TypeError) as exc:
        print(f"plm simulate night: {exc}", file=sys.stderr)
        return 2
    truth = night.truth
    idx = truth.indices()
    score = truth.score()
    print(
        f"{args.profile} seed {args.seed}: {truth.hours()['in_bed']:.2f} h in bed, "
        f"{score.plm_count} PLM, PLM index {idx['plm_index']:.1f}/h in bed"
        + (f", PLMS index {idx['plms_index']:.1f}/h of sleep" if idx["plms_index"] is not None else "")
        + f" (simulated; measures, does not diagnose) -> {', '.join(str(p) for p in paths.values())} "
        f"in {time.perf_counter() - t0:.2f} s"
    )
    return 0


def _stream(args: argparse.Namespace) -> int:
    from plm.config import load_settings
    from simulator.stream import StreamConfig, stream_nights

    settings = load_settings(args.config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    config = StreamConfig(
        subjects=args.subjects,
        speed=args.speed,
        rate_hz=args.rate or 52.0,
        profile=args.profile,
        seed=args.seed,
        encoding=args.encoding,
        duration_h=args.duration_h,
        batch_s=args.batch_s,
        prefix=args.prefix,
        age=args.age,
    )
    try:
        stats = stream_nights(settings.mqtt, config, stop=stop)
    except (ValueError, ConnectionError) as exc:
        print(f"plm simulate stream: {exc}", file=sys.stderr)
        return 2
    print(
        f"published {stats.batches} batches ({stats.samples} samples) for {stats.sensors} sensors "
        f"in {stats.elapsed_s:.1f} s; max lag {stats.max_lag_s:.2f} s"
    )
    return 0


def _night_in_format(args: argparse.Namespace, options: dict, t0: float) -> int:
    """``--format psl|gt3x|cwa`` and ``--days N``: the night(s) in a recording file format (simulator/formats.py)."""
    import json
    from pathlib import Path

    from simulator import formats
    from simulator.api import simulate_night

    rate = args.rate or formats.DEFAULT_RATE_HZ[args.format]
    out = Path(args.out)
    try:
        if args.gzip:
            raise ValueError("--gzip is for CSV files only")
        if args.days is not None:
            multi = formats.simulate_days(
                args.profile, args.seed, args.days, rate, args.legs, args.start, args.duration_h or 8.5
            )
            written = {s: formats.write_leg(args.format, out, s, t, xyz, rate) for s, (t, xyz) in multi.legs.items()}
            truth = {
                "note": "Simulated data. This product measures leg movements; it does not diagnose.",
                "days": args.days,
                "nights": [n.to_dict() for n in multi.nights],
            }
            (out / "truth.json").write_text(json.dumps(truth))
            what = f"{args.days} days and nights, in bed " + ", ".join(
                f"{(b - a) / 3600:.1f} h" for a, b in multi.in_bed()
            )
        else:
            night = simulate_night(args.profile, args.seed, rate, args.legs, args.start, args.duration_h, **options)
            written = {}
            for side, leg in night.legs.items():
                t = leg.t if args.format == "csv" else formats.device_grid(leg.device_ns, leg.index, rate)
                written[side] = formats.write_leg(args.format, out, side, t, leg.xyz, rate, leg.device_ns)
            night.truth.write(out / "truth.json")
            what = f"{night.truth.hours()['in_bed']:.2f} h in bed"
    except (ValueError, TypeError) as exc:
        print(f"plm simulate night: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.profile} seed {args.seed} ({args.format}, {rate:g} Hz): {what} (simulated; measures, does not "
        f"diagnose) -> {', '.join(str(w.path) for w in written.values())} in {time.perf_counter() - t0:.2f} s"
    )
    return 0
