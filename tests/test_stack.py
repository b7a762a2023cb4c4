"""The compose stack's first-start path (`plm stack init-secrets`) against a real mosquitto.

The broker runs the very files init-secrets writes, with only the paths, port and run-as user the
container would differ in; the broker healthcheck is the exact command from docker-compose.yml.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from plm.cli import main
from plm.ops.localservices import Mosquitto, ServiceError, find_binary, free_port
from plm.ops.stack import SECRETS, StackError, init_secrets

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.services


class Client:
    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.messages: queue.Queue = queue.Queue()
        connected: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, reason, p: connected.put(reason)
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.reason = connected.get(timeout=5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        time.sleep(0.3)

    def received(self, wait: float = 0.6) -> list[tuple[str, bytes]]:
        out, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                out.append(self.messages.get(timeout=0.05))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def stack(tmp_path):
    """init-secrets as the compose `init` service runs it, then the broker on the generated config."""
    secrets_dir, port = tmp_path / "secrets", free_port()
    code = main(
        [
            "stack", "init-secrets", "--dir", str(secrets_dir),
            "--sim-subjects", "2", "--collector-subjects", "alice",
            "--broker-config-dir", str(secrets_dir / "mosquitto"), "--broker-data-dir", str(tmp_path / "data"),
            "--mqtt-port", str(port), "--mqtt-bind", "127.0.0.1",
            *(["--broker-run-as", "root"] if os.geteuid() == 0 else []),
        ]
    )  # fmt: skip
    assert code == 0
    (tmp_path / "data").mkdir()
    try:
        broker = Mosquitto(
            workdir=tmp_path / "run", port=port, config_file=secrets_dir / "mosquitto" / "mosquitto.conf"
        )
        broker.start()
    except ServiceError as exc:
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield secrets_dir, broker
    broker.stop()


def _pw(secrets_dir: Path, user: str) -> str:
    return (secrets_dir / user / "mqtt-password").read_text().strip()


def test_stack_users_get_exactly_their_rights(stack):
    secrets_dir, broker = stack
    detector = Client(broker.port, "detector", _pw(secrets_dir, "detector"))
    assert not detector.reason.is_failure
    detector.subscribe("plm/v1/+/+/acc")
    simulator = Client(broker.port, "simulator", _pw(secrets_dir, "simulator"))
    collector = Client(broker.port, "collector", _pw(secrets_dir, "collector"))
    try:
        simulator.publish("plm/v1/sim002/left/acc", b"sim")
        collector.publish("plm/v1/alice/left-ankle/acc", b"alice")
        # each collector may publish only its own subjects' topics
        simulator.publish("plm/v1/alice/left-ankle/acc", b"forged-by-simulator")
        collector.publish("plm/v1/sim001/left/acc", b"forged-by-collector")
        got = sorted(detector.received())
        assert got == [("plm/v1/alice/left-ankle/acc", b"alice"), ("plm/v1/sim002/left/acc", b"sim")]
    finally:
        for c in (detector, simulator, collector):
            c.close()


def test_anonymous_and_wrong_passwords_are_refused(stack):
    secrets_dir, broker = stack
    assert Client(broker.port, None, None).reason.is_failure
    assert Client(broker.port, "detector", "not-the-password").reason.is_failure
    # the viewer's password is generated too and works; the viewer may not publish samples
    viewer = Client(broker.port, "viewer", _pw(secrets_dir, "viewer"))
    detector = Client(broker.port, "detector", _pw(secrets_dir, "detector"))
    try:
        assert not viewer.reason.is_failure
        detector.subscribe("plm/v1/#")
        viewer.publish("plm/v1/sim001/left/acc", b"forged-by-viewer")
        assert detector.received() == []
    finally:
        viewer.close()
        detector.close()


def test_compose_broker_healthcheck_command_works_and_fails(stack):
    """The mosquitto healthcheck in docker-compose.yml, run against the generated broker."""
    if not find_binary("mosquitto_pub"):
        pytest.skip("mosquitto_pub not installed (apt-get install mosquitto-clients)")
    secrets_dir, broker = stack
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = (
        test[1]
        .replace("$$", "$")
        .replace("/mosquitto/config", str(secrets_dir / "mosquitto"))
        .replace("-p 1883", f"-p {broker.port}")
    )
    assert subprocess.run(["sh", "-c", command], capture_output=True, timeout=20).returncode == 0
    broken = command.replace("-u healthcheck", "-u nobody")
    assert subprocess.run(["sh", "-c", broken], capture_output=True, timeout=20).returncode != 0
    assert shlex.split(test[1])[0] == "mosquitto_pub"


def test_init_is_idempotent_and_takes_env_values(tmp_path):
    first = init_secrets(tmp_path, environ={}, chown=False)
    assert sorted(first.created) == sorted(rel for rel, _ in SECRETS)
    before = {rel: (tmp_path / rel).read_text() for rel, _ in SECRETS}
    for rel, _ in SECRETS:
        assert (tmp_path / rel).stat().st_mode & 0o077 == 0, rel  # nobody else may read a secret
        assert len(before[rel].strip()) >= 32
    assert len(set(before.values())) == len(before)  # every secret is its own
    # (a first-start-only secret changed later is refused instead: tests/test_stack_secrets.py)
    second = init_secrets(tmp_path, environ={"PLM_BROKER_PASSWORD_VIEWER": "chosen-by-the-operator"}, chown=False)
    assert second.created == [] and second.from_env == ["viewer/mqtt-password"]
    assert (tmp_path / "viewer/mqtt-password").read_text().strip() == "chosen-by-the-operator"
    for rel, _ in SECRETS:
        if rel != "viewer/mqtt-password":
            assert (tmp_path / rel).read_text() == before[rel], rel  # a restart never rotates a secret
    with pytest.raises(StackError, match="PLM_INFLUX_ADMIN_TOKEN is shorter"):
        init_secrets(tmp_path, environ={"PLM_INFLUX_ADMIN_TOKEN": "short"}, chown=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is set only when init runs as root (as in compose)")
def test_each_secret_is_owned_by_its_reader(tmp_path):
    init_secrets(tmp_path, environ={}, chown=True)
    assert (tmp_path / "mosquitto/passwd").stat().st_uid == 1883
    assert (tmp_path / "influxdb/admin-token").stat().st_uid == 1000
    assert (tmp_path / "grafana/admin-password").stat().st_uid == 472
    assert (tmp_path / "detector/mqtt-password").stat().st_uid == 10001


def test_compose_runs_init_with_the_subcommands_that_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    from plm.cli import build_parser

    parser = build_parser()
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("plm-monitor:"):
            args = parser.parse_args(service["command"])  # exits (fails the test) on an unknown command
            assert callable(args.func), name
