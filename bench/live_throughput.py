"""Live detector load: sensors sustained, ratio to a bare subscriber, movement latency, memory per subject.

Everything runs on this machine, in one run, against a local mosquitto and influxd (plm.localservices):

1. *Capacity* (backlog drain). A bare paho subscriber and the detector both hold a persistent session on
   ``plm/v1/+/+/acc``; a publisher queues ``--seconds`` of ``--sensors`` sensors (1-s batches, 52 Hz) for
   both; each then drains the same backlog alone. Messages per second drained = sensors sustained at one
   batch per sensor per second. Ratio = detector / bare subscriber (target >= 0.5).
2. *Real time.* A publisher process sends ``--sensors`` sensors live (one batch per sensor per second,
   timestamps = wall clock) for ``--realtime-s``; the detector consumes them live. Reported: whether it kept
   up (lag of the scored data behind the wall clock, minus the reorder window) and the latency from a
   movement's offset (wall clock = data time) to its first appearance in influxd (polled every 0.2 s;
   includes the reorder window, the offset confirmation, the group, the outbox and the HTTP write).
3. *Memory.* ``--memory-subjects`` subjects fed ``--memory-hours`` of data through the detector's own code
   path (no broker): tracemalloc per subject at 1/2 and at the end of the stretch.

    python bench/live_throughput.py --sensors 2000 --seconds 30 --realtime-s 60

Measures the software; it does not diagnose anyone.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from detector.service import LiveDetector
from plm import wire
from plm.config import InfluxSettings, MqttSettings, Settings
from plm.localservices import Influxd1, Mosquitto
from plm.mqtt import connect, make_client
from simulator import simulate_night

RATE_HZ = 52.0
NIGHTS = 4  # distinct simulated nights; subject k replays night k % NIGHTS with its own topics


def _nights(minutes: float) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    out = []
    for seed in range(NIGHTS):
        night = simulate_night(
            "rls-severe", seed=100 + seed, duration_h=max(0.25, minutes / 60), jitter_ms=0, gap=False
        )
        out.append({side: (leg.t - leg.t[0], leg.xyz) for side, leg in night.legs.items()})
    return out


def _payloads(nights, seconds: int, t0: float) -> list[dict[str, list[bytes]]]:
    """Encoded 1-s batches per night and side, timestamps from ``t0``."""
    per = int(RATE_HZ)
    out = []
    for night in nights:
        sides = {}
        for side, (_t, xyz) in night.items():
            msgs = []
            for s in range(seconds):
                chunk = xyz[(s * per) % (len(xyz) - per) :][:per]
                batch = wire.make_batch(round((t0 + s) * 1e9), RATE_HZ, chunk, s, now_ns=2**62)
                msgs.append(wire.encode_binary(batch))
            sides[side] = msgs
        out.append(sides)
    return out


def _topics(sensors: int) -> list[tuple[str, int, str]]:
    subjects = sensors // 2
    return [
        (wire.acc_topic(f"load{k:05d}", f"{side}-ankle"), k % NIGHTS, side)
        for k in range(subjects)
        for side in ("left", "right")
    ]


def _settings(mosq: Mosquitto, influxd: Influxd1, state_dir: Path, **detector) -> Settings:
    return Settings(
        mqtt=MqttSettings(url=mosq.url, username="plm", password="plm-test-password"),
        influx=InfluxSettings(url=influxd.url, api=1, bucket=influxd.database),
        detector={"state_dir": state_dir, **detector},
    )


def _publish_all(mqtt_settings: MqttSettings, items: list[tuple[str, bytes]], client_id: str) -> None:
    client = make_client(mqtt_settings, client_id)
    client.max_inflight_messages_set(1000)
    connect(client, mqtt_settings)
    infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
    for info in infos[-1000:]:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


# ---------------------------------------------------------------- 1. capacity


class BareSubscriber:
    """What the broker and this machine can deliver to one Python paho consumer that does nothing."""

    def __init__(self, mqtt_settings: MqttSettings, client_id: str = "bench-bare") -> None:
        self.count = 0
        self.first = self.last = 0.0
        self.done = threading.Event()
        self.expect = 0
        self.client = make_client(mqtt_settings, client_id, on_connect=self._sub)
        self.client.on_message = self._on_message
        self.settings = mqtt_settings

    def _sub(self, client: mqtt.Client) -> None:
        client.subscribe(wire.SAMPLES_WILDCARD, 1)

    def _on_message(self, _c, _u, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expect > 0:
            self.done.set()

    def connect(self) -> None:
        connect(self.client, self.settings, persistent=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def capacity(mosq: Mosquitto, influxd: Influxd1, sensors: int, seconds: int, work: Path) -> dict:
    settings = _settings(mosq, influxd, work / "cap", instance="benchcap")
    bare = BareSubscriber(settings.mqtt)
    bare.connect()
    time.sleep(0.5)
    bare.close()  # the session (and its subscription) stays on the broker
    detector = LiveDetector(settings, publish_results=False)
    detector.start()
    detector.stop()
    pay = _payloads(_nights(seconds / 60), seconds, time.time() - seconds)
    topics = _topics(sensors)
    items = [(topic, pay[night][side][s]) for s in range(seconds) for topic, night, side in topics]
    started = time.perf_counter()
    _publish_all(settings.mqtt, items, "bench-backlog")
    publish_rate = len(items) / (time.perf_counter() - started)
    print(f"  backlog: {len(items)} messages queued ({publish_rate:.0f} msg/s published)", flush=True)

    bare = BareSubscriber(settings.mqtt)
    bare.expect = len(items)
    bare.connect()
    bare.done.wait(300)
    bare_rate = (bare.count - 1) / max(bare.last - bare.first, 1e-9)
    bare.close()

    detector = LiveDetector(settings, publish_results=False)
    t_start = time.perf_counter()
    detector.start()
    half_at = None  # the first half includes each leg's one-off start (filter design, rate estimate)
    while detector.stats.received < len(items) and time.perf_counter() - t_start < 900:
        if half_at is None and detector.stats.received >= len(items) // 2:
            half_at = (time.perf_counter(), detector.stats.received)
        time.sleep(0.05)
    t_end = time.perf_counter()
    det_rate = detector.stats.received / (t_end - t_start)
    steady_rate = (detector.stats.received - half_at[1]) / (t_end - half_at[0]) if half_at else det_rate
    detector.stop()
    return {
        "messages": len(items),
        "bare_msg_s": bare_rate,
        "detector_msg_s_whole": det_rate,
        "detector_msg_s_second_half": steady_rate,
        "ratio_whole": det_rate / bare_rate,
        "ratio_second_half": steady_rate / bare_rate,
        "bad": dict(detector.stats.bad),
    }


# ---------------------------------------------------------------- 2. real time


def _live_publisher(url: str, sensors: int, offset: int, count: int, seconds: int, t0: float, ready) -> None:
    """Publish one batch per sensor per second; batch [t0+s, t0+s+1) goes out at wall time t0+s+1."""
    mqtt_settings = MqttSettings(url=url, username="plm", password="plm-test-password")
    pay = _payloads(_nights(seconds / 60), seconds, t0)
    topics = _topics(sensors)[offset : offset + count]
    client = make_client(mqtt_settings, f"bench-live-{offset}-{t0:.0f}")
    client.max_inflight_messages_set(5000)
    connect(client, mqtt_settings)
    ready.set()
    late = 0.0
    for s in range(seconds):
        wait = t0 + s + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
        else:
            late = max(late, -wait)
        for topic, night, side in topics:
            client.publish(topic, pay[night][side][s], qos=1)
    time.sleep(2)
    client.disconnect()
    client.loop_stop()
    print(f"  publisher: max lateness {late:.2f} s", flush=True)


def realtime(mosq: Mosquitto, influxd: Influxd1, sensors: int, seconds: int, work: Path, window_s: float) -> dict:
    settings = _settings(
        mosq, influxd, work / f"rt{window_s:g}", instance=f"benchrt{int(window_s * 10)}", reorder_window_s=window_s
    )
    detector = LiveDetector(settings, publish_results=True, checkpoint_every_s=30.0)
    detector.start()
    t0 = float(int(time.time()) + 8)
    ready = mp.Event()
    # two publisher processes when one cannot render and send everything in time
    per = [sensors] if sensors <= 1000 else [sensors // 2, sensors - sensors // 2]
    procs = []
    offset = 0
    for n in per:
        p = mp.Process(target=_live_publisher, args=(mosq.url, sensors, offset, n, seconds, t0, ready))
        p.start()
        procs.append(p)
        offset += n
    lags: list[float] = []
    first_seen: dict[tuple[str, int], float] = {}
    offsets: dict[tuple[str, int], float] = {}
    stop = threading.Event()

    def poll_influx() -> None:
        since = int(t0 * 1000)
        while not stop.is_set():
            try:
                res = influxd.query(
                    f'SELECT "end_ms", "subject" FROM "movement" WHERE time >= {since}ms GROUP BY "subject", "side"',
                    influxd.database,
                )
                now = time.time()
                for series in res["results"][0].get("series", []):
                    subject = series["tags"]["subject"]
                    for row in series["values"]:
                        key = (subject + series["tags"]["side"], row[0])
                        if key not in first_seen:
                            first_seen[key] = now
                            offsets[key] = row[1] / 1000
            except Exception as exc:  # a failed poll is retried
                print(f"  poll: {exc}", file=sys.stderr)
            stop.wait(0.2)

    poller = threading.Thread(target=poll_influx, daemon=True)
    poller.start()
    while time.time() < t0 + seconds + 12:
        time.sleep(1.0)
        now = time.time()
        reached = [max(s.last_t.values()) for s in list(detector.subjects.values()) if s.last_t]
        if reached and now > t0 + 10:
            lags.append(now - min(reached))
    for p in procs:
        p.join(30)
    stop.set()
    poller.join(5)
    received = detector.stats.received
    detector.stop()
    lat = sorted(first_seen[k] - offsets[k] for k in first_seen)
    expected = len(_topics(sensors)) * seconds
    return {
        "sensors": sensors,
        "reorder_window_s": window_s,
        "messages_expected": expected,
        "messages_received": received,
        "lag_s_median": statistics.median(lags) if lags else None,
        "lag_s_max_last_half": max(lags[len(lags) // 2 :]) if lags else None,
        "movements_seen": len(lat),
        "latency_s_p50": lat[len(lat) // 2] if lat else None,
        "latency_s_p95": lat[int(0.95 * (len(lat) - 1))] if lat else None,
    }


# ---------------------------------------------------------------- 3. memory


def memory(subjects: int, hours: float, work: Path) -> dict:
    seconds = int(hours * 3600)
    settings = Settings(influx=InfluxSettings(url="http://127.0.0.1:9", api=1), detector={"state_dir": work / "mem"})
    detector = LiveDetector(settings, publish_results=False)
    detector.sink.put = lambda lines: len(list(lines))  # the outbox is measured elsewhere; no server here
    nights = _nights(min(60.0, seconds / 60))
    t0 = time.time() - seconds
    per = int(RATE_HZ)
    topics = _topics(2 * subjects)
    marks = {}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    group: list[tuple[str, bytes]] = []
    for s in range(seconds):
        for topic, night, side in topics:
            _t, xyz = nights[night][side]
            a = (s * per) % (len(xyz) - per)
            batch = wire.make_batch(round((t0 + s) * 1e9), RATE_HZ, xyz[a : a + per], s, now_ns=2**62)
            group.append((topic, wire.encode_binary(batch)))
        if (s + 1) % 10 == 0:  # ten seconds per group, as under load (memory does not depend on chunking)
            detector.apply_many(group, wall_s=t0 + s)
            group = []
        if s + 1 in (seconds // 4, seconds // 2, seconds):
            gc.collect()
            marks[s + 1] = (tracemalloc.get_traced_memory()[0] - base) / subjects
    tracemalloc.stop()
    elapsed = time.perf_counter() - started
    q, h, e = seconds // 4, seconds // 2, seconds
    return {
        "subjects": subjects,
        "hours": hours,
        "bytes_per_subject_quarter": marks[q],
        "bytes_per_subject_half": marks[h],
        "bytes_per_subject_end": marks[e],
        "growth_second_half_per_hour": (marks[e] - marks[h]) / (hours / 2),
        "msgs_per_s_offline_traced": 2 * subjects * seconds / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=60, help="backlog length for the capacity test")
    parser.add_argument("--realtime-s", type=int, default=60)
    parser.add_argument("--windows", default="5,0.5", help="reorder windows (s) for the real-time runs")
    parser.add_argument("--memory-subjects", type=int, default=100)
    parser.add_argument("--memory-hours", type=float, default=1.0)
    parser.add_argument("--skip", default="", help="comma list of capacity,realtime,memory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with Mosquitto(workdir=work / "mosquitto") as mosq, Influxd1(workdir=work / "influxd") as influxd:
            if "capacity" not in skip:
                print(f"capacity: {args.sensors} sensors x {args.seconds} s backlog", flush=True)
                results["capacity"] = capacity(mosq, influxd, args.sensors, args.seconds, work)
                print(json.dumps(results["capacity"], indent=1), flush=True)
            if "realtime" not in skip:
                for window in (float(w) for w in args.windows.split(",")):
                    print(
                        f"real time: {args.sensors} sensors for {args.realtime_s} s, reorder window {window} s",
                        flush=True,
                    )
                    r = realtime(mosq, influxd, args.sensors, args.realtime_s, work, window)
                    results.setdefault("realtime", []).append(r)
                    print(json.dumps(r, indent=1), flush=True)
        if "memory" not in skip:
            print(f"memory: {args.memory_subjects} subjects x {args.memory_hours} h", flush=True)
            results["memory"] = memory(args.memory_subjects, args.memory_hours, work)
            print(json.dumps(results["memory"], indent=1), flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
