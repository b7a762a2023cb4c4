"""Publish simulated nights live to MQTT in the wire format, as a collector would.

One process serves many sensors: each sensor renders its night lazily, one noise block (~20 s at
52 Hz) at a time, so a thousand sensors need ~25 MB, not a thousand nights in memory. Batches go
out at QoS 1 on ``plm/v1/<subject>/<sensor>/acc``; each sensor's status is retained ``online`` at
start and ``offline`` at a clean end, with a Last Will of ``lost`` when it has its own connection
(up to ``max_clients`` sensors; beyond that, sensors share a pool of connections and the will is
only on the pool's first sensor -- a crashed load test leaves the others "online").
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from plm.config import MqttSettings
from plm.mqtt import BufferedReadClient, connect, make_client
from plm.wire import SensorStatus, acc_topic, encode_binary, encode_json, encode_status, make_batch, status_topic
from simulator.night import SIDES, plan_night
from simulator.profiles import get_profile
from simulator.sensor import NOISE_BLOCK, SensorModel, make_sensors, wall_to_sample

log = logging.getLogger(__name__)

MAX_SPEED = 1000.0
MODEL_NAME = "plm-simulator"


@dataclass
class StreamConfig:
    subjects: int = 1
    speed: float = 1.0
    rate_hz: float = 52.0
    profile: str = "rls-moderate"
    seed: int = 0
    encoding: str = "binary"  # binary | json
    duration_h: float | None = None  # default 8 h
    batch_s: float = 1.0
    prefix: str = "sim"
    sensor_ids: tuple[str, str] = ("left", "right")  # ids for the left and right sensor
    age: float | None = None
    start_unix_s: float | None = None  # default: now
    distinct_nights: int = 16  # subjects beyond this reuse a night plan (with their own sensors)
    max_clients: int = 64
    options: dict[str, Any] = field(default_factory=dict)  # sensor options, as simulate_night's

    def validate(self) -> None:
        if not 1 <= self.subjects <= 10_000:
            raise ValueError(f"subjects must be 1-10000, got {self.subjects}")
        if not 0 < self.speed <= MAX_SPEED:
            raise ValueError(f"speed must be > 0 and <= {MAX_SPEED:g}, got {self.speed}")
        if self.encoding not in ("binary", "json"):
            raise ValueError(f"encoding must be 'binary' or 'json', got {self.encoding!r}")
        if not 0.05 <= self.batch_s <= 10:
            raise ValueError(f"batch_s must be 0.05-10 s, got {self.batch_s}")
        if not 10 <= self.rate_hz <= 500:
            raise ValueError(f"rate must be 10-500 Hz, got {self.rate_hz}")
        get_profile(self.profile)


@dataclass
class StreamStats:
    sensors: int = 0
    batches: int = 0
    samples: int = 0
    elapsed_s: float = 0.0
    max_lag_s: float = 0.0
    finished: bool = False  # the nights ran to their end (not stopped)


class _SensorStream:
    """One sensor: renders its night block by block and cuts it into batches."""

    def __init__(self, subject: str, sensor_id: str, model: SensorModel, plan, client: mqtt.Client) -> None:
        self.subject = subject
        self.sensor_id = sensor_id
        self.model = model
        self.plan = plan
        self.client = client
        self.topic = acc_topic(subject, sensor_id)
        self.next_i = 0
        self.seq = 0
        self.last_info: mqtt.MQTTMessageInfo | None = None
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def done(self) -> bool:
        return self.next_i >= self.model.n_total

    def render_block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if b not in self._blocks:
            i0 = b * NOISE_BLOCK
            i1 = min(self.model.n_total, i0 + NOISE_BLOCK)
            t, xyz, _dev, keep = self.model.render(self.plan, i0, i1)
            self._blocks[b] = (t, xyz, keep)
        return self._blocks[b]

    def prefetch(self) -> bool:
        """Render the next block ahead of time (spreads the work; all sensors cross blocks together)."""
        b = self.next_i // NOISE_BLOCK + 1
        if b in self._blocks or b * NOISE_BLOCK >= self.model.n_total:
            return False
        self.render_block(b)
        return True

    def take(self, until_wall: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Contiguous runs of kept samples taken before wall time ``until_wall`` (split at losses)."""
        limit = min(self.model.n_total, wall_to_sample(self.model, until_wall))
        runs: list[tuple[np.ndarray, np.ndarray]] = []
        while self.next_i < limit:
            b = self.next_i // NOISE_BLOCK
            t, xyz, keep = self.render_block(b)
            for old in [k for k in self._blocks if k < b]:
                del self._blocks[old]
            lo = self.next_i - b * NOISE_BLOCK
            hi = min(limit - b * NOISE_BLOCK, len(t))
            k = keep[lo:hi]
            if k.any():
                edges = np.flatnonzero(np.diff(np.concatenate([[False], k, [False]]).astype(np.int8)))
                for s, e in zip(edges[::2], edges[1::2], strict=True):
                    runs.append((t[lo + s : lo + e], xyz[lo + s : lo + e]))
            self.next_i = b * NOISE_BLOCK + hi
        return runs


def _status(side: str, state: str, rate_hz: float) -> bytes:
    return encode_status(
        SensorStatus(state=state, side=side, model=MODEL_NAME, rate_hz=rate_hz, time_ns=time.time_ns())
    )


def stream_nights(
    settings: MqttSettings,
    config: StreamConfig,
    *,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> StreamStats:
    """Publish ``config.subjects`` simulated nights until they end or ``stop`` is set; returns counts.

    ``ready`` is set once every sensor is connected and announced ``online`` (tests wait on it).
    """
    config.validate()
    stop = stop or threading.Event()
    profile = get_profile(config.profile, config.age)
    t0 = time.time() if config.start_unix_s is None else float(config.start_unix_s)
    duration_s = 3600.0 * (8.0 if config.duration_h is None else config.duration_h)
    n_sensors = 2 * config.subjects
    own_connection = n_sensors <= config.max_clients
    plans: dict[int, Any] = {}
    streams: list[_SensorStream] = []
    clients: list[mqtt.Client] = []
    pool: list[BufferedReadClient] = []
    try:
        for k in range(config.subjects):
            subject = f"{config.prefix}{k + 1:03d}"
            night_seed = config.seed + (k % max(1, config.distinct_nights))
            if night_seed not in plans:
                plans[night_seed] = plan_night(profile, night_seed, t0, duration_s)
            plan = plans[night_seed]
            sensors = make_sensors(plan, config.rate_hz, SIDES, seed=config.seed * 100_003 + k, **config.options)
            for side, sensor_id in zip(SIDES, config.sensor_ids, strict=True):
                topic = status_topic(subject, sensor_id)
                if own_connection:
                    client = make_client(
                        settings, f"plm-sim-{subject}-{sensor_id}", will=(topic, _status(side, "lost", config.rate_hz))
                    )
                    client.max_inflight_messages_set(100)
                    connect(client, settings)
                    clients.append(client)
                else:
                    if len(pool) < config.max_clients:
                        client = make_client(
                            settings, f"plm-sim-pool{len(pool)}", will=(topic, _status(side, "lost", config.rate_hz))
                        )
                        client.max_inflight_messages_set(1000)
                        connect(client, settings)
                        pool.append(client)
                        clients.append(client)
                    client = pool[len(streams) % len(pool)]
                stream = _SensorStream(subject, sensor_id, sensors[side], plan, client)
                stream.render_block(0)  # the first block before the clock starts
                stream.last_info = client.publish(topic, _status(side, "online", config.rate_hz), qos=1, retain=True)
                streams.append(stream)
        if ready is not None:
            ready.set()
        stats = _run(streams, config, t0, stop)
        for s in streams:
            side = SIDES[config.sensor_ids.index(s.sensor_id)]
            s.last_info = s.client.publish(
                status_topic(s.subject, s.sensor_id), _status(side, "offline", config.rate_hz), 1, True
            )
        return stats
    finally:
        _drain_and_close(clients, streams)


def _run(streams: list[_SensorStream], config: StreamConfig, t0: float, stop: threading.Event) -> StreamStats:
    stats = StreamStats(sensors=len(streams))
    encode = encode_binary if config.encoding == "binary" else encode_json
    real_start = time.monotonic()
    tick = 0
    while not stop.is_set() and not all(s.done for s in streams):
        tick += 1
        sim_until = t0 + tick * config.batch_s
        due = real_start + tick * config.batch_s / config.speed
        for s in streams:  # use the slack before the next tick to render ahead
            if time.monotonic() > due - 0.02:
                break
            s.prefetch()
        wait = due - time.monotonic()
        if wait > 0 and stop.wait(wait):
            break
        now_ns = time.time_ns()
        for s in streams:
            for t, xyz in s.take(sim_until):
                for a in range(0, len(t), 2000):  # keep every message far below the 64 KiB payload limit
                    batch = make_batch(round(t[a] * 1e9), s.model.rate_hz, xyz[a : a + 2000], s.seq, now_ns=now_ns)
                    s.last_info = s.client.publish(s.topic, encode(batch), qos=1)
                    s.seq = (s.seq + 1) % 2**32
                    stats.batches += 1
                    stats.samples += batch.count
        stats.max_lag_s = max(stats.max_lag_s, time.monotonic() - due)
    stats.elapsed_s = time.monotonic() - real_start
    stats.finished = all(s.done for s in streams)
    log.info("simulated stream: %d batches, %d samples, max lag %.2f s", stats.batches, stats.samples, stats.max_lag_s)
    return stats


def _drain_and_close(clients: list[mqtt.Client], streams: list[_SensorStream], timeout_s: float = 10.0) -> None:
    """Wait until each sensor's last QoS 1 message is acknowledged, then disconnect cleanly (no Last Will)."""
    deadline = time.monotonic() + timeout_s
    for s in streams:
        if s.last_info is not None:
            try:
                s.last_info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                log.warning("sensor %s/%s: last message not acknowledged", s.subject, s.sensor_id)
    for client in clients:
        client.disconnect()
        client.loop_stop()


class NightStreamer:
    """Run :func:`stream_nights` in a background thread: ``start()``, ``wait_ready()``, ``stop()``."""

    def __init__(self, settings: MqttSettings, config: StreamConfig) -> None:
        self.settings = settings
        self.config = config
        self.stats: StreamStats | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="plm-sim-stream", daemon=True)

    def _main(self) -> None:
        try:
            self.stats = stream_nights(self.settings, self.config, stop=self._stop, ready=self._ready)
        except BaseException as exc:  # surfaced by stop()/join()
            self.error = exc
            self._ready.set()

    def start(self) -> NightStreamer:
        self._thread.start()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        ok = self._ready.wait(timeout_s)
        if self.error is not None:
            raise self.error
        return ok

    def join(self, timeout_s: float | None = None) -> StreamStats | None:
        self._thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        return self.stats

    def stop(self, timeout_s: float = 30.0) -> StreamStats | None:
        self._stop.set()
        return self.join(timeout_s)
