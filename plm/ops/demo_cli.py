"""`plm demo`: a simulated night through mosquitto, the detector and influxd, in under a minute.

Every option is checked where it is parsed and ``--out`` is made before the servers start, so a slip
(``--speed 0``, a file given as ``--out``) is one line and exit code 2, not a traceback (issue 18).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from plm.cli import make_output_dir, number

MAX_SPEED = 1000.0  # simulator.stream.MAX_SPEED (not imported here: the parser stays light)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="stream a simulated night through the real pipeline (no Docker; needs mosquitto and influxd)",
        description=(
            "Start mosquitto and influxd (1.x) on free loopback ports in a temporary directory, stream a "
            "simulated night at high speed through simulator -> MQTT -> detector -> InfluxDB, print the night "
            "read back from InfluxDB next to the simulator's truth and write the night report. "
            "Measures; does not diagnose."
        ),
    )
    parser.add_argument(
        "--hours", type=number(float, 0.25, 16), default=4.0, help="length of the night (0.25-16, default 4)"
    )
    parser.add_argument(
        "--speed",
        type=number(float, above=0, high=MAX_SPEED),
        default=MAX_SPEED,
        help="times real time (> 0, max 1000, default 1000)",
    )
    parser.add_argument("--profile", default="rls-severe", help="simulator profile (default rls-severe)")
    parser.add_argument("--seed", type=number(int, 0), default=0, help="random seed of the night (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="keep state and report here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Ctrl-C (for Grafana)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from plm.ops.demo import DemoError, env_hint, format_result, grafana_hint, run_demo
    from plm.ops.localservices import ServiceError

    keep = threading.Event() if args.keep else None
    if keep is not None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: keep.set())

    def ready(result) -> None:
        print(format_result(result))
        _print_report(result)
        print(grafana_hint(result))
        print(env_hint(result))
        print(f"servers running: MQTT {result.mqtt_url}, InfluxDB {result.influx_url}; Ctrl-C stops them")

    if args.out is not None and (problem := make_output_dir(args.out)):
        print(f"plm demo: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="plm-demo-") as tmp:
        out = args.out or Path(tmp)
        print(f"plm demo: {args.hours:g} h {args.profile} night at {args.speed:g}x (servers in {out}/services) ...")
        try:
            result = run_demo(
                out,
                hours=args.hours,
                speed=args.speed,
                profile=args.profile,
                seed=args.seed,
                keep=keep,
                on_ready=ready,
            )
        except (DemoError, ServiceError, ValueError, ConnectionError) as exc:
            print(f"plm demo: {exc}", file=sys.stderr)
            return 1
        if keep is None:
            print(format_result(result))
            _print_report(result)
            print(grafana_hint(result))
        if args.out is None and result.report is not None:
            print("(the report was in a temporary directory; use --out DIR to keep it)")
    return 0


def _print_report(result) -> None:
    if result.report is not None:
        print(f"night report: {result.report} -- {result.report_note}")
    else:
        print(result.report_note)
