"""`plm collect` on a machine whose Bluetooth is missing says so once, in words, and exits non-zero,
instead of retrying each sensor forever with a bare ``FileNotFoundError``. Real bleak, real D-Bus:
the system bus is pointed at a socket that does not exist, or at a real dbus-daemon with no bluetoothd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason

from collector.ble import bluetooth_problem

CONFIG = """
[[subjects]]
id = "alice"
[[subjects.sensors]]
id = "left-ankle"
side = "left"
driver = "polar_pmd"
name = "Polar Sense"
"""


def collect(tmp_path: Path, bus: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "plm.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLM_")}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus
    env["PLM_COLLECTOR__QUEUE_DIR"] = str(tmp_path / "queue")
    cmd = [sys.executable, "-m", "plm.cli", "--config", str(config), "collect", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.fixture
def bus_without_bluez(tmp_path: Path) -> Iterator[str]:
    """A real dbus-daemon on a private socket: a system bus on which no bluetoothd runs."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon not installed (apt-get install dbus-daemon)")
    socket = tmp_path / "bus"
    proc = subprocess.Popen(
        [daemon, "--session", "--nofork", "--nopidfile", f"--address=unix:path={socket}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "dbus-daemon did not start"
            time.sleep(0.05)
        yield f"unix:path={socket}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_collect_without_a_system_bus_says_no_bluetooth_once(tmp_path: Path) -> None:
    started = time.monotonic()
    run = collect(tmp_path, f"unix:path={tmp_path}/no-such-socket", "--seconds", "30")
    assert run.returncode == 1, run.stderr
    assert time.monotonic() - started < 25, "gives up at once instead of retrying until --seconds"
    output = run.stdout + run.stderr
    assert output.count("no Bluetooth adapter / bluetoothd not running") == 1, output
    assert "FileNotFoundError" not in output and "Traceback" not in output and "reconnecting" not in output
    assert run.stderr.startswith("plm collect: no Bluetooth adapter / bluetoothd not running")


def test_collect_with_no_bluetoothd_on_the_bus_says_so(tmp_path: Path, bus_without_bluez: str) -> None:
    run = collect(tmp_path, bus_without_bluez, "--seconds", "30")
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("bluetoothd is not running") == 1, run.stderr
    assert "ServiceUnknown" not in run.stderr and "reconnecting" not in run.stderr
    scan = collect(tmp_path, bus_without_bluez, "--scan", "--scan-seconds", "1")
    assert scan.returncode == 1
    assert scan.stderr.startswith("plm collect --scan: bluetoothd is not running"), scan.stderr


def test_no_adapter_and_adapter_off_are_named() -> None:
    none = BleakBluetoothNotAvailableError(
        "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
    )
    assert bluetooth_problem(none).startswith("no Bluetooth adapter found")
    off = BleakBluetoothNotAvailableError("adapter off", BleakBluetoothNotAvailableReason.POWERED_OFF)
    assert "switched off" in bluetooth_problem(off)
    assert bluetooth_problem(TimeoutError("Polar Sense not seen in a 20 s scan")) is None, "a sensor problem, not BT"
