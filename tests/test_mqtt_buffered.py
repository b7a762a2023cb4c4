"""Chunked socket reads (plm.mqtt.BufferedReadClient) against a real mosquitto: every message arrives, whole,
in order, whatever its size relative to the read chunk, and nothing waits unseen in the read-ahead."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plm import mqtt as plm_mqtt
from plm.config import MqttSettings
from plm.mqtt import BufferedReadClient, connect, make_client
from plm.ops.localservices import Mosquitto

TOPIC = "plm/v1/buffered/left-ankle/acc"


def _settings(mosquitto: Mosquitto) -> MqttSettings:
    return MqttSettings(url=mosquitto.url, username="plm", password="plm-test-password")


class Collector:
    def __init__(self, settings_: MqttSettings, client_id: str) -> None:
        self.payloads: list[bytes] = []
        self.arrived = threading.Condition()
        self.subscribed = threading.Event()
        self.client = make_client(settings_, client_id, on_connect=lambda c: c.subscribe(TOPIC, qos=1))
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        connect(self.client, settings_)
        # connect returns at CONNACK; messages published before the SUBACK would not be routed to us
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_message(self, _c, _u, msg: mqtt.MQTTMessage) -> None:
        with self.arrived:
            self.payloads.append(msg.payload)
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.payloads) >= count, timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _subscriber(
    settings_: MqttSettings,
    client_id: str,
    topic_filter: str,
    *,
    on_message: Callable[..., None] | None = None,
    on_received: Callable[[plm_mqtt.Received], None] | None = None,
    persistent: bool = False,
    **options: Any,
) -> BufferedReadClient:
    """A connected client subscribed to ``topic_filter`` at QoS 1 (SUBACK seen), its callbacks set before it
    connects: a persistent session's queued messages come right after the CONNACK."""
    client = make_client(
        settings_, client_id, on_connect=lambda c: c.subscribe(topic_filter, qos=1), persistent=persistent, **options
    )
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_received = on_received
    client.on_subscribe = lambda *_args: subscribed.set()
    connect(client, settings_, persistent=persistent)
    assert subscribed.wait(10), "no SUBACK"
    return client


@contextlib.contextmanager
def _collector_and_publisher(mosquitto: Mosquitto, name: str) -> Iterator[tuple[Collector, mqtt.Client]]:
    settings_ = _settings(mosquitto)
    collector = Collector(settings_, name)
    publisher = make_client(settings_, f"{name}-pub")
    connect(publisher, settings_)
    try:
        yield collector, publisher
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        collector.close()


def test_every_client_reads_in_chunks(mosquitto: Mosquitto) -> None:
    # a guard: the optimisation relies on paho's private read path; if paho renames it, this fails
    client = make_client(_settings(mosquitto), "buffered-kind")
    assert isinstance(client, BufferedReadClient)
    for name in ("_sock_recv", "_sock_close", "_packet_read", "loop_read", "_packet_queue"):
        assert callable(getattr(mqtt.Client, name, None)), f"paho no longer has Client.{name}"
    assert client.unacknowledged() == 0  # paho's _out_messages


@pytest.mark.parametrize("read_chunk", [7, 100, plm_mqtt.READ_CHUNK])
def test_messages_of_every_size_arrive_whole_and_in_order(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, read_chunk: int
) -> None:
    """Packets cut anywhere by the chunk boundary (command byte, length bytes, body), larger than a chunk,
    and many small ones in one chunk."""
    monkeypatch.setattr(plm_mqtt, "READ_CHUNK", read_chunk)
    sizes = [0, 1, 126, 127, 128, 300, 16_383, 16_384, 70_000, 200_000] + [350] * 500
    payloads = [i.to_bytes(4, "big") + bytes([i % 251]) * size for i, size in enumerate(sizes)]
    with _collector_and_publisher(mosquitto, f"buffered-{read_chunk}") as (collector, publisher):
        for payload in payloads:
            publisher.publish(TOPIC, payload, qos=1)
        assert collector.wait_for(len(payloads)), f"{len(collector.payloads)} of {len(payloads)} arrived"
        assert collector.payloads == payloads


def test_a_lone_message_is_not_held_in_the_read_ahead(mosquitto: Mosquitto) -> None:
    """After a burst, one more message must arrive at once: bytes parsed late would wait for the next packet."""
    with _collector_and_publisher(mosquitto, "buffered-lone") as (collector, publisher):
        for i in range(300):
            publisher.publish(TOPIC, bytes(400) + i.to_bytes(2, "big"), qos=1)
        assert collector.wait_for(300)
        publisher.publish(TOPIC, b"last", qos=1)
        # held in the read-ahead it would wait for the next packet to wake select: the keepalive, a minute on
        assert collector.wait_for(301, timeout_s=5.0)
        assert collector.payloads[-1] == b"last"
        assert collector.client._read_ahead == b""


def test_a_new_connection_never_parses_the_old_ones_bytes(mosquitto: Mosquitto) -> None:
    settings_ = _settings(mosquitto)
    collector = Collector(settings_, "buffered-reconnect")
    try:
        client = collector.client
        client.loop_stop()  # reconnect from this thread, as paho's loop does after a lost connection
        client._read_ahead = b"\x30\x05junk"  # half a PUBLISH of a connection that died
        collector.subscribed.clear()
        client.reconnect()
        assert client._read_ahead == b""
        client.loop_start()
        publisher = make_client(settings_, "buffered-reconnect-pub")
        connect(publisher, settings_)
        assert collector.subscribed.wait(10)  # the subscription is renewed in on_connect
        publisher.publish(TOPIC, b"after", qos=1)
        assert collector.wait_for(1)
        assert collector.payloads == [b"after"]
        publisher.disconnect()
        publisher.loop_stop()
    finally:
        collector.close()


class _FakeSocket:
    """Delivers a byte stream in the given pieces, then would block: paho's packet parser over it."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.reads = 0

    def recv(self, bufsize: int) -> bytes:
        if not self.pieces:
            raise BlockingIOError
        self.reads += 1
        piece = self.pieces.pop(0)
        assert len(piece) <= bufsize
        return piece

    def close(self) -> None:  # paho closes the socket when its client is collected
        self.pieces.clear()


def _publish_packet(topic: str, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload  # QoS 0: no packet id
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x30]) + bytes(encoded) + body


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=20),
    cuts=st.lists(st.integers(1, 200), min_size=1, max_size=40),
)
def test_any_cut_of_the_stream_yields_the_same_messages(sizes: list[int], cuts: list[int]) -> None:
    """The parser state survives every cut: the same messages, whole and in order, however the bytes come."""
    payloads = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    stream = b"".join(_publish_packet("t", p) for p in payloads)
    pieces, at = [], 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        if at >= len(stream):
            break
        pieces.append(stream[at : at + cut])
        at += cut
    if at < len(stream):
        pieces.append(stream[at:])
    client = BufferedReadClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    got: list[bytes] = []
    client.on_message = lambda _c, _u, m: got.append(m.payload)
    client._sock = _FakeSocket(pieces)  # type: ignore[assignment]
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    for _ in range(len(pieces) + 1):  # one select wake-up per piece that arrives
        assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == payloads
    assert client._read_ahead == b""


def test_a_full_chunk_means_more_is_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """``socket_drained``: the consumer's backlog signal. A read that filled the chunk may have left bytes in
    the socket; a shorter one (or none at all) took everything that was there."""
    stream = b"".join(_publish_packet("t", bytes(20)) for _ in range(3))
    monkeypatch.setattr(plm_mqtt, "READ_CHUNK", 16)
    client = BufferedReadClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client._sock = _FakeSocket([stream[:16], stream[16:32], stream[32:40]])  # type: ignore[assignment]
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    client.loop_read()  # the first packet (25 bytes) takes two full chunks
    assert client.socket_drained is False
    client.loop_read()
    assert client.socket_drained is True  # 8 bytes: all there was
    client.loop_read()
    assert client.socket_drained is True  # nothing at all


def test_acks_sent_together_settle_every_message(mosquitto: Mosquitto) -> None:
    """``ack_many`` (one write for a group's PUBACKs): the broker takes every message as delivered, so a
    persistent session redelivers none of them; the ones not acknowledged come again."""
    settings_ = _settings(mosquitto)
    got: list[mqtt.MQTTMessage] = []
    lock = threading.Condition()

    def on_message(_c, _u, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(msg)
            lock.notify_all()

    def consumer() -> mqtt.Client:
        return _subscriber(
            settings_, "ack-many", TOPIC, on_message=on_message, manual_ack=True, protocol="3.1.1", persistent=True
        )

    client = consumer()
    with _collector_and_publisher(mosquitto, "ack-many-side") as (_side, publisher):
        for i in range(40):
            publisher.publish(TOPIC, i.to_bytes(2, "big"), qos=1).wait_for_publish(10)
        with lock:
            assert lock.wait_for(lambda: len(got) >= 40, 20)
        acked = [m for m in got if int.from_bytes(m.payload, "big") < 30]
        client.ack_many([m.mid for m in acked])
        time.sleep(0.5)  # the PUBACKs reach the broker
        client.disconnect()
        client.loop_stop()
        got.clear()
        client = consumer()  # the same session: only what was not acknowledged comes back
        with lock:
            assert lock.wait_for(lambda: len(got) >= 10, 20)
        time.sleep(0.5)
        client.disconnect()
        client.loop_stop()
    assert sorted(int.from_bytes(m.payload, "big") for m in got) == list(range(30, 40))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_lean_receive_gives_what_paho_gives(mosquitto: Mosquitto, protocol: str) -> None:
    """``on_received`` (no MQTTMessage, no matcher): the same topics, payloads, QoS and retain flags as
    paho's ``on_message`` on a second subscriber of the same stream, in both protocol versions; QoS 1
    messages are acknowledged (a persistent session gives none of them back)."""
    settings_ = _settings(mosquitto)
    topic_filter = "plm/v1/lean/#"
    stock: list[tuple[str, bytes, int, bool]] = []
    lean: list[plm_mqtt.Received] = []
    lock = threading.Condition()

    def subscriber(name: str, *, use_lean: bool) -> mqtt.Client:
        def keep(item) -> None:
            with lock:
                (lean if use_lean else stock).append(item)
                lock.notify_all()

        if use_lean:
            callbacks: dict[str, Any] = {"on_received": keep}
        else:
            callbacks = {"on_message": lambda _c, _u, m: keep((m.topic, m.payload, m.qos, m.retain))}
        return _subscriber(
            settings_, f"{name}-{protocol}", topic_filter, protocol=protocol, persistent=True, **callbacks
        )

    publisher = make_client(settings_, f"lean-pub-{protocol}")
    connect(publisher, settings_)
    publisher.publish("plm/v1/lean/kept", b"retained", qos=1, retain=True).wait_for_publish(10)
    clients = [subscriber("stock", use_lean=False), subscriber("lean", use_lean=True)]
    sent = [(f"plm/v1/lean/s{i % 3}/acc", bytes([i % 256]) * (i * 97 % 3000), i % 2) for i in range(60)]
    for topic, payload, qos in sent:
        publisher.publish(topic, payload, qos=qos).wait_for_publish(10)
    with lock:
        assert lock.wait_for(lambda: len(stock) >= 61 and len(lean) >= 61, 20)
    assert [(r.topic, r.payload, r.qos, r.retain) for r in lean] == stock
    assert stock[0] == ("plm/v1/lean/kept", b"retained", 1, True)
    assert [(t, p, q) for t, p, q, _ in stock[1:]] == sent
    assert all(r.mid > 0 for r in lean if r.qos == 1)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    lean.clear()
    again = subscriber("lean", use_lean=True)  # the same session: every QoS 1 message was acknowledged
    time.sleep(1.0)
    again.disconnect()
    again.loop_stop()
    publisher.publish("plm/v1/lean/kept", b"", qos=1, retain=True).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()
    assert [r.topic for r in lean] == ["plm/v1/lean/kept"]  # only the retained message, sent on subscribe


def test_lean_receive_rejects_a_malformed_publish() -> None:
    """A PUBLISH too short for its topic length is a protocol error (paho drops such a connection too),
    never an exception in the network loop or a message with a cut topic. Uses paho's private
    ``_in_packet``/``_handle_publish``: this fails if paho renames them."""
    client = make_client(MqttSettings(url="mqtt://127.0.0.1:9"), "malformed", protocol="3.1.1")
    got: list[plm_mqtt.Received] = []
    client.on_received = got.append
    for packet in (b"", b"\x00", b"\x00\x05abc", b"\x00\x00payload", b"\x00\x03abc\x00"):
        client._in_packet = {"command": 0x32, "packet": bytearray(packet)}  # PUBLISH, QoS 1
        assert client._handle_publish() == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL, packet
    client._in_packet = {"command": 0x32, "packet": bytearray(b"\x00\x03abc\x00\x07data")}
    client._manual_ack = True  # nothing to send: this client has no connection
    assert client._handle_publish() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [plm_mqtt.Received("abc", b"data", 7, 1, False)]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_publishes_sent_together_arrive_as_sent(mosquitto: Mosquitto, protocol: str) -> None:
    """``publish_many`` (one write for a group of QoS 0 PUBLISHes, built by hand): a stock paho subscriber
    gets each topic and payload, in order, across the remaining-length byte boundaries; retained ones are
    retained (a later subscriber gets them)."""
    settings_ = _settings(mosquitto)
    sizes = [0, 1, 100, 115, 116, 117, 200, 16_360, 16_370, 16_380, 70_000]
    sent = [(f"plm/v1/many-{protocol}/s{i}/ack", bytes([i]) * size) for i, size in enumerate(sizes)]
    got: list[tuple[str, bytes, bool]] = []
    lock = threading.Condition()

    def on_message(_c, _u, m: mqtt.MQTTMessage) -> None:
        with lock:
            got.append((m.topic, m.payload, m.retain))
            lock.notify_all()

    def subscriber(name: str) -> mqtt.Client:
        return _subscriber(settings_, name, f"plm/v1/many-{protocol}/#", on_message=on_message, protocol=protocol)

    first = subscriber(f"many-live-{protocol}")
    publisher = make_client(settings_, f"many-pub-{protocol}", protocol=protocol)  # type: ignore[arg-type]
    connect(publisher, settings_)
    publisher.publish_many(sent[:4])
    publisher.publish_many(sent[4:], retain=True)
    with lock:
        assert lock.wait_for(lambda: len(got) >= len(sent), 20)
    assert [(t, p) for t, p, _ in got] == sent
    first.disconnect()
    first.loop_stop()
    got.clear()
    later = subscriber(f"many-later-{protocol}")
    with lock:
        assert lock.wait_for(lambda: len(got) >= len(sent) - 4, 20)
    time.sleep(0.3)
    assert sorted(got) == sorted((t, p, True) for t, p in sent[4:] if p)  # an empty retained payload clears
    publisher.publish_many([(t, b"") for t, _ in sent[4:]], retain=True)  # clear them
    publisher.disconnect()
    publisher.loop_stop()
    later.disconnect()
    later.loop_stop()


@pytest.mark.parametrize("reconnect", [False, True])
def test_receive_maximum_is_asked_for_in_every_connect(mosquitto: Mosquitto, reconnect: bool) -> None:
    """The detector's window: with manual acks and Receive Maximum 5, the broker sends 5 messages ahead and
    waits for acks -- also after a reconnect, which paho makes with the properties of the first CONNECT."""
    settings_ = _settings(mosquitto)
    got: list[plm_mqtt.Received] = []
    consumer = _subscriber(
        settings_, f"rm-consumer-{reconnect}", "rm/#", on_received=got.append, persistent=True, manual_ack=True,
        receive_maximum=5,
    )  # fmt: skip
    publisher = make_client(settings_, f"rm-publisher-{reconnect}")
    connect(publisher, settings_)
    try:
        if reconnect:
            consumer.loop_stop()
            consumer.reconnect()
            consumer.loop_start()
            time.sleep(0.5)
        for i in range(40):
            publisher.publish(f"rm/{i}", b"x", qos=1).wait_for_publish(5)
        time.sleep(1.0)
        # without the property mosquitto sends max_inflight_messages (20) ahead
        assert len(got) == 5, f"the broker sent {len(got)} unacknowledged messages, not Receive Maximum 5"
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        consumer.disconnect()
        consumer.loop_stop()
