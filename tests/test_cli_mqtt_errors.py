"""Issue 18: with no broker, `plm detect` and `plm simulate stream` say which address they could not reach.

They said "[Errno 111] Connection refused" and nothing else; the address is named once, where every
command connects (plm.mqtt.connect)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from plm.config import MqttSettings
from plm.mqtt import connect, make_client

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_names_the_address_it_could_not_reach() -> None:
    port = _closed_port()
    settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}")
    client = make_client(settings, "t-refused")
    with pytest.raises(ConnectionError) as info:
        connect(client, settings, timeout_s=2)
    message = str(info.value)
    assert f"cannot reach the MQTT broker at 127.0.0.1:{port} (Connection refused)" in message
    assert "PLM_MQTT__URL" in message


@pytest.mark.parametrize("command", [["detect"], ["simulate", "stream", "--duration-h", "0.25"]])
def test_commands_without_a_broker_say_where_they_looked(tmp_path: Path, command: list[str]) -> None:
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLM_")}
    env.update(PLM_MQTT__URL=f"mqtt://127.0.0.1:{port}", PLM_DETECTOR__STATE_DIR=str(tmp_path / "state"))
    done = subprocess.run(
        [sys.executable, "-m", "plm.cli", *command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout
    assert f"cannot reach the MQTT broker at 127.0.0.1:{port} (Connection refused)" in done.stderr
