"""A subscription the broker refuses (SUBACK >= 0x80) is asked for again until it is granted, by the collector (its
acks and owner announcements) and by a detector replica (its subjects' samples). A NATS cluster refuses QoS 1
subscriptions while it cannot create their consumers (a node down); CI once saw a node-kill night stall for good
because the collector never asked again: no ack ever arrived and its queue only grew.

Here a real NATS cluster refuses by permission (the same SUBACK), and grants once restarted without them."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from detector.live.routing import shard_of
from plm import wire
from plm.config import InfluxSettings, MqttSettings, Settings
from plm.ops.broker_nats import MQTT_DELIVERY_SUBJECTS
from plm.ops.localservices import NatsCluster
from tests.live_helpers import wait_for

pytestmark = pytest.mark.services

PASSWORD = "plm-test-password"
NS = 1_000_000_000
SUBJECT = "refusal"
# the collector may not read acks; the detector may not read samples: both SUBSCRIBEs are refused
REFUSING = {
    "sensor": {"publish": {"allow": [">"]}, "subscribe": {"allow": ["plm.v1.*._owner", MQTT_DELIVERY_SUBJECTS]}},
    "det": {
        "publish": {"allow": [">"]},
        "subscribe": {"allow": ["plm.v1.*.*.status", "plm.v1.*._diary", MQTT_DELIVERY_SUBJECTS]},
    },
}


def _grant_everything(cluster: NatsCluster) -> None:
    """Every node restarted without the permissions (nats-server 2.9.10 panics reloading an account's users with
    JetStream on, so no SIGHUP). The clients reconnect; what this shows is that they asked again before."""
    for node in cluster.nodes:
        node.stop()
    for node in cluster.nodes:
        assert node.config_file is not None
        config = json.loads(node.config_file.read_text())
        for user in config["accounts"]["PLM"]["users"]:
            user.pop("permissions", None)
        node.config_file.write_text(json.dumps(config, indent=1) + "\n")
        node.spawn()
    for node in cluster.nodes:
        node.wait_ready()


def test_refused_subscriptions_are_asked_for_again_until_granted(
    nats_cluster_factory, influxd, tmp_path, monkeypatch
) -> None:
    import collector.publisher as publisher_module
    import detector.live.service as service_module
    from collector.publisher import SensorPublisher
    from detector.live.service import LiveDetector

    monkeypatch.setattr(publisher_module, "RESUBSCRIBE_S", 0.5)
    monkeypatch.setattr(service_module, "RESUBSCRIBE_S", 0.5)
    cluster = nats_cluster_factory(users={"sensor": PASSWORD, "det": PASSWORD}, permissions=REFUSING)
    server = cluster.nodes[0]  # everyone on one node; the restart without permissions is of every node

    def mqtt_as(user: str) -> MqttSettings:
        return MqttSettings(url=server.url, username=user, password=PASSWORD, protocol="3.1.1")

    settings = Settings(
        mqtt=mqtt_as("det"),
        influx=InfluxSettings(url=influxd.url, api=1, bucket=influxd.database),
        detector={"state_dir": tmp_path / "det", "instance": "refused", "mqtt_protocol": "3.1.1"},
    )
    replica = LiveDetector(settings, shard=(shard_of(SUBJECT, 2), 2), publish_results=False)
    publisher = SensorPublisher(
        mqtt_as("sensor"), SUBJECT, "left-ankle", "left", tmp_path / "queue", 1000, ack_mode="detector"
    )
    start = time.time_ns() - 600 * NS
    batches = [wire.make_batch(start + k * NS, 52.0, np.zeros((52, 3), np.float32), k) for k in range(20)]
    try:
        replica.start()
        publisher.start()
        publisher.submit(batches)
        # refused on both sides, and asked for again (a status names the subject to the replica)
        assert wait_for(lambda: publisher.subscribe_refused >= 2, 10), publisher.subscribe_refused
        assert wait_for(lambda: replica.stats.bad.get("subscribe_refused", 0) >= 2, 10), replica.stats.bad
        assert SUBJECT not in replica._announced  # nothing announced that the broker would not deliver
        assert publisher.queue_depth == len(batches)
        _grant_everything(cluster)
        # granted: the replica announces and receives, its acks reach the collector, the queue empties
        assert wait_for(lambda: publisher.queue_depth == 0, 30), (
            publisher.queue_depth,
            publisher.connected,
            publisher.subscribe_refused,
            replica.stats.bad,
            replica._announced,
            replica._subjects_subscribed,
            replica.stats.received,
            replica._refused_subjects,
        )
        assert replica.stats.received >= len(batches)
        refused = (publisher.subscribe_refused, replica.stats.bad["subscribe_refused"])
        time.sleep(1.5)
        assert (publisher.subscribe_refused, replica.stats.bad["subscribe_refused"]) == refused  # not asked again
    finally:
        publisher.stop(flush_timeout_s=1.0)
        replica.stop()
