"""Issue 21 item 1: a broker change after the first start takes effect.

`init` rewrites mosquitto's password and ACL files on every start, but mosquitto reads them at its start
and on SIGHUP only. docker-compose.yml therefore restarts mosquitto (and the services that log in to it)
whenever `init` is recreated (`depends_on: init: restart: true`; tests/test_compose.py checks that wiring).
Here the real mosquitto runs the files of a first `init`, then `init` runs again as the recreated container
would -- a subject added, more simulated subjects, a changed password -- and the new collector is
refused until the broker restarts or reloads, and admitted after.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from plm.cli import main
from plm.ops.localservices import Mosquitto, ServiceError, free_port

pytestmark = pytest.mark.services


def _init(secrets_dir: Path, data_dir: Path, port: int, *extra: str) -> None:
    """`plm stack init-secrets` as the compose `init` service runs it (paths, port and run-as user aside)."""
    code = main(
        [
            "stack", "init-secrets", "--dir", str(secrets_dir),
            "--broker-config-dir", str(secrets_dir / "mosquitto"), "--broker-data-dir", str(data_dir),
            "--mqtt-port", str(port), "--mqtt-bind", "127.0.0.1",
            *(["--broker-run-as", "root"] if os.geteuid() == 0 else []),
            *extra,
        ]
    )  # fmt: skip
    assert code == 0


def _pw(secrets_dir: Path, user: str) -> str:
    return (secrets_dir / user / "mqtt-password").read_text().strip()


def _connect(port: int, user: str, password: str) -> tuple[mqtt.Client, bool, queue.Queue]:
    """(client, admitted, received messages); the caller disconnects."""
    result: queue.Queue = queue.Queue()
    messages: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}")
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, reason, p: result.put(not reason.is_failure)
    client.on_message = lambda c, u, msg: messages.put((msg.topic, msg.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    admitted = result.get(timeout=5)
    if not admitted:
        client.loop_stop()
    return client, admitted, messages


def _admitted(port: int, user: str, password: str) -> bool:
    client, admitted, _ = _connect(port, user, password)
    client.disconnect()
    client.loop_stop()
    return admitted


def _delivered(port: int, secrets_dir: Path, user: str, topic: str) -> bool:
    """Whether ``user`` may publish ``topic``: the detector (which reads every sample topic) receives it."""
    detector, ok, messages = _connect(port, "detector", _pw(secrets_dir, "detector"))
    assert ok
    publisher, ok, _ = _connect(port, user, _pw(secrets_dir, user))
    try:
        assert ok, f"{user} refused"
        detector.subscribe("plm/v1/+/+/acc", qos=1)
        time.sleep(0.3)
        publisher.publish(topic, b"x", qos=1).wait_for_publish(5)
        try:
            return messages.get(timeout=1.0)[0] == topic
        except queue.Empty:
            return False
    finally:
        for c in (publisher, detector):
            c.disconnect()
            c.loop_stop()


@pytest.fixture
def first_start(tmp_path):
    """The first `docker compose up`: init with the defaults (one simulated subject, no collector), then mosquitto."""
    secrets_dir, data_dir, port = tmp_path / "secrets", tmp_path / "data", free_port()
    data_dir.mkdir()
    _init(secrets_dir, data_dir, port, "--sim-subjects", "1")
    try:
        broker = Mosquitto(
            workdir=tmp_path / "run", port=port, config_file=secrets_dir / "mosquitto" / "mosquitto.conf"
        )
        broker.start()
    except ServiceError as exc:
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield secrets_dir, data_dir, broker
    broker.stop()


def _reload(broker: Mosquitto) -> None:
    """SIGHUP: mosquitto re-reads its password and ACL files (`docker compose kill -s HUP mosquitto`)."""
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)


@pytest.mark.parametrize("apply", ["restart", "reload"])
def test_an_added_collector_subject_is_admitted_after_a_restart_or_reload(first_start, apply, monkeypatch):
    secrets_dir, data_dir, broker = first_start
    monkeypatch.setenv("PLM_BROKER_PASSWORD_COLLECTOR", "collector-password-from-env")  # known, not read back
    assert not _admitted(broker.port, "collector", "collector-password-from-env")  # no collector user yet
    # README "Running with a real sensor": PLM_COLLECTOR_SUBJECTS=alice in .env -> init runs again
    _init(secrets_dir, data_dir, broker.port, "--sim-subjects", "1", "--collector-subjects", "alice")
    # the files changed, the running broker did not: this is the bug when nothing restarts mosquitto
    assert not _admitted(broker.port, "collector", "collector-password-from-env")
    broker.restart() if apply == "restart" else _reload(broker)
    assert _admitted(broker.port, "collector", "collector-password-from-env")
    assert _delivered(broker.port, secrets_dir, "collector", "plm/v1/alice/left-ankle/acc")
    assert not _delivered(broker.port, secrets_dir, "collector", "plm/v1/sim001/left/acc")  # its subjects only


@pytest.mark.parametrize("apply", ["restart", "reload"])
def test_more_simulated_subjects_and_a_changed_password_take_effect(first_start, apply, monkeypatch):
    secrets_dir, data_dir, broker = first_start
    old_detector = _pw(secrets_dir, "detector")
    assert not _delivered(broker.port, secrets_dir, "simulator", "plm/v1/sim002/left/acc")
    monkeypatch.setenv("PLM_BROKER_PASSWORD_DETECTOR", "a-new-detector-password")
    _init(secrets_dir, data_dir, broker.port, "--sim-subjects", "2")  # PLM_SIM_SUBJECTS=2
    assert _pw(secrets_dir, "detector") == "a-new-detector-password"
    assert _admitted(broker.port, "detector", old_detector)  # still the old files in the broker
    broker.restart() if apply == "restart" else _reload(broker)
    assert not _admitted(broker.port, "detector", old_detector)
    assert _admitted(broker.port, "detector", "a-new-detector-password")
    assert _delivered(broker.port, secrets_dir, "simulator", "plm/v1/sim002/left/acc")
