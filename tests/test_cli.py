"""The one `plm` command: help, logging set-up, configuration errors, no print() in library code."""

from __future__ import annotations

import ast
import json
import logging
import os
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


HEAVY_FOR_EVERYONE = {"paho", "bleak", "influxdb_client", "pydantic", "pydantic_settings", "matplotlib", "jinja2"}


def _imported_after(code: str) -> set[str]:
    """Top-level packages imported by a fresh interpreter running ``code``."""
    probe = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_building_the_parser_imports_no_stage_dependencies():
    """`plm --help` (and every command's start) builds the whole parser: stage CLI modules stay light."""
    imported = _imported_after("from plm.cli import build_parser\nbuild_parser().format_help()")
    assert imported & (HEAVY_FOR_EVERYONE | {"scipy", "pandas", "numba", "asyncio"}) == set()


def _write_leg(path: Path, seconds: int = 660) -> Path:
    """A still leg, long enough to be scored (`plm score` refuses less than 10 minutes of samples)."""
    t = [1_700_000_000 + i / 52 for i in range(52 * seconds)]
    path.write_text("t,x,y,z\n" + "".join(f"{v:.3f},0.010,-0.020,0.998\n" for v in t))
    return path


def test_plm_score_imports_only_what_scoring_needs(tmp_path):
    """Issue 4: `plm score` must not wait for MQTT, BLE, InfluxDB, settings, report or pandas imports."""
    _write_leg(tmp_path / "leg.csv")
    code = (
        "from plm.cli import main\n"
        f"assert main(['score', {str(tmp_path / 'leg.csv')!r}, '--json']) == 0\n"
        "sys.stdout.write('\\n')"
    )
    imported = _imported_after(f"import sys\n{code}")
    assert "numpy" in imported and "detector" in imported  # it did score
    assert imported & (HEAVY_FOR_EVERYONE | {"pandas"}) == set()


def test_lazy_choices_check_and_list_values(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "night", "--profile", "nope", "--out", "unused"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'rls-moderate'" in err
    with pytest.raises(SystemExit):
        main(["stack", "show", "--help"])
    assert "viewer" in capsys.readouterr().out


def test_configuration_errors_are_still_reported_without_a_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing), "note", "--subject", "alice", "coffee"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_plm_score_process_flushes_its_output_before_the_quick_exit(tmp_path):
    """As a process, `plm score` ends with os._exit (no interpreter teardown): what it printed must all arrive."""
    leg = _write_leg(tmp_path / "leg.csv")
    run = [sys.executable, "-m", "plm.cli", "score", str(leg)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usually run
    out = subprocess.run([*run, "--json"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["sides"] == ["left"]
    with (tmp_path / "summary.txt").open("w") as handle:  # a file: block-buffered, lost without the flush
        assert subprocess.run(run, stdout=handle, cwd=ROOT, env=env).returncode == 0
    assert "does not diagnose" in (tmp_path / "summary.txt").read_text()
    (tmp_path / "bad.csv").write_text("t,x,y,z\n1,0,0,x\n")
    out = subprocess.run([*run[:-1], str(tmp_path / "bad.csv")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 2 and "bad.csv: line 2: column z is not a number" in out.stderr


def test_a_closed_output_pipe_ends_quietly(tmp_path) -> None:
    """`plm score --json | head` must not end in a BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    csv = _write_leg(tmp_path / "leg.csv")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is already gone: the first write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "plm.cli", "score", str(csv), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode != 0
