"""Detector replicas receive only their own subjects (issue #22, item 1), against a real mosquitto.

Two replicas (``--shard 0/2``, ``1/2``) run first; then collectors of subjects neither has seen start (the
real collector publisher, waiting for a detector's ``_owner`` announcement before it sends). Each replica must
receive the sample batches of its own subjects only -- no fan-out -- and every batch must arrive once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import numpy as np
import pytest

from collector.publisher import SensorPublisher
from detector.live.routing import shard_of
from detector.live.service import LiveDetector
from plm import wire
from plm.config import MqttSettings
from plm.mqtt import connect, make_client
from tests.live_helpers import settings_for, wait_for

pytestmark = pytest.mark.services
NS = 1_000_000_000


def _subjects(per_shard: int) -> list[str]:
    """Subject ids, ``per_shard`` in each of the two shards."""
    names: dict[int, list[str]] = {0: [], 1: []}
    i = 0
    while min(len(v) for v in names.values()) < per_shard:
        name = f"rep{int(time.time()) % 100000}x{i}"
        if len(names[shard_of(name, 2)]) < per_shard:
            names[shard_of(name, 2)].append(name)
        i += 1
    return names[0] + names[1]


class CountingReplica(LiveDetector):
    """The real service, counting the sample batches that reach its core, by subject."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.acc = Counter()
        keep = self.core.filter_received

        def counting(messages):
            self.acc.update(m.topic.split("/")[2] for m in messages if m.topic.endswith("/acc"))
            return keep(messages)

        self.core.filter_received = counting


def test_each_replica_receives_only_its_own_subjects(mosquitto, influxd, tmp_path):
    replicas = [
        CountingReplica(settings_for(mosquitto, influxd, tmp_path / f"r{k}", instance=f"replica{k}"), shard=(k, 2),
                        publish_results=False)
        for k in range(2)
    ]  # fmt: skip
    for replica in replicas:
        replica.start()
    mqtt_settings = MqttSettings(url=mosquitto.url, username="plm", password="plm-test-password")
    subjects = _subjects(2)
    start = time.time_ns() - 600 * NS
    batches = [
        wire.make_batch(start + k * NS, 52.0, np.full((52, 3), 0.01 * (k % 7), np.float32), k) for k in range(30)
    ]
    publishers = [
        SensorPublisher(mqtt_settings, s, "left-ankle", "left", tmp_path / "queue", 1000, ack_mode="detector")
        for s in subjects
    ]
    try:
        for p in publishers:
            p.start()
        for p in publishers:
            p.submit(batches)
        # every batch is acknowledged end to end (in a replica's journal), the collectors' queues empty
        assert wait_for(lambda: all(p.queue_depth == 0 for p in publishers), 60), [p.queue_depth for p in publishers]
        for k, replica in enumerate(replicas):
            mine = {s for s in subjects if shard_of(s, 2) == k}
            got = {s: n for s, n in replica.acc.items() if s in subjects}
            assert set(got) == mine, f"replica {k} received {sorted(got)}; its subjects are {sorted(mine)}"
            assert all(n >= len(batches) for n in got.values()), got
    finally:
        for p in publishers:
            p.stop(flush_timeout_s=1.0)
        for replica in replicas:
            replica.stop()
    for replica in replicas:  # each batch once (a redelivery would be counted twice and dropped by the inbox)
        for subject in subjects:
            if subject in replica.subjects:
                assert replica.acc[subject] == len(batches), (subject, replica.acc[subject])


def test_the_owner_announcement_is_retained_and_names_the_replica(mosquitto, influxd, tmp_path):
    subject = _subjects(1)[1]  # in shard 1 of 2
    replica = LiveDetector(settings_for(mosquitto, influxd, tmp_path / "r", instance="announcer"), shard=(1, 2))
    replica.start()
    mqtt_settings = MqttSettings(url=mosquitto.url, username="plm", password="plm-test-password")
    publisher = make_client(mqtt_settings, "ann-pub")
    connect(publisher, mqtt_settings)
    try:
        status = wire.encode_status(wire.SensorStatus("online", side="left"))
        publisher.publish(wire.status_topic(subject, "left-ankle"), status, qos=1, retain=True).wait_for_publish(5)
        assert wait_for(lambda: subject in replica._announced, 10)
    finally:
        replica.stop()
    got: list[bytes] = []
    done = threading.Event()
    reader = make_client(mqtt_settings, "ann-reader")
    reader.on_message = lambda _c, _u, m: (got.append(m.payload), done.set())
    connect(reader, mqtt_settings)
    reader.subscribe(wire.owner_topic(subject), qos=1)
    try:
        assert done.wait(10), "no retained announcement"
    finally:
        reader.disconnect()
        reader.loop_stop()
        publisher.publish(wire.status_topic(subject, "left-ankle"), b"", qos=1, retain=True).wait_for_publish(5)
        publisher.disconnect()
        publisher.loop_stop()
    owner = wire.decode_owner(got[0])
    assert owner.instance == "announcer" and owner.shard == "1/2"
    assert json.loads(got[0])["time_ns"] <= time.time_ns()


def test_a_refused_subscription_is_not_announced_and_is_asked_again(tmp_path):
    """A broker may refuse a subscription (SUBACK 0x80: an ACL, or a NATS cluster refusing fast QoS 1
    subscriptions). Announcing that subject would tell its collector to send batches nobody receives."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from plm.config import InfluxSettings, Settings

    settings = Settings(influx=InfluxSettings(url="http://127.0.0.1:9", api=1), detector={"state_dir": tmp_path})
    replica = LiveDetector(settings, shard=(0, 2), publish_results=False)

    class Recorder:  # what the replica publishes (the SUBACK is given, not received)
        def __init__(self) -> None:
            self.sent: list[str] = []

        def publish(self, topic, payload, qos=0, retain=False):
            self.sent.append(topic)

    client = Recorder()
    replica._subjects_subscribed.update({"granted", "refused"})
    replica._announce_on_suback[7] = ["granted", "refused"]
    codes = [ReasonCode(PacketTypes.SUBACK, identifier=1), ReasonCode(PacketTypes.SUBACK, identifier=0x80)]
    replica._on_subscribe(client, None, 7, codes, None)
    assert client.sent == [wire.owner_topic("granted")]
    assert "refused" not in replica._subjects_subscribed  # its next status subscribes again
    assert replica.stats.bad["subscribe_refused"] == 1
    replica.sink.close()
    replica.journal.close()
