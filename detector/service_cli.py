"""`plm detect`: the always-on service between the broker and the database."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plm.config import Settings


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 0/2") from None
    if not (n >= 1 and 0 <= k < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def _instance(text: str) -> str:
    from plm import wire

    try:
        return wire.validate_id(text, "detector instance")
    except wire.WireFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    parser.add_argument(
        "--instance", type=_instance, help="instance name (client id, state files); default from config"
    )
    parser.add_argument(
        "--idle-end-min", type=float, default=30.0, help="end a night after this many minutes without data"
    )
    parser.add_argument(
        "--dead-letters",
        type=int,
        nargs="?",
        const=20,
        metavar="N",
        help="print the N newest dead letters (messages that raised while being applied) and exit",
    )
    parser.set_defaults(func=run)


EXIT_WORKER_FAILED = 1
EXIT_CANNOT_START = 2


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; exit non-zero when the worker dies or stalls, so systemd or compose restarts
    the service (a process that stays up and scores nothing is the one failure nobody notices)."""
    from detector.live.service import STALLED_AFTER_S, LiveDetector
    from detector.storage.journal import JournalError
    from detector.storage.outbox import OutboxError
    from plm.config import load_settings

    settings = load_settings(args.config)
    if args.dead_letters is not None:
        return _print_dead_letters(settings, args)
    try:
        detector = LiveDetector(settings, shard=args.shard, instance=args.instance, idle_end_s=args.idle_end_min * 60)
    except (JournalError, OutboxError) as exc:
        print(f"plm detect: {exc}. {_STATE_FIX.format(state_dir=settings.detector.state_dir)}", file=sys.stderr)
        return EXIT_CANNOT_START
    except ValueError as exc:  # detector.instance of the configuration is not a usable id
        print(f"plm detect: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        detector.start()  # replays the journal first: a state file can fail here too
    except (JournalError, OutboxError) as exc:
        print(f"plm detect: {exc}. {_STATE_FIX.format(state_dir=settings.detector.state_dir)}", file=sys.stderr)
        return EXIT_CANNOT_START
    except ConnectionError as exc:
        print(f"plm detect: {exc}", file=sys.stderr)
        detector.stop()
        return 1
    while not stop.wait(1.0):
        if detector.failure is not None:
            failure = detector.failure
            print(f"plm detect: the worker stopped ({type(failure).__name__}: {failure}); exiting", file=sys.stderr)
            detector.stop()
            return EXIT_WORKER_FAILED
        stalled = detector.stalled_for()
        if stalled > STALLED_AFTER_S:
            # a stuck worker cannot be stopped cleanly (stop() would wait for it, and checkpoint beside it): leave
            # now; the journal replays what was acknowledged, and the broker publishes our Last Will ("lost")
            print(f"plm detect: the worker has not finished a loop for {stalled:.0f} s; exiting", file=sys.stderr)
            return EXIT_WORKER_FAILED
    detector.stop()
    return 0


_STATE_FIX = (
    "The detector keeps its journal and outbox in {state_dir} (detector.state_dir): it must be a folder this user "
    "can write; a file that is not a database can be moved aside (the detector then starts a new one)"
)


def _print_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """What the worker set aside, newest first: when, where, the error, the payload's start (see
    docs/reliability.md, 'Dead letters')."""
    import datetime as dt
    from pathlib import Path

    from detector.storage.journal import Journal, JournalError
    from plm import wire

    instance = wire.validate_id(args.instance or settings.detector.instance, "detector instance")
    try:
        journal = Journal(Path(settings.detector.state_dir) / f"{instance}-journal.sqlite")
    except JournalError as exc:
        print(f"plm detect: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    rows = journal.dead_letters(max(1, args.dead_letters))
    print(f"{journal.dead_letter_total} dead letter(s) filed by detector {instance}; newest {len(rows)}:")
    for row in rows:
        when = dt.datetime.fromtimestamp(row["at_s"]).astimezone().isoformat(timespec="seconds")
        print(f"#{row['id']} {when} [{row['stage']}] {row['topic']}: {row['error']}")
        print(f"    payload ({len(row['payload'])} bytes): {bytes(row['payload'][:80])!r}")
    journal.close()
    return 0
