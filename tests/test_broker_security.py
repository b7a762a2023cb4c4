"""The mosquitto configuration `plm broker-config` generates, checked against a real mosquitto."""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from plm.ops.broker import BrokerUser, TlsFiles, acl_text, password_hash, write_broker_config
from plm.ops.localservices import Mosquitto, ServiceError, free_port

PASSWORDS = {
    "PLM_BROKER_PASSWORD_COLLECTOR_ALICE": "alice-collector-pw",
    "PLM_BROKER_PASSWORD_DETECTOR": "detector-pw",
    "PLM_BROKER_PASSWORD_VIEWER_ALICE": "viewer-pw",
    "PLM_BROKER_PASSWORD_COLLECTOR_BOB": "bob-collector-pw",
}
USERS = [
    BrokerUser("collector-alice", "collector", ("alice",)),
    BrokerUser("detector", "detector"),
    BrokerUser("viewer-alice", "viewer", ("alice",)),
    BrokerUser("collector-bob", "collector", ("bob",)),
]


def _start(tmp_path: Path, tls: TlsFiles | None = None) -> Mosquitto:
    port = free_port()
    files = write_broker_config(
        tmp_path / "conf", USERS, PASSWORDS, port=port, bind="127.0.0.1", tls=tls, run_as_user="root"
    )
    try:
        broker = Mosquitto(workdir=tmp_path / "run", port=port, config_file=files.config)
        broker.start()
    except ServiceError as exc:
        import os

        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return broker


@pytest.fixture
def broker(tmp_path):
    b = _start(tmp_path)
    yield b
    b.stop()


class Client:
    """A paho client that records what it receives and whether the broker accepted it."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        tls_ca: Path | None = None,
        tls_port=None,
        protocol=mqtt.MQTTv5,
    ):
        self.messages: queue.Queue = queue.Queue()
        self.connected: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        if user:
            self.client.username_pw_set(user, password)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, u, f, reason, p: self.connected.put(reason)
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self.subacks.put(reasons)
        self.client.connect("127.0.0.1", tls_port or port)
        self.client.loop_start()
        self.reason = self.connected.get(timeout=5)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        return info

    def subscribe(self, *topics: str) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes, one per topic."""
        self.client.subscribe([(topic, 1) for topic in topics])
        return self.subacks.get(timeout=5)

    def drain(self, wait: float = 0.5) -> list:
        out, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                out.append(self.messages.get(timeout=0.05))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_password_hash_matches_mosquitto_passwd_format():
    import base64

    salt = base64.b64decode("8FaJrfF96fZQYHdy")  # from a `mosquitto_passwd -b FILE u p` run
    assert password_hash("p", salt) == (
        "$7$101$8FaJrfF96fZQYHdy$p0vzwqm/KoGU+Y2XXm53XkV80qJiCGYzleaO6eVUc4z1ZrPVfzLoLjaFcgGqz+VnpIC8kfYkXGj3xdfqgH6xYQ=="
    )


def test_anonymous_and_wrong_password_are_refused(broker):
    for user, password in ((None, None), ("detector", "wrong"), ("nobody", "x")):
        client = Client(broker.port, user, password)
        assert client.reason.is_failure, f"accepted {user!r}"
        client.close()


def test_collector_publishes_only_its_own_subject_and_reads_nothing(broker):
    detector = Client(broker.port, "detector", "detector-pw")
    detector.subscribe("plm/v1/+/+/acc")
    collector = Client(broker.port, "collector-alice", "alice-collector-pw")
    assert not collector.reason.is_failure
    collector.subscribe("plm/v1/#")
    collector.publish("plm/v1/alice/left/acc", b"mine")
    collector.publish("plm/v1/bob/left/acc", b"forged")
    collector.publish("plm/v1/alice/_night", b"forged result")
    got = detector.drain()
    assert got == [("plm/v1/alice/left/acc", b"mine")]
    # the collector cannot read anyone's data, its own included
    detector.publish("plm/v1/alice/_night", b"summary")
    assert collector.drain() == []
    detector.close()
    collector.close()


def test_acks_only_from_the_detector_and_only_to_the_subjects_collector(broker):
    alice = Client(broker.port, "collector-alice", "alice-collector-pw")
    bob = Client(broker.port, "collector-bob", "bob-collector-pw")
    for c in (alice, bob):
        c.subscribe("plm/v1/+/+/ack")  # asks for everyone's acks; the ACL delivers only its own subjects'
    detector = Client(broker.port, "detector", "detector-pw")
    detector.publish("plm/v1/alice/left-ankle/ack", b'{"until_ns":1}', retain=True)
    detector.publish("plm/v1/bob/left-ankle/ack", b'{"until_ns":2}', retain=True)
    assert alice.drain() == [("plm/v1/alice/left-ankle/ack", b'{"until_ns":1}')]
    assert bob.drain() == [("plm/v1/bob/left-ankle/ack", b'{"until_ns":2}')]
    # nobody but the detector can write an ack (a forged one would make a sender forget unstored data)
    alice.publish("plm/v1/alice/left-ankle/ack", b'{"until_ns":99}', retain=True)
    bob.publish("plm/v1/alice/left-ankle/ack", b'{"until_ns":98}', retain=True)
    viewer = Client(broker.port, "viewer-alice", "viewer-pw")
    viewer.publish("plm/v1/alice/left-ankle/ack", b'{"until_ns":97}', retain=True)
    assert alice.drain() == [] and bob.drain() == []
    # a collector connecting later gets the detector's retained ack of its own subject, nothing else
    late = Client(broker.port, "collector-alice", "alice-collector-pw")
    late.subscribe("plm/v1/+/+/ack")
    assert late.drain() == [("plm/v1/alice/left-ankle/ack", b'{"until_ns":1}')]
    for c in (alice, bob, detector, viewer, late):
        c.close()


def test_detector_cannot_publish_samples_and_viewer_sees_only_results(broker):
    viewer = Client(broker.port, "viewer-alice", "viewer-pw")
    viewer.subscribe("plm/v1/#")
    detector = Client(broker.port, "detector", "detector-pw")
    listener = Client(broker.port, "detector", "detector-pw")
    listener.subscribe("plm/v1/+/+/acc")
    detector.publish("plm/v1/alice/left/acc", b"forged samples")
    assert listener.drain() == []
    detector.publish("plm/v1/alice/_night", b"night")
    detector.publish("plm/v1/bob/_night", b"someone else's night")
    assert viewer.drain() == [("plm/v1/alice/_night", b"night")]
    for c in (viewer, detector, listener):
        c.close()


def test_oversized_message_is_refused(broker):
    detector = Client(broker.port, "detector", "detector-pw")
    detector.subscribe("plm/v1/+/+/acc")
    collector = Client(broker.port, "collector-alice", "alice-collector-pw")
    collector.client.publish("plm/v1/alice/left/acc", b"x" * (200 * 1024), qos=1)
    collector.close()  # mosquitto drops a client that sends an oversized packet: the next one comes anew
    again = Client(broker.port, "collector-alice", "alice-collector-pw")
    again.publish("plm/v1/alice/left/acc", b"small")
    got = [payload for _, payload in detector.drain(1.0)]
    assert b"x" * (200 * 1024) not in got
    assert b"small" in got  # the broker works on: the subscription saw the message after the refused one
    detector.close()
    again.close()


def _make_tls(tmp_path: Path) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plm test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tls_dir / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls_dir / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TlsFiles(tls_dir / "ca.crt", tls_dir / "server.crt", tls_dir / "server.key", port=free_port())


def test_tls_listener_works_with_generated_certificate(tmp_path):
    tls = _make_tls(tmp_path)
    broker = _start(tmp_path, tls)
    try:
        sub = Client(broker.port, "detector", "detector-pw", tls_ca=tls.cafile, tls_port=tls.port)
        assert not sub.reason.is_failure
        sub.subscribe("plm/v1/+/+/acc")
        pub = Client(broker.port, "collector-alice", "alice-collector-pw", tls_ca=tls.cafile, tls_port=tls.port)
        pub.publish("plm/v1/alice/right/acc", b"over tls")
        assert sub.drain() == [("plm/v1/alice/right/acc", b"over tls")]
        sub.close()
        pub.close()
        # the TLS listener still wants a password
        anon = Client(broker.port, None, None, tls_ca=tls.cafile, tls_port=tls.port)
        assert anon.reason.is_failure
        anon.close()
    finally:
        broker.stop()


def test_missing_password_names_the_variable(tmp_path):
    from plm.ops.broker import BrokerConfigError

    with pytest.raises(BrokerConfigError, match="PLM_BROKER_PASSWORD_DETECTOR"):
        write_broker_config(tmp_path, [BrokerUser("detector", "detector")], {})
    files = write_broker_config(tmp_path, [BrokerUser("detector", "detector")], {}, generate_missing=True)
    assert set(files.generated) == {"PLM_BROKER_PASSWORD_DETECTOR"}
    assert (files.passwd.stat().st_mode & 0o777) == 0o600


def test_acl_has_no_anonymous_rules_and_no_wildcard_writes_for_collectors():
    text = acl_text(USERS)
    first_user = text.index("user ")
    assert "topic" not in text[:first_user]
    collector_block = text.split("user collector-alice")[1].split("user ")[0]
    assert "+/+/acc" not in collector_block and "#" not in collector_block
    viewer_block = text.split("user viewer-alice")[1].split("user ")[0]
    assert "#" not in viewer_block and "/+/+/" not in viewer_block  # no wildcard over sensors or subjects


def _send_discovery(detector: Client, subject: str) -> None:
    """The detector's own Home Assistant discovery code (topics and payloads), sent as the detector user, so
    the viewer's ACL is checked against what the detector really publishes, not against a copy of its topics."""
    from detector.live.outputs import discovery_configs

    for topic, payload in discovery_configs(subject):
        detector.client.publish(topic, payload, qos=1, retain=True)


def _discovery_topics(subject: str) -> list[str]:
    return [f"homeassistant/sensor/plm_{subject}/{key}/config" for key in ("lm_count", "plm_count", "plm_index")]


@pytest.mark.parametrize(
    "discovery_subscriptions",
    [("homeassistant/#",), ("homeassistant/+/+/config", "homeassistant/+/+/+/config")],
    ids=["ha-before-2022", "ha-now"],
)
def test_home_assistant_viewer_sees_its_subjects_results_and_discovery_and_nothing_else(
    broker, discovery_subscriptions
):
    """Subscribed as Home Assistant subscribes (MQTT 3.1.1, its default), the viewer gets its subject's
    discovery configs and results; even subscribed to ``#`` it gets nothing raw and nothing of another
    subject, not even the other subject's id in a discovery topic."""
    detector = Client(broker.port, "detector", "detector-pw")
    collector = Client(broker.port, "collector-alice", "alice-collector-pw")
    for subject in ("alice", "bob"):  # retained, as a viewer finds them when it connects
        _send_discovery(detector, subject)
        detector.publish(f"plm/v1/{subject}/_night", f"night {subject}".encode(), retain=True)
    detector.publish("plm/v1/alice/left/ack", b'{"until_ns":1}', retain=True)
    collector.publish("plm/v1/alice/left/status", b'{"state":"online"}', retain=True)
    time.sleep(0.3)  # the discovery publishes are asynchronous

    home_assistant = Client(broker.port, "viewer-alice", "viewer-pw", protocol=mqtt.MQTTv311)
    granted = home_assistant.subscribe(*discovery_subscriptions, "plm/v1/alice/_night")
    # mosquitto grants subscriptions wider than the ACL and filters each message, so Home Assistant starts
    assert [code.value for code in granted] == [1] * len(granted)
    nosy = Client(broker.port, "viewer-alice", "viewer-pw", protocol=mqtt.MQTTv311)
    assert [code.value for code in nosy.subscribe("#")] == [1]
    own_retained = sorted([(t, None) for t in _discovery_topics("alice")] + [("plm/v1/alice/_night", b"night alice")])
    for viewer in (home_assistant, nosy):
        got = viewer.drain()
        assert sorted((t, None if t.startswith("homeassistant/") else p) for t, p in got) == own_retained
        assert all(b"bob" not in payload for _, payload in got)

    # Home Assistant's birth message has no write right; the session goes on and live results arrive
    home_assistant.client.publish("homeassistant/status", b"online", qos=0)
    for subject in ("alice", "bob"):
        detector.publish(f"plm/v1/{subject}/_night", f"later {subject}".encode(), retain=True)
        detector.publish(f"plm/v1/{subject}/_movement", f"movement {subject}".encode())
    collector.publish("plm/v1/alice/left/acc", b"raw samples")
    collector.publish("plm/v1/alice/left/status", b'{"state":"offline"}')
    detector.publish("plm/v1/alice/left/ack", b'{"until_ns":2}')
    detector.publish("plm/v1/_detector/main", b'{"state":"online"}')
    assert home_assistant.drain() == [("plm/v1/alice/_night", b"later alice")]
    assert sorted(nosy.drain()) == [
        ("plm/v1/alice/_movement", b"movement alice"),
        ("plm/v1/alice/_night", b"later alice"),
    ]
    for c in (detector, collector, home_assistant, nosy):
        c.close()


def test_viewer_writes_diary_notes_of_its_own_subjects_only(broker):
    detector = Client(broker.port, "detector", "detector-pw")
    detector.subscribe("plm/v1/+/_diary")
    viewer = Client(broker.port, "viewer-alice", "viewer-pw", protocol=mqtt.MQTTv311)
    for subject in ("alice", "bob"):
        viewer.publish(f"plm/v1/{subject}/_diary", f"note for {subject}".encode())
    viewer.publish("plm/v1/alice/_night", b"forged night")  # the viewer reads results, it does not write them
    assert detector.drain() == [("plm/v1/alice/_diary", b"note for alice")]
    for c in (detector, viewer):
        c.close()


def test_local_mosquitto_puts_no_password_on_a_command_line(mosquitto_factory, monkeypatch):
    """Every local user can read a process's arguments (``ps``, /proc/<pid>/cmdline), so the test helper must
    not hand passwords to a program that way (as ``mosquitto_passwd -b FILE USER PASSWORD`` would)."""
    import subprocess

    password = "never-on-a-command-line"
    argvs: list[str] = []

    class RecordingPopen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            argvs.append(str(args))
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)  # subprocess.run goes through it too
    broker = mosquitto_factory(users={"someone": password})
    assert any("mosquitto" in argv for argv in argvs)  # the recorder saw the broker start
    assert not any(password in argv for argv in argvs)
    assert password not in (broker.workdir / "passwd").read_text()
    good = Client(broker.port, "someone", password)
    bad = Client(broker.port, "someone", password + "x")
    assert not good.reason.is_failure and bad.reason.is_failure
    good.close()
    bad.close()
