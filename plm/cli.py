"""The one `plm` command. Each stage registers its own subcommands; a subcommand exists only once it works.

A stage's CLI module exposes ``register(subparsers)`` which adds its subparsers and sets
``func=handler(args) -> int`` on each. Modules listed here that do not exist yet are simply absent.

Every stage's CLI module is imported to build the parser (``plm --help`` lists all commands), so those
modules import only the standard library and light project modules at the top; a handler imports its
stage's heavy dependencies (numpy, scipy, pydantic, paho, bleak, influxdb_client ...) when it runs.
``plm score`` starts in the time of its own imports, not everyone's (tests/test_cli.py checks this).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NoReturn

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


class LazyChoices(Sequence[str]):
    """``choices=`` for argparse whose values live in a heavy module: loaded when argparse first looks
    (checking a value, or printing that subcommand's help), not when ``register`` builds the parser.
    In a help string, ``%(choices)s`` lists them lazily too."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        self._values: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    def __getitem__(self, index):  # type: ignore[override]
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __contains__(self, value: object) -> bool:
        return value in self._all()


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
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``plm score --json | head``): not our error, so no traceback. Point stdout
        # at /dev/null so that the interpreter's final flush does not fail on the same pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        print(f"plm: {exc}", file=sys.stderr)
        return 2
    if argv is None and getattr(args, "exit_without_teardown", False):
        _exit_without_teardown(code)  # the process is this command (console script or python -m plm.cli)
    return code


def _exit_without_teardown(code: int) -> NoReturn:
    """End the process now: flush what was written and skip the interpreter's teardown.

    After ``plm score`` has printed its result, freeing thousands of modules (scipy, numba) and objects
    one by one takes another 0.5-0.8 s that the user waits for and gets nothing from. Only commands that
    opt in with ``set_defaults(exit_without_teardown=True)`` do this: offline ones that hold no
    connection, thread or file to close. A failed flush exits 120, as Python's own exit does."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


def _is_config_error(exc: BaseException) -> bool:
    """A :class:`plm.config.ConfigError`, without importing plm.config (pydantic) for commands that never
    load settings: if the module was never imported, the error cannot be one of its."""
    config = sys.modules.get("plm.config")
    return config is not None and isinstance(exc, config.ConfigError)


if __name__ == "__main__":
    sys.exit(main())
