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
        help="write one night as CSV per leg plus truth.json",
        description="Simulate one night of ankle acceleration (t,x,y,z CSV per leg, t in Unix seconds, x/y/z "
        "in g) with its ground truth (truth.json: every movement and the night's true scores).",
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
        "--gap",
        choices=("auto", "yes", "no"),
        default="auto",
        help="a sensor-off gap in the night (auto: in 25 %% of seeds)",
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
    p.add_argument("--rate", type=number(float, 10, 500), default=52.0, help="sample rate in Hz, 10-500 (default 52)")
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
    if args.age is not None:
        options["age"] = args.age
    if problem := make_output_dir(args.out):
        print(f"plm simulate night: {problem}", file=sys.stderr)
        return 2
    try:
        night = simulate_night(args.profile, args.seed, args.rate, args.legs, args.start, args.duration_h, **options)
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
        rate_hz=args.rate,
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
