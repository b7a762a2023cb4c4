"""The one `plm` command. Each stage registers its own subcommands; a subcommand exists only once it works.

A stage's CLI module exposes ``register(subparsers)`` which adds its subparsers and sets
``func=handler(args) -> int`` on each. Modules listed here that do not exist yet are simply absent.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from plm.config import ConfigError
from plm.logs import setup_logging

STAGE_CLI_MODULES = (
    "plm.score_events_cli",
    "simulator.cli",
    "detector.cli",
    "detector.report_cli",
    "detector.service_cli",
    "collector.cli",
    "plm.broker_cli",
    "plm.stack_cli",
    "plm.demo_cli",
)

log = logging.getLogger("plm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm",
        description="Overnight leg-movement monitor. It measures leg movements; it does not diagnose.",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: $PLM_LOG_LEVEL or INFO)")
    parser.add_argument("--config", help="TOML configuration file (default: $PLM_CONFIG); environment wins")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLI_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level)
    except ValueError as exc:
        parser.error(str(exc))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"plm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
