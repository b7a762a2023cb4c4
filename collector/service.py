"""The collector process: one BLE session and one MQTT publisher per configured sensor.

Runs until ``stop`` is set (SIGTERM/SIGINT in the CLI) or ``seconds`` pass; then stops the
streams, closes every open batch, publishes what the broker takes within a few seconds, leaves the
rest in the on-disk queue and marks each sensor offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from plm.config import Settings
from plm.wire import SensorStatus

from .ble import Backoff, SensorSession
from .drivers import Clock
from .publisher import SensorPublisher

log = logging.getLogger(__name__)


@dataclass
class Sensor:
    session: SensorSession
    publisher: SensorPublisher


@dataclass
class Collector:
    settings: Settings
    clock: Clock = time.time_ns
    scanner_backend: type[BaseBleakScanner] | None = None
    client_backend: type[BaseBleakClient] | None = None
    status_interval_s: float = 60.0
    scan_timeout_s: float = 20.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    flush_timeout_s: float = 10.0
    sensors: list[Sensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        for subject in self.settings.subjects:
            for cfg in subject.sensors:
                if cfg.driver is None:
                    continue  # a sensor served by something else (e.g. an ESP32 publishing itself)
                publisher = SensorPublisher(
                    self.settings.mqtt,
                    subject.id,
                    cfg.id,
                    cfg.side,
                    self.settings.collector.queue_dir,
                    self.settings.collector.queue_max_batches,
                    ack_mode=self.settings.collector.ack_mode,
                )
                session = SensorSession(
                    subject.id,
                    cfg,
                    publisher.submit,
                    self.clock,
                    scanner_backend=self.scanner_backend,
                    client_backend=self.client_backend,
                    scan_timeout_s=self.scan_timeout_s,
                    backoff=Backoff(self.backoff_initial_s, self.backoff_max_s),
                )
                self.sensors.append(Sensor(session, publisher))
        if not self.sensors:
            raise ValueError("no sensors with a BLE driver configured (subjects[].sensors[].driver)")

    def status(self, sensor: Sensor, state: str | None = None) -> SensorStatus:
        s, p = sensor.session, sensor.publisher
        d = s.driver
        return SensorStatus(
            # not connected while the collector runs = the link is down ("lost"); "offline" is said only
            # at a clean stop, because the detector ends a subject's night on "offline" from all sensors
            state=state or ("online" if s.connected else "lost"),
            side=s.sensor.side,
            model=d.model,
            battery_pct=s.battery_pct,
            rssi_dbm=s.rssi_dbm,
            rate_hz=s.rate_hz,
            frames_received=d.stats.frames_received,
            frames_dropped=d.stats.frames_dropped(d.lost_samples, d.samples_per_frame),
            queue_depth=p.queue_depth,
            time_ns=time.time_ns(),
            extra={
                "samples_lost": d.lost_samples,
                "gaps": d.gaps + s.counters.link_gaps,
                "reconnects": max(0, s.counters.connects - 1),
                "queue_dropped": p.dropped,
                "mtu": s.mtu,
                "drift_ppm": round(d.drift_ppm, 2),
                "last_error": s.counters.last_error,
            },
        )

    async def run(self, stop: asyncio.Event | None = None, seconds: float | None = None) -> None:
        stop = stop or asyncio.Event()
        for sensor in self.sensors:
            sensor.publisher.start()
        tasks = [asyncio.create_task(s.session.run(stop), name=s.session.label) for s in self.sensors]
        status_task = asyncio.create_task(self._status_loop(stop))
        try:
            if seconds is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), seconds)
                stop.set()
            else:
                await stop.wait()
            log.info("collector stopping: flushing batches")
            done, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
            for t in done:
                if t.exception() is not None:
                    log.error("sensor task %s failed: %r", t.get_name(), t.exception())
        finally:
            status_task.cancel()
            for sensor in self.sensors:
                sensor.session.flush()
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(
                    loop.run_in_executor(None, s.publisher.stop, self.status(s, "offline"), self.flush_timeout_s)
                    for s in self.sensors
                )
            )

    async def _status_loop(self, stop: asyncio.Event) -> None:
        """Status every ``status_interval_s``, and at once when a sensor goes online or offline."""
        loop = asyncio.get_running_loop()
        last_state: dict[int, bool] = {}
        last_sent = -float("inf")
        while not stop.is_set():
            now = loop.time()
            due = now - last_sent >= self.status_interval_s
            for i, sensor in enumerate(self.sensors):
                if due or last_state.get(i) != sensor.session.connected:
                    last_state[i] = sensor.session.connected
                    sensor.publisher.publish_status(self.status(sensor))
            if due:
                last_sent = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, self.status_interval_s))
