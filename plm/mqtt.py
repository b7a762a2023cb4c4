"""A paho-mqtt 2.x client built from the project's settings, the same way for every stage.

Why one place: authentication, TLS, MQTT 5, the Last Will and reconnect back-off must be identical
for the collector, the simulator and the detector, and each is easy to get subtly wrong.

This is also the only module that touches paho's private names (:data:`PAHO_PRIVATE_NAMES`): the detector's
read path and the collector's reconnect order need what paho has no public call for. ``pyproject.toml`` pins
paho-mqtt to the minor release CI tests (2.2.x: 2.0 and 2.1 lack ``paho.mqtt._packet``), and
``tests/test_paho_private_api.py`` has one test per name that fails with the name and what it is used for.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plm.config import MqttProtocol, MqttSettings

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600  # a persistent consumer keeps its queued messages this long while away
_PUBACK = struct.Struct("!BBH")  # fixed header (paho's PUBACK), remaining length 2, packet id
READ_CHUNK = 65536  # bytes taken from the socket per recv: a few hundred sample batches
_U16 = struct.Struct("!H")

PAHO_PRIVATE_NAMES: dict[str, str] = {
    "paho.mqtt._packet.decode_publish": "decode an MQTT 5 PUBLISH (properties) on the lean read path",
    "Client._handle_publish": "overridden: a PUBLISH becomes a Received tuple, not an MQTTMessage",
    "Client._in_packet": "the packet being parsed (command byte and body) inside _handle_publish",
    "Client._sock_recv": "overridden: one 64-kB recv per readable socket instead of 3-4 small ones",
    "Client._sock_close": "overridden: forget read-ahead bytes of a dead connection",
    "Client._sock": "the socket, to tell whether read-ahead may still be parsed",
    "Client._send_puback": "acknowledge a QoS 1 PUBLISH on the lean path (auto-ack clients)",
    "Client._packet_queue": "queue pre-built bytes: many PUBACKs or QoS 0 PUBLISHes as one write",
    "Client._manual_ack": "whether the consumer acknowledges itself (ack_many)",
    "Client._protocol": "MQTT 3.1.1 or 5 (packet layout)",
    "Client._easy_log": "log a malformed PUBLISH as paho does",
    "Client._out_messages": "outgoing QoS > 0 messages not yet acknowledged (unacknowledged, forget_unacknowledged)",
    "Client._out_message_mutex": "the lock paho holds while it changes _out_messages",
}
"""Every private name of paho used here, and why; nowhere else in the project uses one."""


class Received(NamedTuple):
    """One PUBLISH as a lean consumer gets it (see ``BufferedReadClient.on_received``)."""

    topic: str
    payload: bytes
    mid: int  # packet id: what ``ack_many`` acknowledges (0 for QoS 0)
    qos: int
    retain: bool


class BufferedReadClient(mqtt.Client):
    """paho's client, reading the socket in large chunks instead of a few bytes at a time.

    Why: paho reads every packet with three or four ``recv`` calls (the command byte, each length byte,
    the body) and one ``select`` per packet; for a consumer of thousands of small sample batches a
    second those system calls were about half of the cost of reading (measured: a bare subscriber
    drained 14.6k msg/s stock and 29.2k msg/s with this, same broker, same run).

    How: one ``recv`` of up to ``READ_CHUNK`` bytes per readable socket; ``loop_read`` then parses every
    packet in those bytes before it returns (``select`` cannot see bytes that already left the socket),
    without going back to the socket: a packet cut at the end of the chunk is kept by paho's own
    partial-packet state, and its rest arrives with the next ``select``. So one call is bounded by one
    chunk, and nothing waits unseen. Relies on paho's private ``_sock_recv`` and ``_sock_close``;
    ``tests/test_mqtt_buffered.py`` fails if paho changes them.
    """

    _read_ahead: bytes = b""  # taken from the socket, not parsed yet from _read_pos on (b"" when all is)
    _read_pos: int = 0
    _socket_turn: bool = True  # may the next read go to the socket?
    # the last read from the socket took all it held (less than a full chunk, or nothing): a consumer that
    # keeps up sees this every few reads; one that reads full chunks for seconds has a backlog to work off
    socket_drained: bool = True
    # set it to take every QoS 0/1 PUBLISH as a ``Received`` instead of paho's ``on_message``: no
    # ``MQTTMessage`` (with its ``threading.Condition``), no topic matcher, no callback lock per message --
    # a quarter of the detector's time when it drained a backlog (py-spy). Filtered callbacks
    # (``message_callback_add``) are not consulted; QoS 2 still goes through paho
    on_received: Callable[[Received], None] | None = None
    # MQTT 5 Receive Maximum asked for in every CONNECT (None: the broker's default; see make_client)
    receive_maximum: int | None = None

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """paho's PUBLISH handler (private), cut down to what ``on_received`` needs when it is set."""
        handler = self.on_received
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if handler is None or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        if self._protocol == mqtt.MQTTv5:  # properties sit between the packet id and the payload
            result = _packet.decode_publish(command, packet, self._protocol)
            topic_bytes, mid, payload = result.topic, result.mid, bytes(result.payload)
        else:
            topic_end = 2 + _U16.unpack_from(packet)[0] if len(packet) >= 2 else 0
            if topic_end <= 2 or len(packet) < topic_end + 2 * qos:
                self._easy_log(mqtt.MQTT_LOG_ERR, "malformed PUBLISH (%d bytes)", len(packet))
                return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL  # paho too drops a connection that sends one
            topic_bytes = bytes(packet[2:topic_end])
            mid = _U16.unpack_from(packet, topic_end)[0] if qos else 0
            payload = bytes(packet[topic_end + 2 * qos :])
        # the broker checks that a topic is UTF-8; if it is not, the consumer sees replacement characters
        handler(Received(topic_bytes.decode("utf-8", "replace"), payload, mid, qos, bool(command & 0x01)))
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        buffered = self._read_ahead
        if not buffered:
            if not self._socket_turn:
                raise BlockingIOError  # paho keeps the partial packet; its rest comes with the next select
            try:
                buffered = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                self.socket_drained = True
                raise  # nothing there
            self.socket_drained = len(buffered) < READ_CHUNK
            if not buffered:
                return buffered  # the broker closed the connection
            self._read_ahead, self._read_pos = buffered, 0
        # paho asks for a byte or two at a time (command, length): a position, not a copy of the rest each time
        start = self._read_pos
        end = start + bufsize
        if end >= len(buffered):
            self._read_ahead, self._read_pos = b"", 0
            return buffered[start:] if start else buffered
        self._read_pos = end
        return buffered[start:end]

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        self._socket_turn = False
        try:
            while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._read_ahead and self._sock is not None:
                rc = super().loop_read(1)
        finally:
            self._socket_turn = True
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK for many QoS 1 messages (``manual_ack``) as one write. paho's ``ack`` queues each as its own
        packet, waking its loop and writing to the socket once per message: two system calls a message, about
        a tenth of the detector's time when it drained a backlog (py-spy). Relies on paho's private
        ``_packet_queue``, which writes any bytes it is given (a PUBACK is four bytes)."""
        if not mids or not self._manual_ack:
            return
        packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids)
        self._packet_queue(mqtt.PUBACK, packet, 0, 1)

    def publish_many(self, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
        """QoS 0 PUBLISHes as one write. paho's ``publish`` builds a message object with its own lock for each,
        and wakes its loop and writes to the socket once per message: the detector's retained acks (one per
        sensor every few seconds, hundreds a second) cost more that way than the data they acknowledge.
        ``on_publish`` is called once for the group (mid 0). Relies on paho's private ``_packet_queue``."""
        if not messages:
            return
        v5 = self._protocol == mqtt.MQTTv5
        header = bytes([mqtt.PUBLISH | (1 if retain else 0)])  # QoS 0, not a duplicate
        parts: list[bytes] = []
        for topic, payload in messages:
            name = topic.encode()
            body = _U16.pack(len(name)) + name + (b"\x00" if v5 else b"") + payload  # v5: no properties
            parts += (header, _remaining_length(len(body)), body)
        self._packet_queue(mqtt.PUBLISH, b"".join(parts), 0, 0, mqtt.MQTTMessageInfo(0))

    def unacknowledged(self) -> int:
        """Outgoing QoS > 0 messages the broker has not acknowledged yet, including those still waiting for an
        in-flight slot (paho's private ``_out_messages``): a client that runs its own network loop must keep
        running it until this is 0 before it disconnects, or those messages are lost."""
        return len(self._out_messages)

    def _sock_close(self) -> None:
        self._read_ahead, self._read_pos = b"", 0  # bytes of a dead connection must never be parsed as the next one's
        super()._sock_close()


def suback_refused(code: Any) -> bool:
    """A SUBACK reason code (paho: a ReasonCode, or an int for 3.1.1) that refuses the subscription (>= 0x80:
    MQTT 3.1.1 section 3.9.3, MQTT 5 section 3.9.3). Anything that is not a code refuses too."""
    value = getattr(code, "value", code)
    return not isinstance(value, int) or value >= 0x80


def forget_unacknowledged(client: mqtt.Client, topic: str) -> int:
    """Drop paho's own copies of the messages on ``topic`` it sent and got no PUBACK for; return how many.

    Why (the collector, on every reconnect): paho re-sends those by itself right after the CONNACK -- and they
    are the *newest* batches, while the broker may have lost older ones it had acknowledged but not yet saved
    (mosquitto saves every autosave; a SIGKILL loses the rest). A detector that got the newest first moves its
    reorder window past the older ones, which the collector republishes from its durable queue just after,
    and refuses them as late: a hole in the night although every batch was kept until the detector's ack.
    The durable queue republishes all of them, oldest first, so nothing is lost by forgetting paho's copies.
    paho has no public call for this; its outgoing-message table is changed under its own lock."""
    with client._out_message_mutex:
        mids = [mid for mid, message in client._out_messages.items() if message.topic == topic]
        for mid in mids:
            del client._out_messages[mid]
    return len(mids)


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def make_client(
    settings: MqttSettings,
    client_id: str = "",
    *,
    will: tuple[str, bytes] | None = None,
    on_connect: Callable[[mqtt.Client], None] | None = None,
    manual_ack: bool = False,
    protocol: MqttProtocol | None = None,
    persistent: bool = False,
    receive_maximum: int | None = None,
) -> BufferedReadClient:
    """Create (not connect) an MQTT client with auth, TLS and an optional retained Last Will.

    ``on_connect(client)`` runs after every successful (re)connect: subscribe there, so
    subscriptions come back after the broker restarts. ``protocol``: the settings' ``protocol`` (MQTT 5 unless the
    broker serves only 3.1.1) unless a high-rate consumer asks for its own (see ``plm.config.MqttProtocol``);
    ``persistent`` matters only for 3.1.1, where the session kind is fixed here (``clean_session``) rather than at
    connect. ``receive_maximum`` (MQTT 5): how many unacknowledged QoS 1
    messages the broker may send ahead -- for a consumer that acknowledges only after storing, its window.
    """
    v5 = (protocol or settings.protocol) == "5"
    client = BufferedReadClient(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,
        reconnect_on_failure=True,
        manual_ack=manual_ack,  # consumers that must not lose data ack only once it is stored
    )
    client.receive_maximum = receive_maximum if v5 else None
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.client_cert:
            context.load_cert_chain(
                str(settings.client_cert), str(settings.client_key) if settings.client_key else None
            )
        client.tls_set_context(context)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)

    def _connected(c: mqtt.Client, _userdata, _flags, reason, _props) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", settings.host, reason)
            return
        log.info("connected to MQTT broker %s:%s", settings.host, settings.port)
        if on_connect is not None:
            on_connect(c)

    def _disconnected(_c, _userdata, _flags, reason, _props) -> None:
        if reason != 0:
            log.warning("lost MQTT broker %s:%s (%s); reconnecting", settings.host, settings.port, reason)

    client.on_connect = _connected
    client.on_disconnect = _disconnected
    return client


def connect_properties(persistent: bool, receive_maximum: int | None = None) -> Properties | None:
    """MQTT 5 CONNECT properties: a session that outlives short disconnects for persistent consumers, and the
    Receive Maximum asked for. paho keeps them for its reconnects."""
    if not persistent and receive_maximum is None:
        return None
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def run_until(client: mqtt.Client, condition: Callable[[], bool], timeout_s: float) -> bool:
    """Run the network loop in this thread until ``condition()`` holds (True) or ``timeout_s`` passed or the
    connection broke (False). For a client whose owner runs its loop itself (no paho network thread)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0 or client.loop(timeout=min(left, 0.1)) != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
            return condition()
    return True


def connect(
    client: mqtt.Client,
    settings: MqttSettings,
    *,
    persistent: bool = False,
    timeout_s: float = 10.0,
    network_thread: bool = True,
) -> None:
    """Connect and start the network loop; wait until the broker accepted us (or raise ConnectionError).

    ``network_thread=False``: no paho thread; the handshake runs in this thread (``run_until``) and the
    caller runs the loop from then on. Handing over from paho's thread costs up to a second: ``loop_stop``
    waits for that thread's ``select`` (1-s timeout) to return."""
    done = threading.Event()
    outcome: dict[str, object] = {}
    previous: Callable[..., None] | None = client.on_connect

    def _first(c, userdata, flags, reason, props) -> None:
        outcome["reason"] = reason
        done.set()
        if previous is not None:
            previous(c, userdata, flags, reason, props)

    client.on_connect = _first
    try:
        if client.protocol == mqtt.MQTTv5:
            client.connect(
                settings.host,
                settings.port,
                keepalive=settings.keepalive_s,
                clean_start=not persistent,
                properties=connect_properties(persistent, getattr(client, "receive_maximum", None)),
            )
        else:  # 3.1.1: the session kind was fixed when the client was made (make_client(persistent=...))
            client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:  # refused, unreachable, unknown host, TLS: "[Errno 111] Connection refused" named no address
        client.on_connect = previous
        raise ConnectionError(
            f"cannot reach the MQTT broker at {settings.host}:{settings.port} ({exc.strerror or exc}): is it running, "
            "and is mqtt.url (PLM_MQTT__URL) right?"
        ) from None
    if network_thread:
        client.loop_start()
    if not (done.wait(timeout_s) if network_thread else run_until(client, done.is_set, timeout_s)):
        client.loop_stop()
        raise ConnectionError(f"MQTT broker {settings.host}:{settings.port} did not answer within {timeout_s:.0f} s")
    client.on_connect = previous
    reason = outcome["reason"]
    if getattr(reason, "is_failure", False):
        client.loop_stop()
        raise ConnectionError(f"MQTT broker {settings.host}:{settings.port} refused the connection: {reason}")
