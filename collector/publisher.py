"""Per-sensor MQTT publisher: durable queue in front, QoS 1, in order, delete only once acknowledged.

Acknowledged means the detector's retained ``plm/v1/<subject>/<sensor>/ack`` (``until_ns``) covers the
batch's end: the batch is in the detector's journal. A broker PUBACK is not enough, because mosquitto
acknowledges on receipt and writes to disk only every autosave; a broker SIGKILL loses what it had not
saved. After every (re)connect the publisher republishes, in order, everything still queued (i.e.
after the last ack); the detector drops the duplicates. ``ack_mode`` (docs/wire-format.md):
``detector`` always waits for the detector, ``broker`` forgets on PUBACK (no detector in the
deployment), ``auto`` behaves like ``broker`` until the sensor's first detector ack, then like ``detector``.

Batches go out once a detector has announced that it receives the subject (retained ``plm/v1/<s>/_owner``,
docs/wire-format.md), or ``OWNER_WAIT_S`` after connecting without one (a detector of an older version, or
none): with detector replicas each subscribed to its own subjects only, the broker drops what a subject's
first batches find no subscriber for. A newer announcement (a replica taking the subject over) republishes
everything not yet acknowledged, as a reconnect does.

An ack that does not move for ``ACK_STALL_S`` while the oldest queued batch has been sent is a batch lost between
the broker and the detector (a NATS cluster whose consumer died with its node forgets what it had delivered and not
had acknowledged): the oldest ``IN_FLIGHT`` batches go out again, so a hole behind the detector's ack mark is
filled by the one party that is sure to have it -- the end-to-end retransmission of the end-to-end ack. The
detector waits for such a hole longer than that (``detector.hole_wait_s``, detector/live/ingest.py).

Each sensor has its own MQTT connection because MQTT allows one Last Will per connection and the
wire format puts the will ("lost") on the sensor's own retained status topic. A worker thread owns
the SQLite queue: the asyncio side only hands batches over, so disk and network never stall BLE.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from plm.config import MqttSettings
from plm.mqtt import forget_unacknowledged, make_client, suback_refused
from plm.wire import (
    MAX_FUTURE_NS,
    SampleBatch,
    SensorStatus,
    WireFormatError,
    acc_topic,
    ack_topic,
    decode_ack,
    decode_owner,
    encode_binary,
    encode_status,
    owner_topic,
    status_topic,
)

from .queue import DurableQueue

log = logging.getLogger(__name__)

IN_FLIGHT = 32  # batches without a PUBACK at a time
OWNER_WAIT_S = 10.0  # connected this long without a detector's _owner announcement: send anyway (queued batches
# are kept until a detector acks them, and republished when one announces)
ACK_MODES = ("auto", "detector", "broker")
ACK_STALL_S = 20.0  # the detector's ack (published every ACK_EVERY_S = 5 s while it moves) has not covered the oldest
# batch sent for this long: send the oldest batches again. Shorter than the detector's hole wait (60 s of data), longer
# than a few ack periods, so a busy detector is not flooded; a detector that is down gets IN_FLIGHT batches per stall
RESUBSCRIBE_S = 5.0  # the broker refused the ack/owner subscription (a SUBACK code >= 0x80: an ACL, or a NATS cluster
# that could not create the QoS 1 consumer while a node was down): ask again this long after. Without it the
# detector's acks never arrive and the queue only grows (CI, 2026-12: a node-kill night stalled for good)


class SensorPublisher:
    def __init__(
        self,
        mqtt_settings: MqttSettings,
        subject: str,
        sensor: str,
        side: str | None,
        queue_dir: Path,
        max_batches: int,
        *,
        client_id: str | None = None,
        ack_mode: str = "auto",
    ) -> None:
        if ack_mode not in ACK_MODES:
            raise ValueError(f"ack_mode must be one of {', '.join(ACK_MODES)}, got {ack_mode!r}")
        self.ack_mode = ack_mode
        self.settings = mqtt_settings
        self.subject, self.sensor, self.side = subject, sensor, side
        self.topic = acc_topic(subject, sensor)
        self.status_topic = status_topic(subject, sensor)
        self.ack_topic = ack_topic(subject, sensor)
        self.owner_topic = owner_topic(subject)
        self._owner_time: int | None = None  # the latest detector announcement heard (time_ns)
        self._owner_epoch = 0  # announcements so far: the worker republishes what is unacknowledged after each
        self._ack_until = -1  # the highest until_ns heard (paho thread writes, worker reads)
        self._connections = 0  # (re)connects so far: the worker republishes the queue after each
        self.queue_path = Path(queue_dir) / f"{subject}--{sensor}.sqlite"
        self.max_batches = max_batches
        self.client_id = client_id or f"plm-collector-{subject}-{sensor}"
        self._handoff: queue.SimpleQueue[tuple[str, bytes, int, int] | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._acked: deque[tuple[int, bool]] = deque()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status: SensorStatus | None = None
        self.published = 0
        self.rejected = 0
        self.resent = 0  # batches sent again because the detector's ack stalled
        self._depth = 0
        self._dropped = 0
        self.client = make_client(
            mqtt_settings,
            self.client_id,
            will=(self.status_topic, encode_status(SensorStatus("lost", side=side))),
            on_connect=self._on_connect,
        )
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._resubscribe_at: float | None = None  # monotonic time to ask again after a refusal (worker reads)
        self.subscribe_refused = 0
        previous_disconnect: Callable[..., None] | None = self.client.on_disconnect

        def _on_disconnect(c, userdata, flags, reason, props) -> None:
            self._connected.clear()
            if previous_disconnect is not None:
                previous_disconnect(c, userdata, flags, reason, props)

        self.client.on_disconnect = _on_disconnect

    # ------------------------------------------------------------------ callbacks (paho thread)
    def _on_connect(self, client: mqtt.Client) -> None:
        # before anything goes out on the new connection: the queue's worker alone resends batches
        forget_unacknowledged(client, self.topic)
        self._resubscribe_at = None
        if self.ack_mode != "broker":
            self._subscribe_acks(client)
        self._connections += 1  # before _connected is set: the worker reads them in the opposite order
        self._connected.set()
        # a connected sensor says so before its first batch: a detector replica learns of a new subject from its
        # status and subscribes to its samples (the Last Will says "lost")
        status = self._last_status or SensorStatus("online", side=self.side)
        client.publish(self.status_topic, encode_status(status), qos=1, retain=True)
        self._wake.set()

    def _subscribe_acks(self, client: mqtt.Client) -> None:
        client.subscribe([(self.ack_topic, 1), (self.owner_topic, 1)])

    def _on_subscribe(self, _client, _userdata, _mid: int, reason_codes, _props=None) -> None:
        # the only SUBSCRIBE this client sends (no packet id to match: a SUBACK to a subscribe from the worker
        # thread can come back on paho's thread before subscribe() has returned the id)
        codes = list(reason_codes) if isinstance(reason_codes, list | tuple) else [reason_codes]
        if len(codes) < 2 or any(suback_refused(code) for code in codes):
            self.subscribe_refused += 1
            self._resubscribe_at = time.monotonic() + RESUBSCRIBE_S
            log.warning(
                "%s: the broker refused the subscription to the detector's acks (%s); asking again in %.0f s",
                self.ack_topic,
                ", ".join(str(c) for c in codes),
                RESUBSCRIBE_S,
            )
            self._wake.set()

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.owner_topic:
            try:
                announced = decode_owner(message.payload).time_ns
            except WireFormatError as exc:
                log.warning("%s: ignoring a bad owner announcement: %s", self.owner_topic, exc)
                return
            if announced != self._owner_time:
                self._owner_time = announced
                self._owner_epoch += 1
                self._wake.set()
            return
        try:
            until_ns = decode_ack(message.payload)
        except WireFormatError as exc:
            log.warning("%s: ignoring a bad ack: %s", self.ack_topic, exc)
            return
        if until_ns > self._ack_until:
            self._ack_until = until_ns
            self._wake.set()

    def _on_publish(self, _client, _userdata, mid: int, reason, _props) -> None:
        self._acked.append((mid, not getattr(reason, "is_failure", False)))
        self._wake.set()

    # ------------------------------------------------------------------ API (any thread)
    def start(self) -> None:
        self._queue = DurableQueue(self.queue_path, self.max_batches)
        self._depth, self._dropped = len(self._queue), self._queue.dropped
        if self._depth:
            log.info("%s: %d batches waiting from an earlier run will be published first", self.topic, self._depth)
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._work, name=f"mqtt-{self.sensor}", daemon=True)
        self._thread.start()

    def submit(self, batches: list[SampleBatch]) -> None:
        for batch in batches:
            self._handoff.put((self.topic, encode_binary(batch), batch.start_ns, batch.end_ns))
        self._wake.set()

    def publish_status(self, status: SensorStatus) -> None:
        """Retained status; re-sent on every reconnect, skipped (not queued) while the broker is away."""
        self._last_status = status
        if self._connected.is_set():
            self.client.publish(self.status_topic, encode_status(status), qos=1, retain=True)

    @property
    def queue_depth(self) -> int:
        return self._depth + self._handoff.qsize()

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, final_status: SensorStatus | None = None, flush_timeout_s: float = 5.0) -> None:
        """Publish what can be published within the timeout, leave the rest on disk, say goodbye."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._drained.wait(flush_timeout_s)
            self._handoff.put(None)
            self._wake.set()
            self._thread.join(flush_timeout_s + 5)
        if final_status is not None and self._connected.is_set():
            info = self.client.publish(self.status_topic, encode_status(final_status), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        if self._depth:
            log.warning("%s: %d batches stay queued on disk for the next run", self.topic, self._depth)

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        q = self._queue
        in_flight: dict[int, int] = {}  # mid -> row id
        last_sent = 0
        connections = 0
        applied_ack = -1
        owner_epoch = 0
        connected_at = ack_moved_at = time.monotonic()
        waits_for_detector = self.ack_mode == "detector" or (self.ack_mode == "auto" and q.ack_seen)
        try:
            while True:
                self._wake.wait(0.5)
                self._wake.clear()
                items, finished = [], False
                while True:
                    try:
                        item = self._handoff.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        finished = True
                        break
                    items.append(item)
                if items:
                    dropped = q.put_many(items)
                    if dropped:
                        log.error(
                            "%s: queue full (%d batches); dropped the %d oldest", self.topic, q.max_items, dropped
                        )
                until = self._ack_until
                if until > applied_ack and self.ack_mode != "broker":
                    applied_ack = until
                    ack_moved_at = time.monotonic()
                    if not waits_for_detector:
                        waits_for_detector = True  # auto: a detector acks this sensor from now on
                        q.set_ack_seen()
                    q.delete_until(until)
                done: list[int] = []
                while self._acked:
                    mid, ok = self._acked.popleft()
                    row = in_flight.pop(mid, None)
                    if row is None:
                        continue
                    done.append(row)
                    if ok:
                        self.published += 1
                    else:
                        self.rejected += 1
                        log.error("%s: broker refused a batch (PUBACK failure); not retrying it", self.topic)
                if waits_for_detector and done:
                    # kept until the detector's ack covers them -- except a batch no receiver can accept
                    # (started more than a day ahead of this clock: no ack will ever cover it)
                    horizon = time.time_ns() + MAX_FUTURE_NS
                    times = q.times(done)
                    done = [i for i, (start, end) in times.items() if end is None or (start or 0) > horizon]
                q.delete(done)
                # connected first, then the count (_on_connect sets them the other way round): a connection
                # seen here is never one whose republish from the oldest has not been started
                connected = self._connected.is_set()
                if connected and self._connections != connections:
                    connections = self._connections
                    connected_at = time.monotonic()
                    last_sent = 0  # a (re)connect: republish everything not yet acknowledged, oldest first
                    in_flight.clear()
                elif not in_flight and not connected:
                    last_sent = 0  # anything unacknowledged gets sent again from the oldest
                epoch = self._owner_epoch
                if connected and epoch != owner_epoch:
                    owner_epoch = epoch  # a detector (re)subscribed to the subject: republish what is unacknowledged
                    last_sent = 0
                    in_flight.clear()
                due = self._resubscribe_at
                if connected and due is not None and time.monotonic() >= due:
                    self._resubscribe_at = None
                    self._subscribe_acks(self.client)
                received = self.ack_mode == "broker" or epoch > 0 or time.monotonic() - connected_at >= OWNER_WAIT_S
                now = time.monotonic()
                if connected and received and waits_for_detector and last_sent and now - ack_moved_at >= ACK_STALL_S:
                    ack_moved_at = now  # the next stall resend at the earliest ACK_STALL_S from now
                    resent = [
                        (row_id, self.client.publish(topic, payload, qos=1))
                        for row_id, topic, payload in q.peek(IN_FLIGHT)
                    ]
                    for row_id, info in resent:
                        in_flight[info.mid] = row_id
                    if resent:
                        self.resent += len(resent)
                        log.info(
                            "%s: no detector ack for %.0f s: sent the oldest %d batches again",
                            self.topic,
                            ACK_STALL_S,
                            len(resent),
                        )
                if connected and received and len(in_flight) < IN_FLIGHT:
                    for row_id, topic, payload in q.peek(IN_FLIGHT - len(in_flight), last_sent):
                        info = self.client.publish(topic, payload, qos=1)
                        in_flight[info.mid] = row_id
                        last_sent = row_id
                self._depth, self._dropped = len(q), q.dropped
                if self._stopping.is_set() and not len(q) and self._handoff.empty():
                    self._drained.set()
                if finished:
                    return
        except Exception:  # pragma: no cover - a crash here must be loud
            log.exception("%s: publisher thread failed", self.topic)
            raise
        finally:
            self._drained.set()
            q.close()


def now_ns() -> int:
    return time.time_ns()
