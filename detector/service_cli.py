"""`plm detect`: the always-on service between the broker and the database."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 0/2") from None
    if not (n >= 1 and 0 <= k < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="score live sample batches from MQTT and write movements and nights to InfluxDB",
        description=(
            "Subscribe to plm/v1/+/+/acc, score each subject's night live (the same scorer as `plm score`), "
            "and write movements, PLM series and night summaries to InfluxDB through a durable outbox. "
            "Measures; does not diagnose."
        ),
    )
    parser.add_argument("--shard", type=_shard, default=(0, 1), help="K/N: score only subjects in slot K of N")
    parser.add_argument("--instance", help="instance name (client id, state files); default from config")
    parser.add_argument(
        "--idle-end-min", type=float, default=30.0, help="end a night after this many minutes without data"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detector.service import LiveDetector
    from plm.config import load_settings

    settings = load_settings(args.config)
    detector = LiveDetector(settings, shard=args.shard, instance=args.instance, idle_end_s=args.idle_end_min * 60)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        detector.start()
    except ConnectionError as exc:
        print(f"plm detect: {exc}", file=sys.stderr)
        detector.stop()
        return 1
    stop.wait()
    detector.stop()
    return 0
