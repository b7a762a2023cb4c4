"""Live detector load: sensors sustained, ratio to a bare subscriber, movement latency, memory per subject.

Everything runs on this machine, in one run, against a local mosquitto and influxd (plm.ops.localservices):

0. *Cost per message* (no broker). ``apply_many`` + journal on pre-built wire payloads of ``--sensors``
   sensors (groups of 4 s, chunks of 8 s, as under load), once as is and once with the scorer's ``feed``
   stubbed: the service's own cost per message next to the scorer's. Stable on a busy machine.
1. *Capacity* (backlog drain). A bare paho subscriber and the detector both hold a persistent session on
   ``plm/v1/+/+/acc``; a publisher queues a short cold backlog (every leg starts), then ``--seconds`` of
   ``--sensors`` sensors (1-s batches, 52 Hz); each drains the same backlog alone, ``--rounds`` times.
   Messages per second drained (the detector's: applied and scored, including the tail of each leg it held
   back for a longer chunk) = sensors sustained at one batch per sensor per second. Ratio = best
   detector / best bare subscriber of the warm rounds (target >= 0.5).
2. *Real time.* For each sensor count of ``--realtime-sensors`` (ascending; stops after the first that
   does not keep up) and each reorder window of ``--windows``: publisher processes send the sensors live
   (one batch per sensor per second, timestamps = wall clock) for ``--realtime-s``; the detector runs in its
   own process (as ``plm detect`` does). Reported: whether it kept up (lag of its most behind leg's scored
   data behind the wall clock), and the latency from a movement's offset (wall clock = data time) to its
   first appearance in influxd (polled every 0.1 s, an upper bound; includes the batch, the reorder window, the offset
   confirmation, the group, the outbox and the HTTP write). The replay starts 20 min into severe-RLS
   nights, staggered per subject, so movements come throughout.
3. *Memory.* ``--memory-subjects`` subjects fed ``--memory-hours`` of data through the detector's own code
   path (no broker): tracemalloc per subject at 1/4, 1/2 and at the end of the stretch.

    python bench/live_throughput.py --sensors 2000 --seconds 20 --realtime-sensors 1000,2000

Measures the software; it does not diagnose anyone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from detector.live.service import LiveDetector
from detector.storage import schema
from plm import wire
from plm.config import InfluxSettings, MqttProtocol, MqttSettings, Settings
from plm.mqtt import connect, make_client
from plm.ops.localservices import Influxd1, Mosquitto
from simulator import simulate_night

RATE_HZ = 52.0
NIGHTS = 4  # distinct simulated nights; subject k replays night k % NIGHTS with its own topics
OFFSET_S = 1200  # where in the night the replay starts: 20 min in, lying, severe RLS (a movement every ~20 s)
STAGGERS = 16  # subjects of one night start STAGGER_S apart, so that their movements do not all come at once
STAGGER_S = 37
WARMUP_S = 15  # real time: lag and latency are measured after this much of the stream


def _nights(seconds: float) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    hours = max(0.25, (OFFSET_S + STAGGERS * STAGGER_S + seconds) / 3600)
    out = []
    for seed in range(NIGHTS):
        night = simulate_night("rls-severe", seed=100 + seed, duration_h=hours, jitter_ms=0, gap=False)
        out.append({side: (leg.t - leg.t[0], leg.xyz) for side, leg in night.legs.items()})
    return out


def _phase(night: int, stagger: int) -> float:
    """Where in the second a subject's sensors start their batches (0 <= phase < 1): real sensors are not
    in step, each sends when its own second is full. Subjects replaying the same (night, stagger) share one."""
    return ((night * STAGGERS + stagger) % (NIGHTS * STAGGERS)) / (NIGHTS * STAGGERS)


def _payloads(nights, seconds: int, t0: float, first: int = 0) -> dict[tuple[int, int, str], list[bytes]]:
    """Encoded 1-s batches per (night, stagger, side): seconds ``first .. first+seconds`` of the replay,
    timestamps from ``t0`` plus the subject's phase (second ``first`` at ``t0 + phase``)."""
    per = int(RATE_HZ)
    out = {}
    for n, night in enumerate(nights):
        for stagger in range(STAGGERS):
            for side, (_t, xyz) in night.items():
                msgs = []
                for s in range(first, first + seconds):
                    a = ((OFFSET_S + stagger * STAGGER_S + s) * per) % (len(xyz) - per)
                    start = t0 + _phase(n, stagger) + s - first
                    batch = wire.make_batch(round(start * 1e9), RATE_HZ, xyz[a : a + per], s, now_ns=2**62)
                    msgs.append(wire.encode_binary(batch))
                out[(n, stagger, side)] = msgs
    return out


def _topics(sensors: int) -> list[tuple[str, tuple[int, int, str]]]:
    """(topic, payload key) per sensor: subject k replays night k % NIGHTS, staggered."""
    subjects = sensors // 2
    return [
        (wire.acc_topic(f"load{k:05d}", f"{side}-ankle"), (k % NIGHTS, (k // NIGHTS) % STAGGERS, side))
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


def _drop_session(mqtt_settings: MqttSettings, client_id: str, protocol: MqttProtocol) -> None:
    """End a persistent session the bench no longer uses. Left behind, it stays subscribed to every sample
    topic and the broker queues each later message for it: by the 2000-sensor real-time run seven such
    sessions made mosquitto (on the load's core) deliver too slowly, and the detector waited, idle."""
    client = make_client(mqtt_settings, client_id, protocol=protocol, persistent=False)
    connect(client, mqtt_settings, persistent=False)  # a clean session replaces (discards) the old one
    client.disconnect()
    client.loop_stop()


# ---------------------------------------------------------------- 1. capacity


class BareSubscriber:
    """What the broker and this machine can deliver to one Python paho consumer that does nothing."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        client_id: str = "bench-bare",
        protocol: MqttProtocol = "3.1.1",
        stock: bool = True,
    ) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self.done = threading.Event()
        self.expect = 0
        self.client = make_client(mqtt_settings, client_id, on_connect=self._sub, protocol=protocol, persistent=True)
        if stock:  # paho's own reading (the baseline), not plm.mqtt's chunked reads; same settings
            self.client.__class__ = mqtt.Client
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


def _bare_id(protocol: MqttProtocol, stock: bool) -> str:
    return f"bench-bare-{protocol}-{'stock' if stock else 'chunked'}"


def _drain_bare(settings: Settings, expect: int, protocol: MqttProtocol, stock: bool = True) -> float:
    bare = BareSubscriber(settings.mqtt, _bare_id(protocol, stock), protocol, stock)
    bare.expect = expect
    bare.connect()
    bare.done.wait(300)
    bare.close()
    return (bare.count - 1) / max(bare.last - bare.first, 1e-9)


def _thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) a thread of this process has used (Linux /proc)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain_detector(settings: Settings, expect: int) -> tuple[float, LiveDetector, float]:
    """Messages per second from connecting until every message is applied *and scored* (restore excluded).

    Under a backlog the service holds each leg's batches for up to 16 s of data, so when the last message
    is in, the tail of every leg may not be scored yet: that work counts too. It is done once the worker is
    idle again (the idle flush waits for a quiet CPU window), so what is added is the worker thread's CPU
    time from the last message until nothing is held, not the wall time of that wait."""
    detector = LiveDetector(settings, publish_results=False)
    before = detector.stats.received
    t_start = time.perf_counter()
    detector.start()
    while detector.stats.received - before < expect and time.perf_counter() - t_start < 900:
        time.sleep(0.01)
    received_s = time.perf_counter() - t_start
    assert detector._worker is not None and detector._worker.native_id is not None
    cpu_at_end = _thread_cpu_s(detector._worker.native_id)
    while detector.core.holding and time.perf_counter() - t_start < 900:
        time.sleep(0.01)
    held_cpu_s = _thread_cpu_s(detector._worker.native_id) - cpu_at_end
    rate = (detector.stats.received - before) / (received_s + held_cpu_s)
    detector.stop()
    return rate, detector, held_cpu_s


def cost(sensors: int, seconds: int, work: Path) -> dict:
    """Microseconds per message through the journal and apply_many, with and without the scorer."""
    from detector.scoring import scorer as scorer_module

    pay = _payloads(_nights(seconds), seconds, time.time() - seconds - 60)
    topics = _topics(sensors)
    items = [(topic, pay[key][s]) for s in range(seconds) for topic, key in topics]
    group = 4 * sensors
    out = {}
    real_feed = scorer_module.NightScorer.feed
    for label, feed in (("without_scorer", lambda self, side, t, xyz: []), ("with_scorer", real_feed)):
        best = float("inf")
        for attempt in range(2):  # best of two: the machine is shared
            settings = Settings(
                influx=InfluxSettings(url="http://127.0.0.1:9", api=1),
                detector={"state_dir": work / f"cost-{label}-{attempt}"},
            )
            detector = LiveDetector(settings, publish_results=False)
            detector.sink.put = lambda lines: len(list(lines))  # the outbox's own cost is in the capacity test
            detector.chunk_s = 8.0
            scorer_module.NightScorer.feed = feed
            try:
                detector.apply_many(items[:sensors])  # every leg starts (scorer set-up is not per message)
                started = time.perf_counter()
                for i in range(sensors, len(items), group):
                    part = items[i : i + group]
                    detector.journal.append(part)
                    detector.apply_many(part)
                best = min(best, (time.perf_counter() - started) / (len(items) - sensors))
            finally:
                scorer_module.NightScorer.feed = real_feed
                detector.sink.close()
                detector.journal.close()
        out[f"us_per_msg_{label}"] = round(best * 1e6, 1)
    out["us_per_msg_scorer"] = round(out["us_per_msg_with_scorer"] - out["us_per_msg_without_scorer"], 1)
    return out


def rule_release(nights, seconds: int, t0: float) -> dict[tuple[int, int, str, int], tuple[float, float]]:
    """When the scoring rules let each movement go: every (night, stagger) of the load fed to the service's
    scorer as the service feeds it (the same wire payloads, decoded; one 1-s batch per leg, legs in
    turn). Key: (night, stagger, side, onset ms); value: (data time at which ``NightScorer.feed`` first
    returned it, its offset). Deterministic, so it is the floor under the live latency of the same
    movements: what the rules wait for (offset confirmation, a leg held displaced, a long movement on the
    other leg), apart from anything the service adds."""
    from detector.scoring.scorer import NightScorer
    from plm.rules import RULESETS

    pay = _payloads(nights, seconds, t0)
    released: dict[tuple[int, int, str, int], tuple[float, float]] = {}
    for n in range(len(nights)):
        for stagger in range(STAGGERS):
            scorer = NightScorer(RULESETS["wasm2016"], sides=("left", "right"))
            for s in range(seconds):
                for side in ("left", "right"):
                    batch = wire.decode(pay[(n, stagger, side)][s])
                    for e in scorer.feed(side, batch.timestamps_s(), batch.xyz):
                        released.setdefault(
                            (n, stagger, e.side, schema.to_ms(e.onset)), (t0 + s + 1, e.onset + e.duration)
                        )
    return released


def _subject_key(subject: str) -> tuple[int, int]:
    """(night, stagger) that subject ``loadNNNNN`` replays (see _topics)."""
    k = int(subject[4:])
    return k % NIGHTS, (k // NIGHTS) % STAGGERS


def scorer_hold(seconds: int = 120) -> dict:
    """The latency floor set by the rules alone (no service): for every movement of every (night, stagger)
    of the load, data time from its offset until the scorer, fed 1-s batches, first returns it."""
    t0 = 1.7e9
    released = rule_release(_nights(seconds), seconds, t0)
    # after the scorer's start-up, and early enough that a wait of up to 30 s is seen before the replay ends
    delays = [at - end for at, end in released.values() if t0 + 5 <= end < t0 + seconds - 30]
    return {
        "movements": len(delays),
        "offset_to_returned_s_p50": _percentile(delays, 50),
        "offset_to_returned_s_p90": _percentile(delays, 90),
        "offset_to_returned_s_p95": _percentile(delays, 95),
        "returned_within_2s": round(float(np.mean(np.array(delays) <= 2.0)), 3) if delays else None,
    }


def capacity(
    mosq: Mosquitto, influxd: Influxd1, sensors: int, seconds: int, work: Path, rounds: int = 2, warmup_s: int = 3
) -> dict:
    """Backlog drain, twice: a short cold one (every leg starts: scorer set-up, first filter calls), then the
    measured warm one -- the same sensors continuing, as a detector that was down for a while meets them."""
    settings = _settings(mosq, influxd, work / "cap", instance="benchcap")
    # the baseline: a stock paho subscriber with the detector's protocol (a fair ratio); for reference, the
    # same with plm.mqtt's chunked socket reads (what the detector reads with), doing nothing either
    protocol = settings.detector.mqtt_protocol
    for stock in (True, False):
        bare = BareSubscriber(settings.mqtt, _bare_id(protocol, stock), protocol, stock)
        bare.connect()
        time.sleep(0.5)
        bare.close()  # the session (and its subscription) stays on the broker
    detector = LiveDetector(settings, publish_results=False)
    detector.start()
    detector.stop()
    topics = _topics(sensors)
    out: dict = {"sensors": sensors, "seconds": seconds}
    phases = [("cold", 0, warmup_s)] + [(f"warm{r + 1}", warmup_s + r * seconds, seconds) for r in range(rounds)]
    nights = _nights(warmup_s + rounds * seconds)
    t0 = time.time() - warmup_s - rounds * seconds - 5
    for phase, first, length in phases:
        pay = _payloads(nights, length, t0 + first, first)
        items = [(topic, pay[key][s]) for s in range(length) for topic, key in topics]
        started = time.perf_counter()
        _publish_all(settings.mqtt, items, f"bench-backlog-{phase}")
        print(
            f"  {phase} backlog: {len(items)} messages queued ({len(items) / (time.perf_counter() - started):.0f}"
            " msg/s published)",
            flush=True,
        )
        bare_rate = _drain_bare(settings, len(items), protocol, stock=True)
        chunked_rate = _drain_bare(settings, len(items), protocol, stock=False)
        det_rate, detector, held_cpu_s = _drain_detector(settings, len(items))
        out[phase] = {
            "messages": len(items),
            "protocol": protocol,
            "bare_msg_s": round(bare_rate),
            "bare_chunked_reads_msg_s": round(chunked_rate),
            "detector_msg_s": round(det_rate),
            "ratio": round(det_rate / bare_rate, 3),
            "ratio_to_chunked": round(det_rate / chunked_rate, 3),
            "chunk_s_at_end": detector.chunk_s,
            "held_tail_scored_cpu_s": round(held_cpu_s, 2),  # counted in detector_msg_s (see _drain_detector)
        }
        print(f"  {phase}: {json.dumps(out[phase])}", flush=True)
    warm = [v for k, v in out.items() if k.startswith("warm")]
    best_bare = max(w["bare_msg_s"] for w in warm)
    best_detector = max(w["detector_msg_s"] for w in warm)
    out["bad"] = dict(detector.stats.bad)
    out["bare_msg_s_best"] = best_bare
    out["detector_msg_s_best"] = best_detector
    out["ratio"] = round(best_detector / best_bare, 3)
    out["ratio_to_chunked"] = round(best_detector / max(w["bare_chunked_reads_msg_s"] for w in warm), 3)
    out["sensors_sustained_by_drain_rate"] = best_detector  # 1 batch per sensor per second
    for client_id in (_bare_id(protocol, True), _bare_id(protocol, False), f"plm-detector-{detector.instance}"):
        _drop_session(settings.mqtt, client_id, protocol)
    return out


# ---------------------------------------------------------------- 2. real time


def _live_publisher(url: str, sensors: int, offset: int, count: int, seconds: int, ready, t0_queue) -> None:
    """Publish one batch per sensor per second, each sensor in its own phase: batch [t0+phase+s, ..+1) goes
    out at wall time t0+phase+s+1, so the load is spread over the second as real sensors spread it."""
    mqtt_settings = MqttSettings(url=url, username="plm", password="plm-test-password")
    nights = _nights(seconds)
    topics = _topics(sensors)[offset : offset + count]
    client = make_client(mqtt_settings, f"bench-live-{offset}-{time.time():.0f}")
    client.max_inflight_messages_set(5000)
    connect(client, mqtt_settings)
    ready.release()
    t0 = t0_queue.get()
    pay = _payloads(nights, seconds, t0)
    by_phase: dict[float, list[tuple[str, tuple[int, int, str]]]] = {}
    for topic, key in topics:
        by_phase.setdefault(_phase(key[0], key[1]), []).append((topic, key))
    late = 0.0
    for s in range(seconds):
        for phase in sorted(by_phase):
            wait = t0 + phase + s + 1 - time.time()
            if wait > 0:
                time.sleep(wait)
            else:
                late = max(late, -wait)
            for topic, key in by_phase[phase]:
                client.publish(topic, pay[key][s], qos=1)
    time.sleep(2)
    client.disconnect()
    client.loop_stop()
    print(f"  publisher {offset}: max lateness {late:.2f} s", flush=True)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


class _TimedDetector(LiveDetector):
    """The real service, noting when each movement is first handed to the outputs (wall clock)."""

    def __init__(self, *args, **kwargs) -> None:
        self.emitted: dict[tuple[str, str, int], float] = {}
        super().__init__(*args, **kwargs)
        emit = self.core._emit

        def timed(state, events) -> None:
            now = time.time()
            for e in events:
                self.emitted.setdefault((state.subject, e.side, schema.to_ms(e.onset)), now)
            emit(state, events)

        self.core._emit = timed


def _detector_process(
    settings: Settings, reports, stop, shard: tuple[int, int] = (0, 1), max_chunk_s: float = 16.0
) -> None:
    """The detector in its own process, as ``plm detect [--shard k/N]`` runs: reports progress once a second
    (a dict: ``kind`` started / progress / stopped, ``shard``, ``now``, ``received``, ``ignored`` (other shards'
    messages that still reached it), ``reached`` (the most behind leg's scored data), ``chunk_s``, ``cpu_s``;
    the stopped report adds ``emitted``). ``max_chunk_s``: the service's longest chunk (0: every batch scored on
    arrival, whatever the load)."""
    detector = _TimedDetector(
        settings, shard=shard, publish_results=True, checkpoint_every_s=30.0, max_chunk_s=max_chunk_s
    )
    detector.start()

    def report(kind: str, **extra) -> None:
        reached = [max(s.last_t.values()) for s in list(detector.subjects.values()) if s.last_t]
        reports.put(
            {
                "kind": kind,
                "shard": shard,
                "now": time.time(),
                "received": detector.stats.received,
                "ignored": detector.stats.ignored_other_shard,
                "reached": min(reached) if reached else None,
                "chunk_s": detector.chunk_s,
                # the whole process (all threads): contention on the machine does not count
                "cpu_s": time.process_time(),
                **extra,
            }
        )

    report("started")
    while not stop.wait(1.0):
        report("progress")
    detector.stop()
    report("stopped", emitted=detector.emitted)


def judge_realtime(
    lags: list[float], chunks: list[float], received: int, expected: int, window_s: float
) -> dict[str, object]:
    """Did a detector keep up in real time? ``lags``/``chunks``: its progress reports over the measured span
    (lag of the most behind leg's scored data behind the wall clock, the chunk it held legs for then).

    Kept up = every batch in, and the lag bounded and not growing: scored data trails the wall clock by the
    batch (1 s), the reorder window (rounded up to batches), the chunk the service held legs for under load
    (chunk_s: its latency-for-throughput trade) and 2 s of processing slack. Growing: the lag beyond the chunk
    held at that moment rose by more than a second from the second quarter of the run to the last (a policy
    that moves to a longer chunk adds that chunk to the lag by design; a service that falls behind grows its
    lag whatever the chunk)."""
    late_half = lags[len(lags) // 2 :]
    chunk_late = max(chunks[len(chunks) // 2 :], default=0.0)
    excess = [lag - chunk for lag, chunk in zip(lags, chunks, strict=True)]
    quarter = max(1, len(excess) // 4)
    growing = (
        len(excess) >= 4 and float(np.median(excess[-quarter:])) - float(np.median(excess[quarter : 2 * quarter])) > 1.0
    )
    kept_up = (
        bool(late_half) and max(late_half) <= 1.0 + window_s + chunk_late + 2.0 and not growing and received >= expected
    )
    return {
        "kept_up": kept_up,
        "lag_growing": growing,
        "lag_s_median": _percentile(lags, 50),
        "lag_s_max_last_half": round(max(late_half), 2) if late_half else None,
        "chunk_s_median": _percentile(chunks, 50),
        "chunk_s_max_last_half": chunk_late,
    }


def cpu_figures(marks: list[tuple[float, int, float]]) -> dict[str, float | None]:
    """The detector process's own CPU over the measured span, from (wall, messages received, process CPU s)
    marks: share of one core, and CPU microseconds per message received."""
    if len(marks) < 2:
        return {"detector_cpu_share": None, "detector_cpu_us_per_message": None}
    (w0, m0, c0), (w1, m1, c1) = marks[0], marks[-1]
    return {
        "detector_cpu_share": round((c1 - c0) / (w1 - w0), 3),
        "detector_cpu_us_per_message": round(1e6 * (c1 - c0) / max(1, m1 - m0)),
    }


def _pin(detector_pid: int | None, others: list[int | None]) -> bool:
    """The detector on core 0 alone, the load (publishers, mosquitto, influxd, this process) on the other
    cores: the question is whether *one detector process* keeps up, and on a small machine the load
    generator would otherwise take the detector's core (with 2 cores it needs about one). Returns whether
    it pinned (needs 2+ cores and sched_setaffinity)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return False
    if detector_pid is not None:
        os.sched_setaffinity(detector_pid, {cores[0]})
    for pid in others:
        if pid is not None:
            os.sched_setaffinity(pid, set(cores[1:]))
    return True


def _unpin(pids: list[int]) -> None:
    every = set(range(os.cpu_count() or 1))
    for pid in pids:
        with contextlib.suppress(OSError):  # the process is gone
            os.sched_setaffinity(pid, every)


def realtime(mosq: Mosquitto, influxd: Influxd1, sensors: int, seconds: int, work: Path, window_s: float) -> dict:
    settings = _settings(
        mosq,
        influxd,
        work / f"rt{sensors}-{window_s:g}",
        instance=f"benchrt{sensors}w{int(window_s * 10)}",
        reorder_window_s=window_s,
    )
    reports: mp.Queue = mp.Queue()
    stop_detector = mp.Event()
    detector = mp.Process(target=_detector_process, args=(settings, reports, stop_detector))
    detector.start()
    everyone_else = [mosq.proc.pid, influxd.proc.pid, os.getpid()]  # type: ignore[union-attr]
    pinned = _pin(detector.pid, everyone_else)
    if reports.get(timeout=60)["kind"] != "started":
        raise RuntimeError("the detector process did not start")
    ready = mp.Semaphore(0)
    # two publisher processes when one cannot render and send everything in time
    per = [sensors] if sensors <= 1000 else [sensors // 2, sensors - sensors // 2]
    procs, queues = [], []
    offset = 0
    for n in per:
        q: mp.Queue = mp.Queue()
        p = mp.Process(target=_live_publisher, args=(mosq.url, sensors, offset, n, seconds, ready, q))
        p.start()
        if pinned:
            _pin(None, [p.pid])
        procs.append(p)
        queues.append(q)
        offset += n
    for _ in procs:
        ready.acquire(timeout=120)
    t0 = float(int(time.time()) + 3)
    for q in queues:
        q.put(t0)
    lags: list[float] = []
    chunks: list[float] = []
    first_seen: dict[tuple[str, int], float] = {}
    offsets: dict[tuple[str, int], float] = {}
    stop = threading.Event()

    def poll_influx() -> None:
        while not stop.is_set():
            # the last two minutes of onsets only, so that the poll (and influxd's share of the cores) stays small
            since = int(max(t0, time.time() - 120) * 1000)
            try:
                res = influxd.query(
                    f'SELECT "end_ms" FROM "movement" WHERE time >= {since}ms GROUP BY "subject", "side"',
                    influxd.database,
                )
                now = time.time()
                for series in res["results"][0].get("series", []):
                    tags = series["tags"]
                    for stamp, end_ms in series["values"]:
                        key = (tags["subject"], tags["side"], int(stamp))
                        if key not in first_seen:
                            first_seen[key] = now
                            offsets[key] = end_ms / 1000
            except Exception as exc:  # a failed poll is retried
                print(f"  poll: {exc}", file=sys.stderr)
            stop.wait(0.1)  # the first poll that sees a point bounds its arrival from above

    poller = threading.Thread(target=poll_influx, daemon=True)
    poller.start()
    received = 0
    cpu_marks: list[tuple[float, int, float]] = []  # (wall, messages, process CPU s) inside the measured span
    load_before = os.getloadavg()[0]
    while time.time() < t0 + seconds + 8:
        try:
            r = reports.get(timeout=2.0)
        except Exception:  # queue.Empty: the detector is too busy to report; its lag shows in the next one
            continue
        received = r["received"]
        if r["reached"] is not None and t0 + WARMUP_S < r["now"] < t0 + seconds:
            lags.append(r["now"] - r["reached"])  # the most behind leg's scored data vs the wall clock
            chunks.append(r["chunk_s"])
            cpu_marks.append((r["now"], received, r["cpu_s"]))
    for p in procs:
        p.join(60)
    stop.set()
    poller.join(5)
    stop_detector.set()
    while True:
        r = reports.get(timeout=120)
        received = max(received, r["received"])
        if r["kind"] == "stopped":
            emitted = r["emitted"]
            break
    detector.join(30)
    if pinned:
        _unpin(everyone_else)
    _drop_session(settings.mqtt, f"plm-detector-{settings.detector.instance}", settings.detector.mqtt_protocol)
    # latency counted only for movements that ended while the stream ran (not the final flush), after the
    # detector's one-off start (legs set up, the scorer's compiled kernels loaded: the first ~10 s of a fresh
    # process hold everything back)
    measured = [k for k in first_seen if t0 + WARMUP_S <= offsets[k] < t0 + seconds - 1]
    lat = sorted(first_seen[k] - offsets[k] for k in measured)
    # where the time goes: offset -> handed to the outputs (batch, reorder window, the scorer's own wait for
    # the movement to be final, group), and handed over -> visible in influxd (outbox, HTTP, 0.1-s poll)
    to_emit = [emitted[k] - offsets[k] for k in measured if k in emitted]
    to_influx = [first_seen[k] - emitted[k] for k in measured if k in emitted]
    # the same movements scored by the rules alone (deterministic replay): what the rules wait for, and
    # what the service adds on top (reorder window, group, outbox, HTTP write, the 0.1-s poll)
    released = rule_release(_nights(seconds), seconds, t0)
    rule_wait, added, prompt = [], [], []
    for k in measured:
        at_end = released.get((*_subject_key(k[0]), k[1], k[2]))
        if at_end is None:
            continue
        rule_wait.append(at_end[0] - offsets[k])
        added.append(first_seen[k] - at_end[0])
        if at_end[0] - offsets[k] <= 2.0:
            prompt.append(first_seen[k] - offsets[k])
    expected = len(_topics(sensors)) * seconds
    verdict = judge_realtime(lags, chunks, received, expected, window_s)
    return {
        "sensors": sensors,
        "reorder_window_s": window_s,
        "messages_expected": expected,
        "messages_received": received,
        "kept_up": verdict.pop("kept_up"),
        "machine_load_at_start": round(load_before, 2),
        "detector_pinned_to_one_core": pinned,
        **cpu_figures(cpu_marks),
        **verdict,
        "movements_seen": len(lat),
        "latency_s_p50": _percentile(lat, 50),
        "latency_s_p95": _percentile(lat, 95),
        "latency_s_max": round(lat[-1], 2) if lat else None,
        "rule_wait_s_p50": _percentile(rule_wait, 50),
        "rule_wait_s_p95": _percentile(rule_wait, 95),
        "service_added_s_p50": _percentile(added, 50),
        "service_added_s_p95": _percentile(added, 95),
        "released_by_rules_within_2s": round(len(prompt) / len(rule_wait), 3) if rule_wait else None,
        "latency_s_p95_of_those": _percentile(prompt, 95),
        "offset_to_emit_s_p50": _percentile(to_emit, 50),
        "offset_to_emit_s_p95": _percentile(to_emit, 95),
        "emit_to_influx_s_p50": _percentile(to_influx, 50),
        "emit_to_influx_s_p95": _percentile(to_influx, 95),
    }


# ---------------------------------------------------------------- 3. memory


def memory(subjects: int, hours: float, work: Path) -> dict:
    """tracemalloc per subject at 1/4, 1/2 and the end of a stretch fed through the service's own code path
    (apply_many; no broker, the outbox stubbed): a night must stay under 1 MB a subject and flat."""
    seconds = int(hours * 3600)
    settings = Settings(influx=InfluxSettings(url="http://127.0.0.1:9", api=1), detector={"state_dir": work / "mem"})
    detector = LiveDetector(settings, publish_results=False)
    detector.sink.put = lambda lines: len(list(lines))  # the outbox is measured elsewhere; no server here
    nights = _nights(min(3600.0, seconds))
    t0 = time.time() - seconds
    per = int(RATE_HZ)
    topics = _topics(2 * subjects)
    marks = {}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    group: list[tuple[str, bytes]] = []
    for s in range(seconds):
        for topic, (night, stagger, side) in topics:
            _t, xyz = nights[night][side]
            a = ((OFFSET_S + stagger * STAGGER_S + s) * per) % (len(xyz) - per)
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
    detector.sink.close()
    detector.journal.close()
    q, h, e = seconds // 4, seconds // 2, seconds
    return {
        "subjects": subjects,
        "hours": hours,
        "kb_per_subject_quarter": round(marks[q] / 1e3, 1),
        "kb_per_subject_half": round(marks[h] / 1e3, 1),
        "kb_per_subject_end": round(marks[e] / 1e3, 1),
        "kb_growth_per_hour_second_half": round((marks[e] - marks[h]) / 1e3 / (hours / 2), 1),
        "msgs_per_s_offline_traced": round(2 * subjects * seconds / elapsed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=2000, help="sensors for the cost and capacity tests")
    parser.add_argument("--seconds", type=int, default=20, help="backlog length for the capacity test")
    parser.add_argument("--rounds", type=int, default=2, help="warm drains each (best one counts)")
    parser.add_argument("--realtime-sensors", default="500,1000,2000", help="sensor counts tried live, ascending")
    parser.add_argument("--realtime-s", type=int, default=45)
    parser.add_argument("--windows", default="0.5,5", help="reorder windows (s) for the real-time runs")
    parser.add_argument("--memory-subjects", type=int, default=10)
    parser.add_argument("--memory-hours", type=float, default=2.0)
    parser.add_argument("--skip", default="", help="comma list of cost,hold,capacity,realtime,memory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "cost" not in skip:
            print(f"cost per message: {args.sensors} sensors x 12 s, groups of 4 s", flush=True)
            results["cost"] = cost(args.sensors, 12, work)
            print(json.dumps(results["cost"], indent=1), flush=True)
        if "hold" not in skip:
            print(
                "scorer hold: every (night, stagger) of the load x 120 s, fed as 1-s batches (no service)", flush=True
            )
            results["scorer_hold"] = scorer_hold()
            print(json.dumps(results["scorer_hold"], indent=1), flush=True)
        with Mosquitto(workdir=work / "mosquitto") as mosq, Influxd1(workdir=work / "influxd") as influxd:
            if "capacity" not in skip:
                print(f"capacity: {args.sensors} sensors x {args.seconds} s backlog, {args.rounds} rounds", flush=True)
                results["capacity"] = capacity(mosq, influxd, args.sensors, args.seconds, work, args.rounds)
                print(json.dumps(results["capacity"], indent=1), flush=True)
            if "realtime" not in skip:
                for sensors in (int(n) for n in args.realtime_sensors.split(",")):
                    runs = []
                    for window in (float(w) for w in args.windows.split(",")):
                        print(f"real time: {sensors} sensors for {args.realtime_s} s, reorder window {window} s")
                        r = realtime(mosq, influxd, sensors, args.realtime_s, work, window)
                        runs.append(r)
                        print(json.dumps(r, indent=1), flush=True)
                    results.setdefault("realtime", []).extend(runs)
                    if any(r["kept_up"] for r in runs):
                        results["sensors_sustained_live"] = sensors
                    else:
                        break
                print(f"sensors sustained live: {results.get('sensors_sustained_live', 'none tried')}", flush=True)
        if "memory" not in skip:
            print(f"memory: {args.memory_subjects} subjects x {args.memory_hours} h", flush=True)
            results["memory"] = memory(args.memory_subjects, args.memory_hours, work)
            print(json.dumps(results["memory"], indent=1), flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
