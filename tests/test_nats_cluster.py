"""The project's MQTT on a real three-node NATS cluster (nats-server 2.9: MQTT 3.1.1, JetStream-backed sessions and
retained messages) (issue 22): the features, and a broker node and a detector replica killed mid-night without losing
or doubling a movement. What works on NATS and what does not: docs/deploy-scale.md."""

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


def _cluster_night(nats_cluster_factory, influxd_factory, tmp_path, **faults):
    """Four subjects' 15-min severe nights at 50x real time through the cluster (publishers and the two replicas
    on different nodes), with the given fault; the long version is bench/nats_cluster.py. NATS's default ack_wait
    (30 s): without the detector's wait at seq holes this lost 29 of 124 movements (both faults, one run)."""
    from bench.nats_cluster import PASSWORD, ClusterNightConfig, format_report, run_cluster_night

    cfg = ClusterNightConfig(
        subjects=4,
        minutes=15,
        batches_per_s=400,
        mqtt_options={"consumer_replicas": 1},
        drain_s=120,  # a stall fails with the replicas' warnings, before pytest's timeout kills it without them
        workdir=tmp_path / "night",
        **faults,
    )
    cluster = nats_cluster_factory(users={"plm": PASSWORD}, mqtt_options=cfg.mqtt_options)
    report = run_cluster_night(cfg, (cluster, influxd_factory()))
    print(format_report(report))
    return report


def _assert_lossless(report) -> None:
    assert report.movements_expected > 20  # a night with movements to lose
    assert (report.movements_lost, report.movements_extra, report.movements_duplicated) == (0, 0, 0)
    assert report.summary_mismatches == []
    assert report.publisher_dropped == 0
    assert all(n >= 1 for n in report.final_nights.values()), report.final_nights
    assert all(s.get("holes_given_up") == 0 for s in report.replica_status.values()), report.replica_status
    assert report.faults and all(f.recovery_s is not None for f in report.faults), report.faults


def test_broker_node_killed_mid_night_loses_and_doubles_no_movement(nats_cluster_factory, influxd_factory, tmp_path):
    """Node n1 SIGKILLed mid-night (replica 1 and the publishers on n1 reconnect through their address to n2) and
    restarted 3 s later as an orchestrator would: what NATS had delivered and not had acknowledged comes again after
    its ack_wait (or the collector resends it when the detector's ack stalls), behind newer batches; the detector waits at the seq hole (detector/live/ingest.py). Every movement is
    stored once and the nights equal offline scoring."""
    report = _cluster_night(nats_cluster_factory, influxd_factory, tmp_path, node_kill=True, replica_kill=False)
    _assert_lossless(report)
    assert report.failovers >= 1  # some connection did go to another node


def test_detector_replica_killed_mid_night_loses_and_doubles_no_movement(
    nats_cluster_factory, influxd_factory, tmp_path
):
    """Replica 0 SIGKILLed mid-night and started again (checkpoint + journal); the batches NATS had delivered to the
    dead process come again after ack_wait, behind the newer ones -- nothing lost, nothing doubled."""
    report = _cluster_night(nats_cluster_factory, influxd_factory, tmp_path, node_kill=False, replica_kill=True)
    _assert_lossless(report)
