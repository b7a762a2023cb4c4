"""The project's MQTT on a real three-node NATS cluster (nats-server 2.9: MQTT 3.1.1, JetStream-backed sessions and
retained messages) (issue 22). What works on NATS and what does not: docs/deploy-scale.md."""

from __future__ import annotations

import json
import threading

import pytest

from plm import wire
from plm.config import MqttSettings
from plm.mqtt import connect, make_client
from tests.live_helpers import wait_for

pytestmark = pytest.mark.services


def _settings(node, protocol: str = "3.1.1") -> MqttSettings:
    return MqttSettings(url=node.url, username="plm", password="plm-test-password", protocol=protocol)


def test_mqtt5_is_refused_so_clients_need_the_protocol_setting(nats_cluster) -> None:
    """NATS 2.9 refuses an MQTT 5 CONNECT: the collector's and simulator's clients (MQTT 5 by default) need
    mqtt.protocol = "3.1.1" there; a wrong password is refused as on mosquitto."""
    node = nats_cluster.nodes[0]
    with pytest.raises(ConnectionError, match="refused"):
        connect(make_client(_settings(node, "5"), "nats-v5"), _settings(node, "5"))
    wrong = MqttSettings(url=node.url, username="plm", password="not-the-password", protocol="3.1.1")
    with pytest.raises(ConnectionError, match="refused"):
        connect(make_client(wrong, "nats-wrong"), wrong)
    client = make_client(_settings(node), "nats-311")
    connect(client, _settings(node))
    client.disconnect()
    client.loop_stop()


def test_qos1_batches_retained_status_and_last_will_across_nodes(nats_cluster) -> None:
    """QoS 1 batches published on node 0 reach a subscriber on node 1 in order; a retained status published on
    node 0 and the Last Will of a connection that died without DISCONNECT reach a new subscriber on node 2."""
    n0, n1, n2 = nats_cluster.nodes
    got: list[bytes] = []
    sub = make_client(_settings(n1), "nats-sub", on_connect=lambda c: c.subscribe("plm/v1/+/+/acc", 1))
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_message = lambda _c, _u, m: got.append(m.payload)
    connect(sub, _settings(n1))
    assert subscribed.wait(10)
    pub = make_client(_settings(n0), "nats-pub", will=(wire.status_topic("nwill", "left-ankle"), b'{"state":"lost"}'))
    connect(pub, _settings(n0))
    payloads = [f"batch-{i}".encode() for i in range(300)]
    for info in [pub.publish(wire.acc_topic("nqos", "left-ankle"), p, qos=1) for p in payloads]:
        info.wait_for_publish(10)
    pub.publish(wire.status_topic("nqos", "left-ankle"), b'{"state":"online"}', qos=1, retain=True).wait_for_publish(10)
    assert wait_for(lambda: len(got) >= len(payloads), 20), len(got)
    assert got == payloads  # each once, in order
    pub.loop_stop()
    pub.socket().close()  # a dead link: no DISCONNECT, so the broker publishes the will
    retained: dict[str, tuple[dict, bool]] = {}
    reader = make_client(_settings(n2), "nats-reader", on_connect=lambda c: c.subscribe("plm/v1/+/+/status", 1))
    reader.on_message = lambda _c, _u, m: retained.__setitem__(m.topic, (json.loads(m.payload), m.retain))
    connect(reader, _settings(n2))
    try:
        assert wait_for(lambda: retained.get(wire.status_topic("nqos", "left-ankle"), ({}, 0))[0] != {}, 10)
        assert retained[wire.status_topic("nqos", "left-ankle")] == ({"state": "online"}, True)
        assert wait_for(lambda: retained.get(wire.status_topic("nwill", "left-ankle"), ({}, 0))[0] != {}, 20)
        assert retained[wire.status_topic("nwill", "left-ankle")][0] == {"state": "lost"}
    finally:
        for c in (sub, reader):
            c.disconnect()
            c.loop_stop()


# Not here: the node-kill and replica-kill night (bench/nats_cluster.py). On NATS 2.9 it is not reliable enough for
# CI -- runs lost 0-11 movements as late redeliveries, and some never finished (batches left unacknowledged):
# docs/deploy-scale.md says what and why.
