"""Installable by role (issue #17): a collector-only installation -- the computer by the bed, a Raspberry Pi --
has no numba, scipy or InfluxDB client, runs `plm collect`, passes the collector's tests, and a command of
another role says which extra to install instead of a traceback.

Installs into a fresh virtualenv from the package registry (pip's cache makes it quick after the first run)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR_TESTS = [
    "tests/test_collector_decoders.py",
    "tests/test_collector_timing.py",
    "tests/test_collector_e2e.py",
    "tests/test_collect_bluetooth.py",
    "tests/test_wire.py",
    "tests/test_paho_private_api.py",
]


@pytest.fixture(scope="module")
def collector_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("collector-venv")
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_REQUIRE", "VIRTUAL_ENV"))}
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[collector]",
         "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if install.returncode != 0:
        pytest.fail(f"pip could not install the collector extra:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")
    return python


def _run(python: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, cwd="/")


def test_the_collector_role_has_no_scoring_stack(collector_venv: Path) -> None:
    done = _run(collector_venv, "-c", "import importlib.util as u; print([m for m in ('numba', 'scipy', "
                "'influxdb_client', 'matplotlib', 'bleak', 'paho') if u.find_spec(m)])")  # fmt: skip
    assert done.stdout.strip() == "['bleak', 'paho']", done.stdout + done.stderr


def test_plm_collect_runs_and_other_roles_name_their_extra(collector_venv: Path, tmp_path: Path) -> None:
    plm = collector_venv.parent / "plm"
    helped = subprocess.run([plm, "collect", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "collect" in helped.stdout, helped.stderr
    csv = tmp_path / "leg.csv"
    csv.write_text("t,x,y,z\n" + "".join(f"{1_700_000_000 + i / 52:.4f},0,0,1\n" for i in range(52 * 700)))
    scored = subprocess.run([plm, "score", str(csv)], capture_output=True, text=True, timeout=60)
    assert scored.returncode == 2 and "Traceback" not in scored.stderr, scored.stderr
    assert "pip install 'plm-monitor[detector]'" in scored.stderr, scored.stderr


def test_the_collectors_tests_pass_in_the_collector_role(collector_venv: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the tests import tests.* helpers; the package is installed
    env.pop("PYTHONHOME", None)
    done = subprocess.run(
        [collector_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), *COLLECTOR_TESTS],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-500:]


def test_the_test_runner_is_not_this_venv() -> None:
    assert "collector-venv" not in sys.executable  # the suite itself runs in the full installation
