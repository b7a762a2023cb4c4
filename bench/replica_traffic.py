"""Sample traffic each detector replica receives, with 1, 2 and 4 replicas (issue #22, item 3).

Everything runs on this machine against a local mosquitto (plm.ops.localservices): ``--subjects`` subjects, each
one sensor that says "online", waits for a detector's ``_owner`` announcement and publishes ``--seconds`` 1-s
batches (what the collector does); N replicas (``--shard k/N``) run in this process. Printed per N: the
batches each replica received, as a share of all batches (target about 1/N; before replicas subscribed to
their own subjects only, every replica received all of them), and whether every batch arrived exactly once.

    python bench/replica_traffic.py --subjects 40 --seconds 30

Measures the software; it does not diagnose anyone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from detector.live.service import LiveDetector
from plm import wire
from plm.config import InfluxSettings, MqttSettings, Settings
from plm.mqtt import connect, make_client
from plm.ops.localservices import Mosquitto

NS = 1_000_000_000


class Replica(LiveDetector):
    """The real service, counting the sample batches that reach it, by subject (no database: points are kept
    in its outbox, which no test here reads)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.acc: Counter[str] = Counter()
        keep = self.core.filter_received

        def counting(messages):
            self.acc.update(m.topic.split("/")[2] for m in messages if m.topic.endswith("/acc"))
            return keep(messages)

        self.core.filter_received = counting


def run(replicas: int, subjects: int, seconds: int, workdir: Path) -> dict[str, object]:
    broker = Mosquitto(workdir=workdir / f"mosquitto-{replicas}")
    broker.start()
    try:
        mqtt_settings = MqttSettings(url=broker.url, username="plm", password="plm-test-password")
        detectors = []
        for k in range(replicas):
            settings = Settings(
                mqtt=mqtt_settings,
                influx=InfluxSettings(url="http://127.0.0.1:9", api=1),
                detector={"state_dir": workdir / f"n{replicas}-r{k}", "instance": f"r{k}of{replicas}"},
            )
            detectors.append(Replica(settings, shard=(k, replicas), publish_results=False))
        for d in detectors:
            d.start()
        names = [f"traffic{i:04d}" for i in range(subjects)]
        owners: set[str] = set()
        client = make_client(mqtt_settings, f"traffic-publisher-{replicas}")
        client.on_message = lambda _c, _u, m: owners.add(m.topic.split("/")[2])
        connect(client, mqtt_settings)
        client.subscribe(f"{wire.TOPIC_ROOT}/+/_owner", qos=1)
        online = wire.encode_status(wire.SensorStatus("online", side="left"))
        for s in names:
            client.publish(wire.status_topic(s, "left-ankle"), online, qos=1, retain=True)
        deadline = time.monotonic() + 30
        while len(owners & set(names)) < subjects and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.time_ns() - seconds * NS
        xyz = np.zeros((52, 3), np.float32)
        infos = []
        for k in range(seconds):
            for s in names:
                batch = wire.make_batch(start + k * NS, 52.0, xyz, k)
                infos.append(client.publish(wire.acc_topic(s, "left-ankle"), wire.encode_binary(batch), qos=1))
        for info in infos:
            info.wait_for_publish(30)
        total = subjects * seconds
        deadline = time.monotonic() + 60
        while sum(sum(d.acc.values()) for d in detectors) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # anything extra (a fan-out) would have arrived by now
        for s in names:
            client.publish(wire.status_topic(s, "left-ankle"), b"", qos=1, retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        for d in detectors:
            d.stop()
        received = [sum(n for s, n in d.acc.items() if s in names) for d in detectors]
        once = all(sum(d.acc[s] for d in detectors) == seconds for s in names)
        return {
            "replicas": replicas,
            "batches": total,
            "received_per_replica": received,
            "share_per_replica": [round(r / total, 3) for r in received],
            "every_batch_once": once,
            "announced": len(owners & set(names)),
        }
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--replicas", default="1,2,4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plm-replica-traffic-") as tmp:
        for n in (int(x) for x in args.replicas.split(",")):
            print(json.dumps(run(n, args.subjects, args.seconds, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
