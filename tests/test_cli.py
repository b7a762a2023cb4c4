"""The one `plm` command: help, logging set-up, configuration errors, no print() in library code."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from plm.cli import main
from plm.logs import RateLimitedLog, setup_logging

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_PACKAGES = ("plm", "collector", "detector", "simulator")


def test_plm_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "plm.cli", "--help"], capture_output=True, text=True, check=True)
    assert "does not diagnose" in " ".join(out.stdout.split())


def test_bad_log_level_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--log-level", "chatty"])
    assert info.value.code == 2
    assert "chatty" in capsys.readouterr().err.lower()


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_rate_limited_log_suppresses_and_counts(caplog):
    setup_logging("INFO")
    limited = RateLimitedLog(logging.getLogger("t"), interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="t"):
        assert limited.warning("bad", "bad payload %s", 1)
        assert not limited.warning("bad", "bad payload %s", 2)
        assert limited.warning("other", "other kind")
    assert [r.getMessage() for r in caplog.records] == ["bad payload 1", "other kind"]


def _prints_in(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]


def test_library_code_logs_instead_of_printing():
    """CLI modules talk to the user; everything else logs, so services stay quiet and structured."""
    offenders = []
    for package in LIBRARY_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "cli.py" or path.name.endswith("_cli.py"):
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in _prints_in(path)]
    assert offenders == []
