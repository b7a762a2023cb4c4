"""``plm simulate night`` and ``plm simulate stream``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from plm.cli import LazyChoices

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("simulate", help="simulated nights with ground truth (no sensor needed)")
    sub = sim.add_subparsers(dest="simulate_command", metavar="SUBCOMMAND")

    night = sub.add_parser("night", help="write one night as CSV per leg plus truth.json")
    _common(night)
    night.add_argument("--legs", choices=("both", "left", "right"), default="both")
    night.add_argument("--start", type=float, default=None, help="recording start, Unix seconds (default: per seed)")
    night.add_argument("--out", required=True, help="output directory")
    night.add_argument("--gzip", action="store_true", help="write <side>.csv.gz")
    night.add_argument("--gap", choices=("auto", "yes", "no"), default="auto", help="sensor-off gap (auto: 25 %%)")
    night.add_argument("--no-drops", action="store_true", help="no dropped packets")
    night.add_argument("--no-drift", action="store_true", help="no clock drift")
    night.add_argument("--no-partner", action="store_true", help="no bed-partner vibration")
    night.set_defaults(func=_night)

    stream = sub.add_parser("stream", help="publish live batches for N simulated subjects to MQTT")
    _common(stream)
    stream.add_argument("--subjects", type=int, default=1, help="number of subjects (two sensors each)")
    stream.add_argument("--speed", type=float, default=1.0, help="1 = real time, up to 1000")
    stream.add_argument("--encoding", choices=("binary", "json"), default="binary")
    stream.add_argument("--batch-s", type=float, default=1.0, help="seconds of samples per MQTT message")
    stream.add_argument("--prefix", default="sim", help="subject id prefix (sim001, sim002, ...)")
    stream.set_defaults(func=_stream)
    sim.set_defaults(func=lambda _args: (sim.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=LazyChoices(_profile_names), default="rls-moderate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=52.0, help="sample rate in Hz (default 52)")
    p.add_argument("--duration-h", type=float, default=None, help="recording length in hours (default 8)")
    p.add_argument("--age", type=float, default=None, help="subject age (default: the profile's)")


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
    try:
        night = simulate_night(args.profile, args.seed, args.rate, args.legs, args.start, args.duration_h, **options)
    except (ValueError, TypeError) as exc:
        print(f"plm simulate night: {exc}")
        return 2
    paths = night.write(args.out, gzip=args.gzip)
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
        print(f"plm simulate stream: {exc}")
        return 2
    print(
        f"published {stats.batches} batches ({stats.samples} samples) for {stats.sensors} sensors "
        f"in {stats.elapsed_s:.1f} s; max lag {stats.max_lag_s:.2f} s"
    )
    return 0
