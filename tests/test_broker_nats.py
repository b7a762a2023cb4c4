"""The nats-server configuration `plm broker-config --broker nats` generates, checked against a real nats-server
2.9 (one node; MQTT 3.1.1, JetStream-backed sessions and retained messages): the same roles as the mosquitto
ACL (tests/test_broker_security.py), and the detector end to end with QoS 1 under them."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plm.ops.broker import BrokerConfigError, BrokerUser, role_topics
from plm.ops.broker_nats import (
    BCRYPT_MAX_BYTES,
    MQTT_DELIVERY_SUBJECTS,
    bcrypt_hash,
    nats_permissions,
    nats_subject,
    write_nats_config,
)
from plm.ops.localservices import NatsServer, ServiceError, free_port
from tests.test_broker_security import PASSWORDS, USERS, Client

pytestmark = pytest.mark.services


class Nats:
    """A nats-server run from the generated configuration."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.client_port = free_port(), free_port()
        self.files = write_nats_config(
            tmp_path / "conf", USERS, PASSWORDS, port=self.port, bind="127.0.0.1", client_port=self.client_port
        )
        try:
            self.server = NatsServer(
                workdir=tmp_path / "run",
                mqtt_port=self.port,
                users={"detector": PASSWORDS["PLM_BROKER_PASSWORD_DETECTOR"]},
                config_file=self.files.config,
            )
        except ServiceError as exc:
            if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        self.server.start()

    def client(self, user: str | None, password: str | None) -> Client:
        return Client(self.port, user, password, protocol=mqtt.MQTTv311)


@pytest.fixture
def nats(tmp_path):
    server = Nats(tmp_path)
    yield server
    server.server.stop()


def _codes(granted: list) -> list[int]:
    return [code.value for code in granted]


REFUSED = 0x80
GRAVITY = np.array([0.0, 0.0, 1.0])  # a leg lying still


# ------------------------------------------------------------------ the mapping, no server


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", fullmatch=True)


@given(subject=ids, sensor=ids)
def test_a_topic_maps_to_the_subject_nats_uses(subject: str, sensor: str) -> None:
    """Ids have no '.', space, '+', '#' or '/' (plm.wire.validate_id), so the mapping is one level per level."""
    assert nats_subject(f"plm/v1/{subject}/{sensor}/acc") == f"plm.v1.{subject}.{sensor}.acc"
    assert nats_subject(f"plm/v1/{subject}/+/ack") == f"plm.v1.{subject}.*.ack"
    assert nats_subject("plm/v1/_detector/#") == "plm.v1._detector.>"


def test_permissions_are_the_roles_of_the_mosquitto_acl_plus_the_qos1_delivery_subjects() -> None:
    for user in USERS:
        perms = nats_permissions(user)
        rules = role_topics(user)
        assert perms["publish"]["allow"] == [nats_subject(t) for a, t in rules if "write" in a]
        assert perms["subscribe"]["allow"] == [nats_subject(t) for a, t in rules if "read" in a] + [
            MQTT_DELIVERY_SUBJECTS
        ]
        if user.role != "detector":  # a collector or viewer writes its own subjects' subjects only
            assert all(s.split(".")[2] in user.subjects for s in perms["publish"]["allow"]), perms


def test_config_holds_hashes_not_passwords_and_is_private(tmp_path) -> None:
    files = write_nats_config(tmp_path, USERS, PASSWORDS)
    text = files.config.read_text()
    assert files.config.stat().st_mode & 0o777 == 0o600
    for password in PASSWORDS.values():
        assert password not in text
    config = json.loads(text.split("\n", 1)[1])
    users = config["accounts"]["PLM"]["users"]
    assert all(u["password"].startswith("$2") and u["allowed_connection_types"] == ["MQTT"] for u in users)
    assert config["accounts"]["PLM"]["jetstream"] == "enabled"


def test_missing_password_names_the_variable_and_long_ones_are_refused(tmp_path) -> None:
    with pytest.raises(BrokerConfigError, match="PLM_BROKER_PASSWORD_DETECTOR"):
        write_nats_config(tmp_path, [BrokerUser("detector", "detector")], {})
    with pytest.raises(BrokerConfigError, match="72 bytes"):
        bcrypt_hash("x" * (BCRYPT_MAX_BYTES + 1))


def _cli(args: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str, str]:
    from plm.cli import main

    for name in [k for k in os.environ if k.startswith("PLM_BROKER_PASSWORD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["broker-config", "--broker", "nats", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_a_config_nats_server_accepts(tmp_path, monkeypatch, capsys) -> None:
    from plm.ops.localservices import find_binary

    binary = find_binary("nats-server")
    if binary is None:
        pytest.skip("nats-server not installed")
    owner = getpass.getuser()
    args = [
        "--out",
        str(tmp_path / "conf"),
        "--owner",
        owner,
        "--user",
        "detector:detector",
        "--user",
        "ha:viewer:alice",
    ]
    code, out, err = _cli(
        args, {"PLM_BROKER_PASSWORD_DETECTOR": "d-pw", "PLM_BROKER_PASSWORD_HA": "h-pw"}, monkeypatch, capsys
    )
    assert code == 0, err
    assert "3.1.1" in out
    config = tmp_path / "conf" / "nats.conf"
    check = subprocess.run([binary, "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "d-pw" not in config.read_text()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--user", "detector:detector"], "PLM_BROKER_PASSWORD_DETECTOR"),
        (["--user", "bed:collector"], "needs the subjects"),
        (["--user", "detector:detector", "--tls-ca", "ca.pem"], "TLS"),
        (["--user", "detector:detector", "--owner", "no-such-account-here"], "no account"),
    ],
)
def test_cli_refuses_with_a_one_line_reason(tmp_path, monkeypatch, capsys, args, reason) -> None:
    code, _out, err = _cli(["--out", str(tmp_path / "conf"), *args], {}, monkeypatch, capsys)
    assert code == 2
    assert reason in err and err.count("\n") == 1 and err.startswith("plm broker-config: "), err
    assert not (tmp_path / "conf" / "nats.conf").exists()


# ------------------------------------------------------------------ against nats-server


def test_anonymous_wrong_password_and_the_nats_protocol_are_refused(nats) -> None:
    assert nats.client(None, None).reason.is_failure
    assert nats.client("detector", "not-the-password").reason.is_failure
    ok = nats.client("detector", PASSWORDS["PLM_BROKER_PASSWORD_DETECTOR"])
    assert not ok.reason.is_failure
    ok.close()
    # the same user on the NATS client port (which cannot be switched off): MQTT-only users are refused there
    with socket.create_connection(("127.0.0.1", nats.client_port), timeout=5) as sock:
        sock.recv(4096)  # INFO
        creds = {"user": "detector", "pass": PASSWORDS["PLM_BROKER_PASSWORD_DETECTOR"], "verbose": False}
        sock.sendall(f"CONNECT {json.dumps(creds)}\r\nPING\r\n".encode())
        time.sleep(1.0)
        answer = sock.recv(4096)
    assert b"-ERR" in answer and b"PONG" not in answer, answer


def test_collector_publishes_only_its_own_subject_and_reads_only_its_acks(nats) -> None:
    detector = nats.client("detector", PASSWORDS["PLM_BROKER_PASSWORD_DETECTOR"])
    assert _codes(detector.subscribe("plm/v1/+/+/acc", "plm/v1/+/+/status")) == [1, 1]
    collector = nats.client("collector-alice", PASSWORDS["PLM_BROKER_PASSWORD_COLLECTOR_ALICE"])
    collector.publish("plm/v1/alice/left/acc", b"alice samples")
    collector.publish("plm/v1/alice/left/status", b'{"state":"online"}', retain=True)
    forged = collector.publish("plm/v1/bob/left/acc", b"forged bob samples")
    assert forged.is_published()  # acknowledged and dropped, as mosquitto does
    assert sorted(detector.drain(1.0)) == [
        ("plm/v1/alice/left/acc", b"alice samples"),
        ("plm/v1/alice/left/status", b'{"state":"online"}'),
    ]
    # its own acks and owner announcements; not another subject's, nothing raw
    assert _codes(collector.subscribe("plm/v1/alice/+/ack", "plm/v1/alice/_owner")) == [1, 1]
    assert _codes(collector.subscribe("plm/v1/bob/+/ack")) == [REFUSED]
    assert _codes(collector.subscribe("plm/v1/+/+/acc")) == [REFUSED]
    detector.publish("plm/v1/alice/left/ack", b'{"until_ns":1}', retain=True)
    assert collector.drain() == [("plm/v1/alice/left/ack", b'{"until_ns":1}')]
    for c in (detector, collector):
        c.close()


def test_detector_cannot_publish_samples_and_viewer_reads_only_its_subjects_results(nats) -> None:
    detector = nats.client("detector", PASSWORDS["PLM_BROKER_PASSWORD_DETECTOR"])
    assert _codes(detector.subscribe("plm/v1/+/+/acc", "plm/v1/+/_diary")) == [1, 1]
    detector.publish("plm/v1/alice/left/acc", b"forged by the detector")
    assert detector.drain() == []
    for subject in ("alice", "bob"):
        detector.publish(f"plm/v1/{subject}/_night", f"night {subject}".encode(), retain=True)
    viewer = nats.client("viewer-alice", PASSWORDS["PLM_BROKER_PASSWORD_VIEWER_ALICE"])
    assert _codes(viewer.subscribe("plm/v1/alice/_night", "plm/v1/alice/_movement")) == [1, 1]
    assert viewer.drain(1.0) == [("plm/v1/alice/_night", b"night alice")]  # retained
    # NATS refuses a subscription wider than the permissions as a whole (mosquitto grants it and filters):
    # another subject, raw samples, a wildcard over subjects, Home Assistant's discovery wildcards, and the
    # QoS 1 delivery subjects every user may subscribe to internally
    for topic in (
        "plm/v1/bob/_night",
        "plm/v1/alice/left/acc",
        "plm/v1/+/_night",
        "homeassistant/#",
        "homeassistant/+/+/config",
        "$MQTT/sub/#",
        "#",
    ):
        assert _codes(viewer.subscribe(topic)) == [REFUSED], topic
    for subject in ("alice", "bob"):
        detector.publish(f"plm/v1/{subject}/_movement", f"movement {subject}".encode())
        viewer.publish(f"plm/v1/{subject}/_diary", f"note {subject}".encode())
    viewer.publish("plm/v1/alice/_night", b"forged night")
    assert viewer.drain(1.0) == [("plm/v1/alice/_movement", b"movement alice")]
    assert detector.drain() == [("plm/v1/alice/_diary", b"note alice")]
    for c in (detector, viewer):
        c.close()


def test_detector_end_to_end_with_qos1_under_the_permissions(nats, influxd, tmp_path) -> None:
    """The real detector (persistent session, QoS 1, MQTT 3.1.1) and the real collector publisher, each with its
    own user: every batch is acknowledged end to end, the subject is announced and scored, and the viewer
    reads the retained night."""
    from collector.publisher import SensorPublisher
    from detector.live.service import LiveDetector
    from plm import wire
    from plm.config import InfluxSettings, MqttSettings, Settings
    from tests.live_helpers import wait_for

    def mqtt_as(user: str, env: str) -> MqttSettings:
        return MqttSettings(
            url=f"mqtt://127.0.0.1:{nats.port}", username=user, password=PASSWORDS[env], protocol="3.1.1"
        )

    settings = Settings(
        mqtt=mqtt_as("detector", "PLM_BROKER_PASSWORD_DETECTOR"),
        influx=InfluxSettings(url=influxd.url, api=1, bucket=influxd.database),
        detector={"state_dir": tmp_path / "det", "instance": "natsperm"},
    )
    detector = LiveDetector(settings, publish_results=True)
    detector.start()
    collector = mqtt_as("collector-alice", "PLM_BROKER_PASSWORD_COLLECTOR_ALICE")
    start = time.time_ns() - 120 * 1_000_000_000
    rng = np.random.default_rng(3)
    batches = {
        side: [
            wire.make_batch(
                start + k * 1_000_000_000, 52.0, (rng.normal(0, 0.01, (52, 3)) + GRAVITY).astype(np.float32), k
            )
            for k in range(40)
        ]
        for side in ("left", "right")
    }
    publishers = [
        SensorPublisher(collector, "alice", f"{side}-ankle", side, tmp_path / "queue", 1000, ack_mode="detector")
        for side in ("left", "right")
    ]
    viewer = nats.client("viewer-alice", PASSWORDS["PLM_BROKER_PASSWORD_VIEWER_ALICE"])
    try:
        for p in publishers:
            p.start()
        for p in publishers:
            p.submit(batches[p.side])  # type: ignore[index]
        assert wait_for(lambda: all(p.queue_depth == 0 for p in publishers), 60), [p.queue_depth for p in publishers]
        assert wait_for(lambda: detector.stats.received >= 80, 10)
        assert "alice" in detector._announced
        assert detector.stats.bad.get("subscribe_refused", 0) == 0
    finally:
        for p in publishers:
            p.stop(flush_timeout_s=1.0)
        detector.stop()
    assert _codes(viewer.subscribe("plm/v1/alice/_night")) == [1]
    got = viewer.drain(2.0)
    viewer.close()
    assert [t for t, _ in got] == ["plm/v1/alice/_night"], got
    night = json.loads(got[0][1])
    assert night["night_start"] == pytest.approx(start / 1e9, abs=1.0)


def test_nats_29_does_not_refuse_oversized_mqtt_messages(nats) -> None:
    """Unlike mosquitto with ``max_packet_size`` (tests/test_broker_security.py), the generated NATS config has no
    cap at twice the largest valid batch (nats-server 2.9.10 did not apply ``max_payload`` to MQTT when tried):
    such a message reaches the detector, whose own checks (plm.wire) are the bound, as docs/deploy-scale.md
    says."""
    from plm.ops.broker import MAX_PACKET_BYTES

    detector = nats.client("detector", PASSWORDS["PLM_BROKER_PASSWORD_DETECTOR"])
    assert _codes(detector.subscribe("plm/v1/+/+/acc")) == [1]
    collector = nats.client("collector-alice", PASSWORDS["PLM_BROKER_PASSWORD_COLLECTOR_ALICE"])
    collector.publish("plm/v1/alice/left/acc", b"x" * (2 * MAX_PACKET_BYTES))
    got = detector.drain(1.0)
    assert [len(payload) for _, payload in got] == [2 * MAX_PACKET_BYTES]
    for c in (detector, collector):
        c.close()
