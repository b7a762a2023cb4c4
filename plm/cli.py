"""The one `plm` command. Each stage registers its own subcommands; a subcommand exists only once it works.

A stage's CLI module exposes ``register(subparsers)`` which adds its subparsers and sets
``func=handler(args) -> int`` on each. Modules listed here that do not exist yet are simply absent.

Every stage's CLI module is imported to build the parser (``plm --help`` lists all commands), so those
modules import only the standard library and light project modules at the top; a handler imports its
stage's heavy dependencies (numpy, scipy, pydantic, paho, bleak, influxdb_client ...) when it runs.
``plm score`` starts in the time of its own imports, not everyone's (tests/test_cli.py checks this).

A person's slip must end in one line that names the problem, never in a traceback (issue 18): options
check their values where they are parsed (:func:`number`), an ``--out`` directory is made before any
work (:func:`make_output_dir`), and an ``OSError`` that still escapes a handler (a file or directory
that cannot be read or written: always the environment's, never a wrong number) is reported in one
line with exit code 2; ``--log-level DEBUG`` logs its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from plm.logs import setup_logging

STAGE_CLI_MODULES = (
    "plm.score_events_cli",
    "simulator.cli",
    "detector.cli",
    "detector.import_cli",
    "detector.report_cli",
    "detector.service_cli",
    "collector.cli",
    "plm.ops.broker_cli",
    "plm.ops.stack_cli",
    "plm.ops.demo_cli",
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

    def __getitem__(self, index):
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __contains__(self, value: object) -> bool:
        return value in self._all()


class Parser(argparse.ArgumentParser):
    """argparse, reading ``-1/2`` (and ``-1``, ``-0.5``) as a value, not an unknown option.

    Stock argparse takes ``--shard -1/2`` for a missing value ("expected one argument"); the value's own
    check then says what is wrong with it ("need 0 <= K < N"). Subcommand parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+(/\d+)?$|^-\d*\.\d+$")


def number(
    kind: type[int] | type[float] = float,
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number of ``kind`` in ``[low, high]`` (or ``> above``).

    The range is checked where the option is parsed, so ``--speed 0`` is a usage error naming the
    option and its range rather than a ZeroDivisionError deep in a stage."""

    def shown(x: float) -> str:  # 1000000000, not 1e+09
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"

    parts = [f">= {shown(low)}" if low is not None else "", f"> {shown(above)}" if above is not None else ""]
    parts.append(f"<= {shown(high)}" if high is not None else "")
    wanted = " and ".join(p for p in parts if p)

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}"
                + (f" ({wanted})" if wanted else "")
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (above is not None and value <= above)
        ):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {wanted}")
        return value

    parse.__name__ = kind.__name__
    return parse


def make_output_dir(path: str | os.PathLike[str], option: str = "--out") -> str | None:
    """Create the directory an output option names (parents too); None, or the one-line reason it cannot be.

    Made before any work, so that a file where the directory should be, a missing parent or a read-only
    place is said at once, in words, not as a FileExistsError after minutes of simulation."""
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{option} {target}: a file is there, not a directory; give a directory"
    except NotADirectoryError:
        return f"{option} {target}: part of that path is a file, not a directory; give a directory"
    except OSError as exc:
        return f"{option} {target}: cannot create it ({exc.strerror or exc})"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"{option} {target}: no permission to write there"
    return None


def _version() -> str:
    try:
        return importlib.metadata.version("plm-monitor")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="plm",
        description="Overnight leg-movement monitor. It measures leg movements; it does not diagnose.",
    )
    parser.add_argument("--version", action="version", version=f"plm-monitor {_version()}")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: $PLM_LOG_LEVEL or INFO)")
    parser.add_argument("--config", help="TOML configuration file (default: $PLM_CONFIG); environment wins")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLI_MODULES:  # a module that fails to import is a bug to see, not a command to hide
        importlib.import_module(name).register(subparsers)
    return parser


EXTRA_OF_MODULE = {
    "bleak": "collector",
    "scipy": "detector",
    "numba": "detector",
    "llvmlite": "detector",
    "influxdb_client": "detector",
    "platformdirs": "detector",
    "matplotlib": "report",
    "pandas": "fast-csv",
}
"""A third-party module a command imports when it runs -> the extra that installs it (pyproject.toml)."""


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The ``pip install`` line for a module of a role this installation lacks, or None (a bug)."""
    extra = EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])
    return None if extra is None else f"pip install 'plm-monitor[{extra}]'"


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
    except ModuleNotFoundError as exc:  # an installation by role (collector only, say) without this command's extra
        fix = missing_extra(exc)
        if fix is None:
            raise
        print(f"plm {_command(args)}: this installation lacks {exc.name} ({fix} adds it)", file=sys.stderr)
        return 2
    except OSError as exc:  # a file, directory or connection the environment refused: one line, no traceback
        log.debug("%s failed", args.command, exc_info=True)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"plm {_command(args)}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        print(f"plm: {exc}", file=sys.stderr)
        return 2
    if argv is None and getattr(args, "exit_without_teardown", False):
        _exit_without_teardown(code)  # the process is this command (console script or python -m plm.cli)
    return code


def _command(args: argparse.Namespace) -> str:
    """The subcommand's words (``simulate night``), for messages."""
    words = [args.command]
    for name, value in vars(args).items():
        if name.endswith("_command") and isinstance(value, str):
            words.append(value)
    return " ".join(w for w in words if w)


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
