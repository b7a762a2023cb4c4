"""paho-mqtt's private names that plm/mqtt.py relies on (issue #17): one test per name, each failing with the
name and what it is used for, so a paho upgrade that renames one is found here and not in the middle of a
night. The behaviour behind each is exercised against a real mosquitto in tests/test_mqtt_buffered.py."""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from plm.mqtt import PAHO_PRIVATE_NAMES, BufferedReadClient, forget_unacknowledged

ROOT = Path(__file__).resolve().parents[1]


def _client() -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, manual_ack=True)


def _resolve(name: str) -> object:
    if name.startswith("Client."):
        attribute = name.removeprefix("Client.")
        client = _client()
        if not hasattr(client, attribute):
            pytest.fail(f"paho-mqtt has no {name} any more; plm/mqtt.py uses it to {PAHO_PRIVATE_NAMES[name]}")
        return getattr(client, attribute)
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        pytest.fail(f"paho-mqtt has no {name} any more; plm/mqtt.py uses it to {PAHO_PRIVATE_NAMES[name]}")
    return found


EXPECTED_PARAMETERS = {
    "Client._packet_queue": ["command", "packet", "mid", "qos", "info"],
    "Client._sock_recv": ["bufsize"],
    "Client._send_puback": ["mid"],
    "paho.mqtt._packet.decode_publish": ["header", "packet", "protocol"],
}


@pytest.mark.parametrize("name", sorted(PAHO_PRIVATE_NAMES))
def test_paho_still_has(name: str) -> None:
    value = _resolve(name)
    why = PAHO_PRIVATE_NAMES[name]
    if name in EXPECTED_PARAMETERS:
        got = [p for p in inspect.signature(value).parameters if p != "self"]
        assert got[: len(EXPECTED_PARAMETERS[name])] == EXPECTED_PARAMETERS[name], (
            f"{name} changed its parameters to {got}: plm/mqtt.py uses it to {why}"
        )
    elif name == "Client._in_packet":
        assert {"command", "packet"} <= set(value), f"{name} no longer holds command/packet: used to {why}"
    elif name == "Client._out_messages":
        assert isinstance(value, dict), f"{name} is no longer a dict of mid -> message: used to {why}"
    elif name == "Client._out_message_mutex":
        assert hasattr(value, "__enter__") and hasattr(value, "acquire"), f"{name} is no longer a lock: used to {why}"
    elif name == "Client._manual_ack":
        assert value is True, f"{name} no longer reflects manual_ack=True: used to {why}"
    elif name == "Client._protocol":
        assert value == mqtt.MQTTv311, f"{name} no longer holds the protocol: used to {why}"
    elif name in ("Client._handle_publish", "Client._sock_close", "Client._easy_log"):
        assert callable(value), f"{name} is no longer a method: used to {why}"
    elif name == "Client._sock":
        assert value is None, f"{name} is not None before a connect: used to {why}"
    else:
        pytest.fail(f"{name} is listed in PAHO_PRIVATE_NAMES but has no check here")


def test_the_overrides_still_override_something() -> None:
    """A method paho renamed would leave our override uncalled, silently: each must shadow paho's own."""
    for name in ("_handle_publish", "_sock_recv", "_sock_close", "loop_read"):
        assert name in vars(BufferedReadClient), name
        assert hasattr(mqtt.Client, name), f"paho-mqtt has no Client.{name}: BufferedReadClient's override is dead"


def test_forget_unacknowledged_drops_only_that_topic() -> None:
    client = _client()
    client._out_messages.update(
        {1: mqtt.MQTTMessage(1, b"a/acc"), 2: mqtt.MQTTMessage(2, b"b/acc"), 3: mqtt.MQTTMessage(3, b"a/acc")}
    )
    holder: list[bool] = []
    locked = threading.Thread(target=lambda: holder.append(client._out_message_mutex.acquire(timeout=0)))
    assert forget_unacknowledged(client, "a/acc") == 2
    locked.start()
    locked.join()
    assert holder == [True], "the lock was left held"
    assert list(client._out_messages) == [2]


PRIVATE_USE = re.compile(r"\._(?:" + "|".join(n.rpartition(".")[2] for n in PAHO_PRIVATE_NAMES) + r")\b")


def test_no_other_module_uses_paho_privates() -> None:
    """Contained: only plm/mqtt.py names them (tests may, to exercise them)."""
    offenders = []
    for package in ("plm", "collector", "detector", "simulator", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "plm" / "mqtt.py":
                continue
            text = path.read_text()
            if "paho" not in text and "client" not in text.lower():
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if PRIVATE_USE.search(line) or "mqtt._packet" in line or "from paho.mqtt import _" in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "paho private names outside plm/mqtt.py:\n" + "\n".join(offenders)
