"""The collector's publisher after a broker restart: everything not yet acknowledged by the detector goes out
again oldest first, so the detector's reorder buffer never sees newer data before older data it must score.

Found by the short soak (tests/test_soak.py): mosquitto acknowledges a QoS 1 batch on receipt and saves it
only every autosave, so a SIGKILL loses the batches still queued for a detector that lags behind. The
publisher keeps those (no detector ack yet) and republishes them -- but paho first re-sent, on its own, the
newest batches it still had in flight. The detector took those as the newest data, moved its reorder window
past the older batches that followed and refused them as late: seconds of a night silently missing.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

from collector.publisher import SensorPublisher
from detector.live.ingest import SensorInbox
from plm import wire
from plm.config import MqttSettings
from plm.mqtt import connect, make_client

RATE_HZ = 52.0
NS = 1_000_000_000


class Recorder:
    """A consumer with a persistent session: what it is sent, in the order the broker sends it."""

    def __init__(self, settings: MqttSettings) -> None:
        self.batches: list[wire.SampleBatch] = []
        self.lock = threading.Lock()
        self.client = make_client(settings, "order-recorder", on_connect=lambda c: c.subscribe("plm/v1/+/+/acc", qos=1))
        self.client.on_message = self._on_message
        self.settings = settings

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.batches.append(wire.decode(msg.payload))

    def connect(self) -> None:
        connect(self.client, self.settings, persistent=True)

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def unique(self) -> int:
        with self.lock:
            return len({b.start_ns for b in self.batches})


def _wait(condition, timeout_s: float, step_s: float = 0.001) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def test_a_broker_restart_republishes_oldest_first_so_nothing_arrives_late(mosquitto_factory, tmp_path) -> None:
    broker = mosquitto_factory()
    settings = MqttSettings(url=broker.url, username="plm", password="plm-test-password")
    # the consumer is away (a detector behind on its backlog): the broker queues for its persistent session
    recorder = Recorder(settings)
    recorder.connect()
    # the recorder stands in for the detector: subscribed, it announces the subject (the publisher waits for this)
    owner = wire.encode_owner("order-recorder", (0, 1), time.time_ns())
    recorder.client.publish(wire.owner_topic("order"), owner, qos=1, retain=True).wait_for_publish(5)
    recorder.disconnect()
    time.sleep(1.5)  # the session, its subscription and the announcement are in mosquitto's autosave (every 1 s)

    start = time.time_ns() - 3600 * NS
    batches = [
        wire.make_batch(start + k * NS, RATE_HZ, np.full((52, 3), 0.01 * k, dtype=np.float32), k) for k in range(40)
    ]
    older, newer = batches[:20], batches[20:]
    publisher = SensorPublisher(
        settings, "order", "left-ankle", "left", tmp_path / "queue", 1000, client_id="order-pub", ack_mode="detector"
    )
    publisher.start()
    try:
        assert _wait(lambda: publisher.connected, 10)
        publisher.submit(older)
        assert _wait(lambda: publisher.published >= len(older), 10)  # PUBACKed: the broker holds them in memory
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)  # before its next autosave: it answers nothing more
        publisher.submit(newer)  # sent, never PUBACKed: the client library keeps them in flight
        time.sleep(0.5)
        assert publisher.queue_depth == len(batches)  # no detector ack: every batch is kept
        broker.kill()  # loses the older batches it had acknowledged but not saved
        broker.start()
        recorder.connect()
        assert _wait(lambda: recorder.unique() >= len(batches), 30, 0.05), recorder.unique()
    finally:
        publisher.stop(flush_timeout_s=0.1)
        recorder.disconnect()

    # the detector's reorder buffer, fed what the broker delivered, in that order
    inbox = SensorInbox(window_s=5.0)
    released = []
    with recorder.lock:
        received = list(recorder.batches)
    for batch in received:
        released += inbox.add(batch)
    released += inbox.flush()
    first = [round((b.start_ns - start) / NS) for b in received[:3]]
    assert inbox.counts["late"] == 0, f"first batches after the restart: {first} (oldest unacknowledged: 0)"
    assert [b.start_ns for b in released] == [b.start_ns for b in batches]


def test_batches_wait_for_a_detectors_announcement_and_go_again_on_a_newer_one(mosquitto_factory, tmp_path) -> None:
    """A subject no detector has subscribed to yet: the broker would drop its batches (detector replicas
    subscribe to their own subjects only). So the publisher holds them until a detector announces the subject
    (retained ``_owner``), and publishes again everything unacknowledged when a newer announcement comes (a
    replica taking the subject over, subscribed afresh)."""
    broker = mosquitto_factory()
    settings = MqttSettings(url=broker.url, username="plm", password="plm-test-password")
    recorder = Recorder(settings)
    recorder.connect()
    start = time.time_ns() - 3600 * NS
    batches = [wire.make_batch(start + k * NS, RATE_HZ, np.zeros((52, 3), np.float32), k) for k in range(10)]
    publisher = SensorPublisher(
        settings, "waiting", "left-ankle", "left", tmp_path / "queue", 1000, client_id="wait-pub", ack_mode="detector"
    )
    publisher.start()
    try:
        assert _wait(lambda: publisher.connected, 10)
        publisher.submit(batches)
        time.sleep(1.0)
        assert publisher.published == 0 and recorder.unique() == 0, "sent before any detector announced the subject"
        announce = wire.encode_owner("replica0", (0, 2), time.time_ns())
        recorder.client.publish(wire.owner_topic("waiting"), announce, qos=1, retain=True).wait_for_publish(5)
        assert _wait(lambda: publisher.published >= len(batches), 10), publisher.published
        assert recorder.unique() == len(batches)
        # no detector acks them: kept; a newer announcement sends them all again
        takeover = wire.encode_owner("replica1", (1, 2), time.time_ns() + 1)
        recorder.client.publish(wire.owner_topic("waiting"), takeover, qos=1, retain=True).wait_for_publish(5)
        assert _wait(lambda: publisher.published >= 2 * len(batches), 10), publisher.published
        assert publisher.queue_depth == len(batches)
    finally:
        publisher.stop(flush_timeout_s=0.1)
        recorder.disconnect()
