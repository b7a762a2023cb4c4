"""End to end without a radio: scripted peripheral -> real BleakClient/BleakScanner -> collector ->
real mosquitto -> a subscriber that checks every sample and its timestamp."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from collector import polar_pmd as pmd
from collector.ble import scan
from collector.service import Collector
from collector.testing import (
    NS,
    ScriptedPolar,
    ScriptedRadio,
    ScriptedWitMotion,
    VirtualClock,
    ankle_signal,
    polar_frames,
    true_times,
)
from plm import wire
from plm.config import MqttSettings, Settings
from plm.mqtt import connect, make_client
from plm.wire import decode, decode_status

pytestmark = pytest.mark.services

RATE = 52.0
PER_FRAME = 71
ADDRESS = "A0:9E:1A:00:00:01"


class Subscriber:
    """Collects every batch and the latest status per topic; a persistent session survives restarts. It stands
    in for the detector, so it announces, as one does, that it receives subject s1 (``_owner``, retained): the
    collector sends a subject's batches once a receiver has said so."""

    def __init__(self, url: str, client_id: str = "", persistent: bool = False) -> None:
        self.settings = MqttSettings(url=url, username="plm", password="plm-test-password")
        self.batches: list = []
        self.status: dict[str, object] = {}
        self.lock = threading.Lock()
        self.client = make_client(self.settings, client_id, on_connect=lambda c: c.subscribe("plm/v1/#", qos=1))
        self.client.on_message = self._on_message
        connect(self.client, self.settings, persistent=persistent)
        owner = wire.encode_owner("e2e-subscriber", (0, 1), time.time_ns())
        self.client.publish(wire.owner_topic("s1"), owner, qos=1, retain=True).wait_for_publish(5)

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            if msg.topic.endswith("/acc"):
                self.batches.append(decode(msg.payload))
            elif msg.topic.endswith("/status") and msg.payload:
                self.status[msg.topic] = decode_status(msg.payload)

    def wait_for(self, samples: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if sum(b.count for b in self.batches) >= samples:
                    return
            time.sleep(0.05)

    def unique_batches(self) -> list:
        with self.lock:
            by_seq = {b.seq: b for b in self.batches}  # QoS 1 may redeliver: dedupe by seq
        return [by_seq[s] for s in sorted(by_seq)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _settings(url: str, tmp_path: Path, driver: str = "polar_pmd", rate: float | None = None) -> Settings:
    return Settings(
        mqtt={"url": url, "username": "plm", "password": "plm-test-password", "keepalive_s": 5},
        subjects=[
            {
                "id": "s1",
                "sensors": [
                    {"id": "left-ankle", "side": "left", "driver": driver, "address": ADDRESS, "rate_hz": rate}
                ],
            }
        ],
        collector={"queue_dir": str(tmp_path / "queue"), "queue_max_batches": 1000},
    )


def _polar(n_frames: int, clock: VirtualClock, wall0: int, **kwargs) -> tuple[ScriptedPolar, np.ndarray]:
    signal = ankle_signal(n_frames * PER_FRAME, RATE, seed=n_frames)
    rng = np.random.default_rng(1)
    jitter = 8_000_000 + rng.exponential(15e6, n_frames).astype(np.int64)
    p = ScriptedPolar(
        address=ADDRESS,
        frames=polar_frames(signal, wall0_ns=wall0, drift_ppm=kwargs.pop("drift_ppm", 40.0)),
        clock=clock,
        latency_ns=lambda i: int(jitter[i]),
        **kwargs,
    )
    return p, signal


async def _run_until_done(collector: Collector, peripheral, timeout_s: float = 30.0, during=None) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    if during is not None:
        await during()
    await asyncio.wait_for(peripheral.done.wait(), timeout_s)
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 30)


def _collector(settings: Settings, radio: ScriptedRadio, clock) -> Collector:
    return Collector(
        settings,
        clock=clock,
        scanner_backend=radio.scanner_backend(),
        client_backend=radio.client_backend(),
        status_interval_s=0.2,
        scan_timeout_s=2.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )


def _check_samples(batches, signal: np.ndarray, wall0: int, missing: set[int] = frozenset(), drift_ppm=40.0):
    """Every sample arrives once with its exact milli-g value and a timestamp within 50 ms."""
    truth_t = true_times(len(signal), wall0, RATE, drift_ppm)
    expected = [j for j in range(len(signal)) if j // PER_FRAME not in missing]
    got_t = np.concatenate([b.timestamps_ns() for b in batches])
    got_xyz = np.concatenate([b.xyz for b in batches])
    assert len(got_t) == len(expected)
    assert np.array_equal(np.rint(got_xyz * 1000).astype(np.int64), signal[expected])
    err = np.abs(got_t - truth_t[expected])
    assert err.max() < 50_000_000, f"timestamp error up to {err.max() / 1e6:.1f} ms"
    return err


def test_polar_end_to_end_exact_samples_and_times(mosquitto, tmp_path) -> None:
    wall0 = time.time_ns() - 600 * NS
    clock = VirtualClock(wall0)
    sub = Subscriber(mosquitto.url)
    try:

        async def main():
            p, signal = _polar(40, clock, wall0, packet_params=4)  # settings answer in 4 packets
            radio = ScriptedRadio().add(p)
            collector = _collector(_settings(mosquitto.url, tmp_path), radio, clock)
            await _run_until_done(collector, p)
            return p, signal

        p, signal = asyncio.run(main())
        sub.wait_for(len(signal))
        batches = sub.unique_batches()
        _check_samples(batches, signal, wall0)
        assert p.commands[:2] == [pmd.get_settings_command(), pmd.start_acc_command()]
        assert [b.count for b in batches[:-1]] == [52] * (len(batches) - 1)
        assert [b.seq for b in batches] == list(range(len(batches)))
        # contiguous: once the clock mapping has warmed up (30 s) batches join within a ms or two
        joins = [abs(b.start_ns - a.end_ns) for a, b in itertools.pairwise(batches)]
        assert max(joins[32:]) < 2_000_000, joins
        time.sleep(0.3)
        status = sub.status["plm/v1/s1/left-ankle/status"]
        assert status.state == "offline" and status.battery_pct == 87 and status.rssi_dbm == -60
        assert status.frames_received == 40 and status.frames_dropped == 0 and status.rate_hz == 52.0
    finally:
        sub.close()


def test_polar_disconnect_and_dropped_frames_become_gaps(mosquitto, tmp_path) -> None:
    wall0 = time.time_ns() - 600 * NS
    clock = VirtualClock(wall0)
    sub = Subscriber(mosquitto.url)
    try:

        async def main():
            p, signal = _polar(
                36,
                clock,
                wall0,
                drop_frames={5},
                disconnect_at={12: (4, 0.1)},  # frames 12-15 happen while the link is down
                start_errors=[pmd.PmdStatus.INVALID_STATE],  # the first START is refused
            )
            radio = ScriptedRadio().add(p)
            collector = _collector(_settings(mosquitto.url, tmp_path), radio, clock)
            await _run_until_done(collector, p)
            return p, signal, collector

        p, signal, collector = asyncio.run(main())
        missing = {5, 12, 13, 14, 15}
        expected = sum(PER_FRAME for f in range(36) if f not in missing)
        sub.wait_for(expected)
        batches = sub.unique_batches()
        _check_samples(batches, signal, wall0, missing)
        session = collector.sensors[0].session
        assert any("START ACC failed: INVALID_STATE" in e for e in session.counters.errors)
        assert session.counters.link_gaps == 1 and p.connects == 3
        # no batch spans a hole: implied sample times never run over missing samples
        truth_t = true_times(len(signal), wall0, RATE, 40.0)
        for f in (5, 12):
            hole_start, hole_end = truth_t[f * PER_FRAME], truth_t[f * PER_FRAME + PER_FRAME - 1]
            assert not any(b.start_ns < hole_start and b.end_ns > hole_end for b in batches)
        time.sleep(0.3)
        status = sub.status["plm/v1/s1/left-ankle/status"]
        assert status.extra["reconnects"] == 2 and status.extra["gaps"] >= 2
        assert status.frames_dropped >= 1
    finally:
        sub.close()


def test_polar_broker_restart_loses_no_batch(mosquitto_factory, tmp_path) -> None:
    broker = mosquitto_factory()
    wall0 = time.time_ns() - 600 * NS
    clock = VirtualClock(wall0)
    sub = Subscriber(broker.url, client_id="e2e-restart-sub", persistent=True)
    try:

        async def main():
            p, signal = _polar(90, clock, wall0, pace_s=0.04)  # ~3.6 s of streaming

            async def outage():
                while len(sub.batches) < 20:
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(1.2)  # the stream goes on; batches pile up on disk
                await asyncio.to_thread(broker.start)

            radio = ScriptedRadio().add(p)
            collector = _collector(_settings(broker.url, tmp_path), radio, clock)
            collector.flush_timeout_s = 15.0
            await _run_until_done(collector, p, during=outage)
            return signal, collector

        signal, collector = asyncio.run(main())
        sub.wait_for(len(signal), timeout_s=30)
        batches = sub.unique_batches()
        assert [b.seq for b in batches] == list(range(len(batches)))
        _check_samples(batches, signal, wall0)
        publisher = collector.sensors[0].publisher
        assert publisher.dropped == 0 and publisher.queue_depth == 0
    finally:
        sub.close()


def test_batches_survive_a_collector_stopped_while_the_broker_is_down(mosquitto_factory, tmp_path) -> None:
    """SIGTERM path with no broker: batches stay on disk and go out, in order, on the next run."""
    broker = mosquitto_factory()
    wall0 = time.time_ns() - 600 * NS
    clock = VirtualClock(wall0)
    broker.stop()

    async def first_run():
        p, signal = _polar(20, clock, wall0)
        radio = ScriptedRadio().add(p)
        collector = _collector(_settings(broker.url, tmp_path), radio, clock)
        collector.flush_timeout_s = 0.5
        await _run_until_done(collector, p)
        return signal, collector

    signal, collector = asyncio.run(first_run())
    assert collector.sensors[0].publisher.queue_depth == len(signal) // 52 + 1
    broker.start()
    sub = Subscriber(broker.url)
    try:

        async def second_run():
            p2 = ScriptedPolar(address=ADDRESS, frames=[], clock=clock)
            radio = ScriptedRadio().add(p2)
            collector2 = _collector(_settings(broker.url, tmp_path), radio, clock)
            stop = asyncio.Event()
            task = asyncio.create_task(collector2.run(stop))
            for _ in range(200):
                if sum(b.count for b in sub.batches) >= len(signal):
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await task

        asyncio.run(second_run())
        _check_samples(sub.unique_batches(), signal, wall0)
    finally:
        sub.close()


def test_witmotion_end_to_end(mosquitto, tmp_path) -> None:
    wall0 = time.time_ns() - 600 * NS
    clock = VirtualClock(wall0)
    sub = Subscriber(mosquitto.url)
    n = 50 * 30
    acc_raw = np.rint(ankle_signal(n, 50.0, seed=7) / 1000 * 2048).astype(np.int64)  # 16 g full scale
    try:

        async def main():
            p = ScriptedWitMotion(
                address=ADDRESS,
                acc_raw=acc_raw,
                wall0_ns=wall0,
                clock=clock,
                split_every=3,
                garbage_at={10},
                drop_notifications={200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212},
            )
            radio = ScriptedRadio().add(p)
            collector = _collector(_settings(mosquitto.url, tmp_path, driver="witmotion"), radio, clock)
            await _run_until_done(collector, p)
            return p, collector

        p, collector = asyncio.run(main())
        lost = set(range(400, 426))
        kept = [j for j in range(n) if j not in lost]
        sub.wait_for(len(kept))
        batches = sub.unique_batches()
        got = np.concatenate([b.xyz for b in batches])
        assert len(got) == len(kept)
        # within quantisation: the wire carries milli-g, the device 16/32768 g
        assert np.abs(got - acc_raw[kept] * 16 / 32768).max() <= 0.0005 + 1e-6
        got_t = np.concatenate([b.timestamps_ns() for b in batches])
        truth = wall0 + np.round(np.array(kept) * NS / 50.0).astype(np.int64)
        assert np.abs(got_t - truth).max() < 50_000_000
        assert p.writes[:3] == [bytes.fromhex("FFAA6988B5"), bytes.fromhex("FFAA030800"), bytes.fromhex("FFAA000000")]
        driver = collector.sensors[0].session.driver
        assert driver.gaps == 1 and driver.stats.frames_bad == 1
    finally:
        sub.close()


def test_scan_lists_supported_devices_with_driver_and_rssi() -> None:
    radio = ScriptedRadio().add(
        ScriptedPolar(address="A0:9E:1A:00:00:01", rssi=-55),
        ScriptedWitMotion(address="C4:00:00:00:00:02", rssi=-70),
    )

    found = asyncio.run(scan(0.1, scanner_backend=radio.scanner_backend()))
    assert [(r.driver, r.address, r.rssi) for r in found] == [
        ("polar_pmd", "A0:9E:1A:00:00:01", -55),
        ("witmotion", "C4:00:00:00:00:02", -70),
    ]


def test_eight_sensors_in_one_process_all_batches_arrive(mosquitto, tmp_path) -> None:
    """Short version of bench/collector_load.py: 8 Polars at once, every sample of every sensor."""
    wall0 = time.time_ns() - 600 * NS
    clock = VirtualClock(wall0)
    sub = Subscriber(mosquitto.url)
    n_frames = 15
    try:

        async def main():
            radio = ScriptedRadio()
            sensors = []
            for i in range(8):
                p, _signal = _polar(n_frames, clock, wall0, pace_s=0.01)
                p.address = f"A0:9E:1A:00:01:{i:02X}"
                radio.add(p)
                sensors.append({"id": f"ankle{i}", "side": "left", "driver": "polar_pmd", "address": p.address})
            settings = Settings(
                mqtt={"url": mosquitto.url, "username": "plm", "password": "plm-test-password"},
                subjects=[{"id": "load", "sensors": [s]} for s in sensors[:1]]
                + [{"id": f"load{i}", "sensors": [s]} for i, s in enumerate(sensors[1:], 1)],
                collector={"queue_dir": str(tmp_path / "q"), "queue_max_batches": 1000},
            )
            collector = _collector(settings, radio, clock)
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in radio.peripherals.values())), 30)
            await asyncio.sleep(0.1)
            stop.set()
            await task

        asyncio.run(main())
        per_sensor = n_frames * PER_FRAME
        sub.wait_for(8 * per_sensor)
        with sub.lock:
            total = sum(b.count for b in sub.batches)
        assert total == 8 * per_sensor
    finally:
        sub.close()
