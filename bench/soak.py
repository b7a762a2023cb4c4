"""Fault-injection soak (issue 9, part 1): simulated nights through the real local pipeline while parts fail.

    simulator batches --collector's SensorPublisher (durable queue, held until the detector's ack)--MQTT-->
        mosquitto --> `plm detect` (separate process) --> influxd 1.x

Faults, at moments drawn from a seeded RNG while the nights stream at high speed:

* mosquitto SIGKILLed and restarted;
* influxd stopped for a long stretch of night time and restarted;
* the detector process SIGKILLed and restarted (it resumes from checkpoint + journal);
* batches delivered twice, swapped within the 5 s reorder window, held back and sent at the end
  (hours late, so the detector must count and drop them), and a sensor whose clock jumps (a batch
  two days in the future, one three hours in the past).

At the end every sensor says a retained ``offline`` goodbye (the detector finalises the night), the
outbox drains, and ``movement`` and ``night`` are read back from influxd with InfluxQL and compared
with offline scoring (:func:`detector.scoring.scorer.score_arrays`) of exactly the batches the detector
should have accepted: equality on (onset ms, side, kind, plm) and on the night summary.

    python -m bench.soak                                  # the bench run (see docs/reliability.md)
    python -m bench.soak --subjects 4 --minutes 120 --seed 3 --json soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collector.publisher import SensorPublisher
from detector.scoring.scorer import score_arrays
from plm import wire
from plm.config import MqttSettings
from plm.mqtt import connect, make_client
from plm.ops.localservices import Influxd1, Mosquitto
from simulator.batches import batches_as_arrays, night_batches

log = logging.getLogger(__name__)

PASSWORD = "soak-mqtt-password-5d1e"
INSTANCE = "soak"
COMPARED_INT = ("lm_count", "plm_count", "series_count", "twitch_count", "long_movement_count")
COMPARED_FLOAT = ("plm_index", "time_in_bed_h", "periodicity_index")


@dataclass
class SoakConfig:
    subjects: int = 2
    minutes: float = 20.0  # night length (data time)
    seed: int = 0
    batches_per_s: float = 400.0  # publishing speed (all sensors together), wall time
    mosquitto_kills: int = 1
    influx_outages: int = 1
    influx_outage_fraction: float = 0.3  # of the night's data time, per outage
    detector_kills: int = 1
    duplicates: float = 0.02  # fraction of batches delivered twice
    swaps: float = 0.02  # fraction of adjacent same-leg batch pairs swapped (within the reorder window)
    late: int = 3  # batches held back and delivered after the night (hours late in data time)
    clock_jumps: int = 2  # bogus batches from a sensor whose clock jumped (+2 days, -3 h)
    profile: str = "rls-severe"
    ble: bool = False  # one more subject (ble00) from scripted Polar peripherals through a `Collector` child
    ble_drops: int = 2  # scripted BLE link drops (the peripheral disconnects; ~14 s of data lost each)
    collector_kills: int = 1  # the collector child SIGKILLed and restarted on the same queue directory
    workdir: Path | None = None
    keep: bool = False


@dataclass
class FaultRecord:
    kind: str
    at_s: float  # wall seconds after the stream began
    at_night_min: float  # data time reached by the publisher
    down_s: float
    recovery_s: float | None  # from restart until the pipeline was demonstrably working again


@dataclass
class BleReport:
    """The BLE subject: what the sensors measured, what the collector published, what the detector stored."""

    samples_measured: int = 0  # by the two simulated sensors over the night
    frames_sent: int = 0  # notifications the peripherals sent (all collector runs)
    samples_published: int = 0  # unique samples on plm/v1/ble00/+/acc
    samples_lost_at_sensor: int = 0  # measured but never published: BLE drops, collector downtime
    gaps_in_published: int = 0  # holes > 1.5 sample periods in each leg's published stream
    gap_s_in_published: float = 0.0
    gaps_at: list[str] = field(default_factory=list)
    overlapping_batches: int = 0  # published batches overlapping the previous one: dropped by the detector
    overlapping_samples: int = 0
    max_overlap_ms: float = 0.0
    overlaps_at_s: list[float] = field(default_factory=list)  # data seconds after the leg's first sample
    offline_statuses: int = 0  # "offline" statuses the collector published (2 expected: the final goodbyes)
    final_nights: int = 0  # final night summaries for the subject (1 expected)
    link_drops: int = 0
    collector_kills: int = 0
    collector_runs: int = 0
    movements_expected: int = 0
    movements_stored: int = 0
    movements_lost: int = 0
    movements_extra: int = 0
    movements_duplicated: int = 0
    summary_mismatches: list[str] = field(default_factory=list)
    movement_diffs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.movements_lost == 0
            and self.movements_extra == 0
            and self.movements_duplicated == 0
            and not self.summary_mismatches
            and self.samples_published > 0
            and self.final_nights == 1
        )


@dataclass
class SoakReport:
    config: dict[str, Any]
    samples_produced: int = 0
    batches_produced: int = 0
    batches_published: int = 0  # including duplicates, late and clock-jumped batches
    samples_published: int = 0
    received_by_detector: int = 0  # messages the detector counted (incl. redeliveries and statuses)
    bad_by_detector: dict[str, int] = field(default_factory=dict)
    movements_expected: int = 0
    movements_stored: int = 0
    movements_lost: int = 0
    movements_extra: int = 0
    movements_duplicated: int = 0
    summaries_equal: bool = False
    summary_mismatches: list[str] = field(default_factory=list)
    batches_dropped_late: int = 0
    max_outbox_depth: int = 0
    max_journal_depth: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (wall s, detector RSS MB)
    detector_restarts: int = 0
    publisher_dropped: int = 0  # batches the publishers' queues dropped at their bound
    ble: BleReport | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.movements_lost == 0
            and self.movements_duplicated == 0
            and self.movements_extra == 0
            and self.publisher_dropped == 0
            and (self.summaries_equal)
            and (self.ble is None or self.ble.ok)
        )


# ----------------------------------------------------------------------------- pieces


class DetectorProcess:
    """`plm detect` as a child process configured through PLM_* variables, so it can be SIGKILLed. ``shard``
    makes it one replica of several; ``env`` adds variables (bench/nats_cluster.py: MQTT 3.1.1 on NATS)."""

    def __init__(
        self,
        mqtt_url: str,
        influxd: Influxd1,
        state_dir: Path,
        log_file: Path,
        *,
        instance: str = INSTANCE,
        shard: tuple[int, int] = (0, 1),
        env: dict[str, str] | None = None,
    ) -> None:
        self.instance, self.shard = instance, shard
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PLM_")},
            "PLM_MQTT__URL": mqtt_url,
            "PLM_MQTT__USERNAME": "plm",
            "PLM_MQTT__PASSWORD": PASSWORD,
            "PLM_INFLUX__URL": influxd.url,
            "PLM_INFLUX__API": "1",
            "PLM_INFLUX__BUCKET": influxd.database,
            "PLM_DETECTOR__STATE_DIR": str(state_dir),
            "PLM_DETECTOR__INSTANCE": instance,
            **(env or {}),
        }
        self.log_file = log_file
        self.state_dir = state_dir
        self.proc: subprocess.Popen[bytes] | None = None
        plm = shutil.which("plm")
        self.command = (
            [plm] if plm else [sys.executable, "-c", "import sys; from plm.cli import main; sys.exit(main())"]
        )

    def start(self) -> None:
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.command, "detect", "--shard", f"{self.shard[0]}/{self.shard[1]}", "--idle-end-min", "600"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def outbox_depth(self) -> int | None:
        path = self.state_dir / f"{self.instance}-outbox.sqlite"
        if not path.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
                return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.Error:
            return None


class Watcher:
    """Subscribes to the detector's status and the night summaries; samples RSS and outbox depth."""

    def __init__(self, settings: MqttSettings, detector: DetectorProcess, t0: float) -> None:
        self.detector = detector
        self.t0 = t0
        self.status: dict[str, Any] = {}
        self.status_seen = 0  # count of "online" status messages
        self.finals: set[str] = set()
        self.max_outbox = 0
        self.max_journal = 0
        self.rss: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.client = make_client(
            settings,
            "soak-watcher",
            on_connect=lambda c: c.subscribe(
                [(wire.detector_status_topic(INSTANCE), 1), (f"{wire.TOPIC_ROOT}/+/_night", 1)]
            ),
        )
        self.client.on_message = self._on_message
        connect(self.client, settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with contextlib.suppress(ValueError):
            doc = json.loads(msg.payload)
            with self.lock:
                if msg.topic.endswith("/_night"):
                    if doc.get("final"):
                        self.finals.add(msg.topic.split("/")[2])
                    return
                self.status = doc
                if doc.get("state") == "online":
                    self.status_seen += 1
                self.max_outbox = max(self.max_outbox, int(doc.get("outbox_depth") or 0))
                self.max_journal = max(self.max_journal, int(doc.get("journal_depth") or 0))

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            rss = self.detector.rss_mb()
            if rss is not None:
                self.rss.append((round(time.monotonic() - self.t0, 2), round(rss, 1)))
            depth = self.detector.outbox_depth()
            if depth is not None:
                self.max_outbox = max(self.max_outbox, depth)

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def _wait(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval_s)
    return None


def _rows(influxd: Influxd1, q: str) -> list[dict[str, Any]]:
    answer = influxd.query(q, database=influxd.database)
    out = []
    for s in answer["results"][0].get("series", []):
        out += [dict(zip(s["columns"], v, strict=True)) for v in s["values"]]
    return out


# ----------------------------------------------------------------------------- the BLE subject

BLE_SUBJECT = "ble00"
BLE_ADDRESSES = {"left": "A0:9E:1A:5E:00:01", "right": "A0:9E:1A:5E:00:02"}


def _ble_night(spec: dict[str, Any]) -> Any:
    from simulator import simulate_night

    return simulate_night(
        spec["profile"], seed=spec["seed"], duration_h=spec["minutes"] / 60, start_unix_s=spec["start_unix"],
        jitter_ms=0, gap=False,
    )  # fmt: skip


def _ble_frames(night: Any) -> dict[str, list[tuple[int, int, bytes]]]:
    """Each leg's PMD ACC notifications as a scripted Polar replays them (arrival time, -, bytes)."""
    from simulator.frames import polar_acc_frames

    return {
        side: [(round(n.time_s * 1e9), 0, n.data) for n in polar_acc_frames(leg, seed=k)]
        for k, (side, leg) in enumerate(sorted(night.legs.items()))
    }


def _ble_child(spec_json: str) -> int:
    """One collector process: scripted Polars from frame ``start[side]`` on -> `Collector` -> MQTT.

    Prints ``<side> <frame>`` for every notification sent, so the parent knows after a SIGKILL
    exactly where each sensor was. Stops cleanly (offline goodbye) once both sensors are done and
    the detector has acknowledged every batch."""
    import asyncio

    from collector.service import Collector
    from collector.testing import ScriptedPolar, ScriptedRadio, VirtualClock
    from plm.config import Settings

    spec = json.loads(spec_json)
    frames = _ble_frames(_ble_night(spec))

    class ReportingPolar(ScriptedPolar):
        def notify(self, uuid: str, data: bytes) -> None:
            super().notify(uuid, data)
            if len(data) > 20 and self.link is not None:  # a data frame (control answers are short)
                print(self.side, self.next_frame - 1, flush=True)

        def drop_link(self, away_s: float = 0.0) -> None:
            print("drop", self.side, flush=True)
            super().drop_link(away_s)

    async def main() -> None:
        clock = VirtualClock(frames["left"][0][0])
        radio = ScriptedRadio()
        for side, address in BLE_ADDRESSES.items():
            p = ReportingPolar(
                address=address, frames=frames[side], clock=clock, latency_ns=lambda i: 0, pace_s=spec["pace_s"],
                next_frame=spec["start"][side],
                disconnect_at={int(f): (int(k), float(a)) for f, (k, a) in spec["drops"].get(side, {}).items()},
            )  # fmt: skip
            p.side = side  # type: ignore[attr-defined]
            radio.add(p)
        settings = Settings(
            mqtt={"url": spec["url"], "username": "plm", "password": PASSWORD},
            subjects=[{
                "id": BLE_SUBJECT,
                "sensors": [
                    {"id": f"{side}-ankle", "side": side, "driver": "polar_pmd", "address": address}
                    for side, address in BLE_ADDRESSES.items()
                ],
            }],
            collector={"queue_dir": spec["queue_dir"], "queue_max_batches": 1_000_000, "ack_mode": "detector"},
        )  # fmt: skip
        collector = Collector(
            settings, clock=clock, scanner_backend=radio.scanner_backend(), client_backend=radio.client_backend(),
            status_interval_s=1.0, scan_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2,
            flush_timeout_s=120.0,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        for p in radio.peripherals.values():
            if p.next_frame >= len(p.frames):  # type: ignore[attr-defined]
                p.done.set()  # type: ignore[attr-defined]
        await asyncio.gather(*(p.done.wait() for p in radio.peripherals.values()))  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(main())
    return 0


class BleCollectorProcess:
    """The collector as a child process (so a kill is a real SIGKILL), tracking each sensor's last frame."""

    def __init__(self, spec: dict[str, Any], log_file: Path) -> None:
        self.spec = spec
        self.log_file = log_file
        self.last = {side: spec["start"][side] - 1 for side in BLE_ADDRESSES}
        self.frames_sent = 0
        self.link_drops = 0  # scripted drops that happened (one planned inside a collector outage does not)
        self.runs = 0
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, start: dict[str, int]) -> None:
        spec = {
            **self.spec,
            "start": start,
            "drops": {
                side: {f: v for f, v in drops.items() if int(f) >= start[side]}
                for side, drops in self.spec["drops"].items()
            },
        }
        with open(self.log_file, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.soak", "--ble-child", json.dumps(spec)],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
        self.runs += 1
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            fields = line.split()
            if len(fields) != 2:
                continue  # the last line of a child killed while writing it
            side, frame = fields
            if side == "drop":
                self.link_drops += 1
                continue
            self.last[side] = max(self.last[side], int(frame))
            self.frames_sent += 1

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye; whatever was only in memory is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)

    def wait(self, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(10)
        return rc


class BleCapture:
    """What the collector published for the BLE subject, deduplicated by (sensor, start_ns)."""

    def __init__(self, settings: MqttSettings) -> None:
        self.batches: dict[tuple[str, int], wire.SampleBatch] = {}
        self.lock = threading.Lock()
        self.client = make_client(
            settings, "soak-ble-capture",
            on_connect=lambda c: c.subscribe(
                [(f"{wire.TOPIC_ROOT}/{BLE_SUBJECT}/+/acc", 1), (f"{wire.TOPIC_ROOT}/{BLE_SUBJECT}/+/status", 1),
                 (f"{wire.TOPIC_ROOT}/{BLE_SUBJECT}/_night", 1)]
            ),
        )  # fmt: skip
        self.client.on_message = self._on_message
        self.offline_statuses = 0  # "offline" = a clean goodbye (docs/wire-format.md): the night ends on it
        self.final_nights = 0  # final night summaries the detector published for the subject
        connect(self.client, settings, persistent=True)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if msg.topic.endswith("/status") or msg.topic.endswith("/_night"):
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(msg.payload)
                with self.lock:
                    self.offline_statuses += doc.get("state") == "offline"
                    self.final_nights += bool(doc.get("final"))
            return
        with contextlib.suppress(wire.WireFormatError):
            batch = wire.decode(msg.payload)
            with self.lock:
                self.batches[(msg.topic.split("/")[3], batch.start_ns)] = batch

    def per_side(self) -> dict[str, list[wire.SampleBatch]]:
        with self.lock:
            items = sorted(self.batches.items())
        out: dict[str, list[wire.SampleBatch]] = {}
        for (sensor, _start), batch in items:
            out.setdefault(sensor.removesuffix("-ankle"), []).append(batch)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ----------------------------------------------------------------------------- the run


def run_soak(cfg: SoakConfig) -> SoakReport:
    from simulator import simulate_night

    report = SoakReport(config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
    rng = random.Random(cfg.seed)
    tmp = Path(cfg.workdir or tempfile.mkdtemp(prefix="plm-soak-"))
    duration_s = cfg.minutes * 60
    start_unix = time.time() - duration_s - 3600  # the whole night lies in the past, as a replayed one does

    # ---- the nights, and the publication schedule with its deliberate trouble
    subjects = [f"soak{i:02d}" for i in range(cfg.subjects)]
    accepted: dict[str, dict[str, list[wire.SampleBatch]]] = {}
    items: list[tuple[str, str, wire.SampleBatch]] = []  # (subject, side, batch)
    held_back: list[tuple[str, str, wire.SampleBatch]] = []
    for k, subject in enumerate(subjects):
        night = simulate_night(
            cfg.profile, seed=cfg.seed * 100 + k, duration_h=cfg.minutes / 60, start_unix_s=start_unix,
            jitter_ms=0, gap=False,
        )  # fmt: skip
        per_side = night_batches(night)
        for side, bs in per_side.items():
            report.batches_produced += len(bs)
            report.samples_produced += sum(b.count for b in bs)
            # held back: sent after the night -- too late for the reorder window, so dropped (a real gap)
            late_idx = set(rng.sample(range(len(bs) // 4, 3 * len(bs) // 4), cfg.late)) if cfg.late else set()
            held_back += [(subject, side, bs[i]) for i in sorted(late_idx)]
            keep = [b for i, b in enumerate(bs) if i not in late_idx]
            accepted.setdefault(subject, {})[side] = keep
        merged = sorted(
            ((subject, side, b) for side, bs in accepted[subject].items() for b in bs), key=lambda x: x[2].start_ns
        )
        items += merged
    items.sort(key=lambda x: x[2].start_ns)  # all subjects in time order, as live sensors would send
    # swaps within a leg: move a batch one place later in the stream (< 5 s of data time)
    for _ in range(int(cfg.swaps * len(items))):
        i = rng.randrange(len(items) - 8)
        j = next((j for j in range(i + 1, i + 8) if items[j][:2] == items[i][:2]), None)
        if j is not None:
            items[i], items[j] = items[j], items[i]
    # duplicates (a QoS 1 redelivery, or a collector resending after a reconnect)
    for _ in range(int(cfg.duplicates * len(items))):
        i = rng.randrange(len(items))
        items.insert(min(len(items), i + rng.randrange(1, 6)), items[i])
    # a sensor whose clock jumped: two days ahead (refused by the wire format) and three hours back (late)
    for n in range(cfg.clock_jumps):
        i = rng.randrange(len(items) // 3, len(items))
        subject, side, b = items[i]
        jump = 2 * 86400 if n % 2 == 0 else -3 * 3600
        jumped = wire.SampleBatch(b.start_ns + int(jump * 1e9), b.rate_hz, b.xyz, b.seq)
        items.insert(i + 1, (subject, side, jumped))

    # ---- the services
    mosquitto = Mosquitto(workdir=tmp / "mosquitto", users={"plm": PASSWORD})
    influxd = Influxd1(workdir=tmp / "influxd")
    mosquitto.start()
    influxd.start()
    settings = MqttSettings(url=mosquitto.url, username="plm", password=PASSWORD)
    detector = DetectorProcess(mosquitto.url, influxd, tmp / "detector-state", tmp / "detector.log")
    t0 = time.monotonic()
    detector.start()
    watcher = Watcher(settings, detector, t0)
    # one publisher per sensor, the collector's own class: durable queue, kept until the detector's ack
    publishers = {
        (subject, side): SensorPublisher(
            settings, subject, f"{side}-ankle", side, tmp / "queues", 10_000_000,
            client_id=f"soak-{subject}-{side}", ack_mode="detector",
        )
        for subject in subjects
        for side in ("left", "right")
    }  # fmt: skip
    ble: BleCollectorProcess | None = None
    capture: BleCapture | None = None
    ble_threads: list[threading.Thread] = []
    finalised = list(subjects)  # nights that must end final
    try:
        for pub in publishers.values():
            pub.start()
        if _wait(lambda: watcher.status.get("state") == "online", 30) is None:
            raise RuntimeError(f"the detector did not come online: see {detector.log_file}")
        if cfg.ble:
            report.ble = BleReport()
            ble, capture = _start_ble(cfg, report.ble, settings, tmp, start_unix, len(items) / cfg.batches_per_s)
            finalised = [*subjects, BLE_SUBJECT]

        # ---- fault schedule: (position in the stream, kind), drawn from the seeded RNG
        n = len(items)
        schedule: list[tuple[int, str]] = []
        for kind, count in (
            ("mosquitto_kill", cfg.mosquitto_kills),
            ("influx_outage", cfg.influx_outages),
            ("detector_kill", cfg.detector_kills),
        ):
            schedule += [(rng.randrange(n // 10, 8 * n // 10), kind) for _ in range(count)]
        schedule.sort()
        progress = {"i": 0}
        night_min = lambda: (items[min(progress["i"], n - 1)][2].start_ns / 1e9 - start_unix) / 60  # noqa: E731
        fault_threads: list[threading.Thread] = []
        influx_lock = threading.Lock()
        process_lock = threading.Lock()  # one detector / broker restart at a time, never two detectors at once

        def do_fault(kind: str) -> None:
            at = time.monotonic() - t0
            at_min = night_min()
            if kind in ("mosquitto_kill", "detector_kill"):
                process_lock.acquire()
            try:
                _fault(kind, at, at_min)
            finally:
                if kind in ("mosquitto_kill", "detector_kill"):
                    process_lock.release()

        def _fault(kind: str, at: float, at_min: float) -> None:
            if kind == "mosquitto_kill":
                seen = watcher.status_seen
                mosquitto.kill()
                time.sleep(rng.uniform(0.3, 1.5))
                down0 = time.monotonic()
                mosquitto.start()
                # recovered: the detector is back (a fresh online status)
                rec = _wait(lambda: watcher.status_seen > seen, 60)
                report.faults.append(FaultRecord(kind, at, at_min, round(down0 - t0 - at, 2), rec))
            elif kind == "detector_kill":
                seen = watcher.status_seen
                detector.kill()
                time.sleep(rng.uniform(0.3, 1.5))
                down0 = time.monotonic()
                detector.start()
                report.detector_restarts += 1
                rec = _wait(lambda: watcher.status_seen > seen, 60)
                report.faults.append(FaultRecord(kind, at, at_min, round(down0 - t0 - at, 2), rec))
            elif kind == "influx_outage":
                with influx_lock:
                    influxd.stop()
                    # down for cfg.influx_outage_fraction of the night's data time
                    target = progress["i"] + int(cfg.influx_outage_fraction * n)
                    _wait(lambda: progress["i"] >= min(target, n - 1) or progress["i"] >= n - 1, 600)
                    down0 = time.monotonic()
                    influxd.start()
                    rec = _wait(lambda: (detector.outbox_depth() or 0) < 50, 120)
                    report.faults.append(FaultRecord(kind, at, at_min, round(down0 - t0 - at, 2), rec))

        # ---- stream
        interval = 1.0 / cfg.batches_per_s
        next_fault = 0
        started = time.monotonic()
        if ble is not None and capture is not None and report.ble is not None:
            # one thread, kills in order: never two collector processes on one queue at once
            kill_rng = rng_ble(cfg)
            kill_frames = sorted(
                int(kill_rng.uniform(0.2, 0.75) * ble.spec["n_frames"]) for _ in range(cfg.collector_kills)
            )
            th = threading.Thread(
                target=lambda: [_kill_collector(ble, capture, report, k, t0, night_min) for k in kill_frames],
                daemon=True,
            )
            th.start()
            ble_threads.append(th)
        for i, (subject, side, batch) in enumerate(items):
            progress["i"] = i
            while next_fault < len(schedule) and schedule[next_fault][0] <= i:
                th = threading.Thread(target=do_fault, args=(schedule[next_fault][1],), daemon=True)
                th.start()
                fault_threads.append(th)
                next_fault += 1
            publishers[(subject, side)].submit([batch])
            report.batches_published += 1
            report.samples_published += batch.count
            delay = started + (i + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        progress["i"] = n - 1
        for th in fault_threads + ble_threads:
            th.join(600)
        if ble is not None and ble.wait(600) != 0:
            raise RuntimeError(f"the BLE collector did not finish cleanly: see {ble.log_file}")
        for subject, side, batch in held_back:  # hours late, by now
            publishers[(subject, side)].submit([batch])
            report.batches_published += 1
            report.samples_published += batch.count
        # every batch in the detector's journal (its acks emptied every queue), then the goodbyes
        if _wait(lambda: all(p.queue_depth == 0 for p in publishers.values()), 300, 0.2) is None:
            waiting = {f"{k[0]}/{k[1]}": p.queue_depth for k, p in publishers.items() if p.queue_depth}
            raise RuntimeError(f"batches never acknowledged by the detector: {waiting}")
        report.publisher_dropped = sum(p.dropped for p in publishers.values())
        for (_subject, side), pub in publishers.items():
            pub.stop(wire.SensorStatus(state="offline", side=side))

        # ---- settle: every night final, the outbox empty
        if _wait(lambda: set(finalised) <= watcher.finals, 120) is None:
            log.warning("not every night was finalised: %s", sorted(set(finalised) - watcher.finals))
        _wait(lambda: detector.outbox_depth() == 0, 120)
        time.sleep(0.5)
        # a fresh status with the final counts: restart-free way is to wait for the next periodic one
        seen = watcher.status_seen
        _wait(lambda: watcher.status_seen > seen, 15)
        report.received_by_detector = int(watcher.status.get("received", 0))
        report.bad_by_detector = dict(watcher.status.get("bad", {}))
        report.batches_dropped_late = report.bad_by_detector.get("late", 0)
        report.max_outbox_depth = watcher.max_outbox
        report.max_journal_depth = watcher.max_journal
        report.wall_s = round(time.monotonic() - t0, 1)

        # ---- compare with offline scoring of exactly what the detector should have accepted
        for subject in subjects:
            offline = score_arrays(
                batches_as_arrays(accepted[subject]["left"]), batches_as_arrays(accepted[subject]["right"])
            )
            compare_with_offline(report, influxd, subject, offline)
        report.summaries_equal = not report.summary_mismatches
        if ble is not None and capture is not None and report.ble is not None:
            _compare_ble(report.ble, ble, capture, influxd)
        report.rss_mb = watcher.rss
    finally:
        if ble is not None:
            ble.kill()
        if capture is not None:
            capture.close()
        for pub in publishers.values():
            with contextlib.suppress(Exception):
                pub.stop(flush_timeout_s=0.1)
        watcher.close()
        detector.stop()
        influxd.stop()
        mosquitto.stop()
        if not cfg.keep and cfg.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def rng_ble(cfg: SoakConfig) -> random.Random:
    """The BLE subject's own RNG, so adding it leaves the other subjects' fault schedule unchanged."""
    return random.Random(cfg.seed * 7919 + 9)


def _start_ble(
    cfg: SoakConfig, r: BleReport, settings: MqttSettings, tmp: Path, start_unix: float, stream_s: float
) -> tuple[BleCollectorProcess, BleCapture]:
    """Scripted link drops at random frames, a pace that spreads the night over the main stream."""
    spec: dict[str, Any] = {
        "profile": cfg.profile, "seed": cfg.seed * 100 + 99, "minutes": cfg.minutes, "start_unix": start_unix,
        "url": settings.url, "queue_dir": str(tmp / "ble-queue"),
    }  # fmt: skip
    night = _ble_night(spec)
    frames = _ble_frames(night)
    r.samples_measured = sum(len(leg.t) for leg in night.legs.values())
    n_frames = min(len(f) for f in frames.values())
    spec["pace_s"] = max(0.002, stream_s / n_frames)
    spec["n_frames"] = n_frames
    rng = rng_ble(cfg)
    drops: dict[str, dict[str, tuple[int, float]]] = {side: {} for side in BLE_ADDRESSES}
    for k in range(cfg.ble_drops):
        side = ("left", "right")[k % 2]
        drops[side][str(rng.randrange(n_frames // 10, 8 * n_frames // 10))] = (10, 0.2)  # ~14 s of data lost
    spec["drops"] = drops
    spec["start"] = {side: 0 for side in BLE_ADDRESSES}
    capture = BleCapture(settings)
    proc = BleCollectorProcess(spec, tmp / "ble-collector.log")
    proc.start(spec["start"])
    return proc, capture


def _kill_collector(
    ble: BleCollectorProcess, capture: BleCapture, report: SoakReport, frame: int, t0: float, night_min: Any
) -> None:
    """SIGKILL the collector once both sensors have sent ``frame`` frames; the sensors go on measuring (lost)
    until a new one starts on the same queue.

    A point in the BLE night, not in wall time: on a loaded machine the collector child took longer to start
    than the planned moment, was killed before it had published anything, and the samples lost in its
    downtime came before the first published one instead of leaving the hole the test looks for."""
    _wait(lambda: min(ble.last.values()) >= frame, 600, 0.005)
    assert report.ble is not None
    at_s, at_min = time.monotonic() - t0, night_min()
    ble.kill()
    down = random.Random(frame).uniform(0.3, 1.5)
    time.sleep(down)
    skipped = math.ceil(down / ble.spec["pace_s"])
    down0 = time.monotonic()
    seen = len(capture.batches)
    ble.start({side: last + 1 + skipped for side, last in ble.last.items()})
    report.ble.collector_kills += 1
    rec = _wait(lambda: len(capture.batches) > seen, 60)
    report.faults.append(FaultRecord("collector_kill", at_s, at_min, round(down0 - t0 - at_s, 2), rec))


def _published_gaps(batches: list[wire.SampleBatch]) -> list[tuple[float, float]]:
    """Holes longer than 1.5 sample periods between consecutive published batches of one leg:
    (data s after the leg's first sample, hole s)."""
    holes = []
    for a, b in itertools.pairwise(batches):
        hole = (b.start_ns - (a.start_ns + a.count * 1e9 / a.rate_hz)) / 1e9
        if hole > 1.5 / a.rate_hz:
            holes.append((round((b.start_ns - batches[0].start_ns) / 1e9, 1), round(hole, 2)))
    return holes


def _without_overlaps(batches: list[wire.SampleBatch], r: BleReport) -> list[wire.SampleBatch]:
    """The wire contract: a batch starting more than half a sample before the end of the one before it
    claims time already covered, and a receiver drops it whole. Counted, so the loss is visible."""
    kept: list[wire.SampleBatch] = []
    end: int | None = None
    for b in batches:
        half = int(5e8 / b.rate_hz)
        if end is not None and b.start_ns < end - half:
            r.overlapping_batches += 1
            r.overlapping_samples += b.count
            r.max_overlap_ms = max(r.max_overlap_ms, round((end - b.start_ns) / 1e6, 1))
            r.overlaps_at_s.append(round((b.start_ns - batches[0].start_ns) / 1e9, 1))
            continue
        kept.append(b)
        end = b.end_ns if end is None else max(end, b.end_ns)
    return kept


def compare_with_offline(report: Any, influxd: Influxd1, subject: str, offline: Any) -> None:
    """Add one subject's stored movements and night, against offline scoring, to ``report``'s counts (its
    ``movements_*`` and ``summary_mismatches``). Duplicated: an extra point within 5 s of an expected movement
    of the same side."""
    expected = sorted((round(e.onset * 1000), e.side, e.kind, e.plm) for e in offline.events)
    rows = _rows(influxd, f"SELECT duration_s, plm, side, kind FROM movement WHERE subject = '{subject}'")
    stored = sorted((r["time"], r["side"], r["kind"], r["plm"]) for r in rows)
    exp_set, got_set = set(expected), set(stored)
    report.movements_expected += len(expected)
    report.movements_stored += len(stored)
    report.movements_lost += len(exp_set - got_set)
    extra = got_set - exp_set
    report.movements_extra += len(extra)
    report.movements_duplicated += sum(
        1 for t, side, _k, _p in extra if any(abs(t - e[0]) < 5000 and side == e[1] for e in expected)
    )
    report.summary_mismatches += _night_mismatches(influxd, subject, offline)


def _night_mismatches(influxd: Influxd1, subject: str, offline: Any) -> list[str]:
    """How the subject's final night in InfluxDB differs from the offline summary (empty: equal)."""
    nights = [r for r in _rows(influxd, f"SELECT * FROM night WHERE subject = '{subject}'") if r.get("final")]
    if not nights:
        return [f"{subject}: no final night in InfluxDB"]
    night, out = nights[-1], []
    for key in COMPARED_INT:
        if night.get(key) != offline.fields.get(key):
            out.append(f"{subject}.{key}: {night.get(key)} != {offline.fields.get(key)}")
    for key in COMPARED_FLOAT:
        a, b = night.get(key), offline.fields.get(key)
        if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=1e-9)):
            out.append(f"{subject}.{key}: {a} != {b}")
    return out


def _compare_ble(r: BleReport, ble: BleCollectorProcess, capture: BleCapture, influxd: Influxd1) -> None:
    """Detector's stored night for the BLE subject vs offline scoring of exactly what the collector published."""
    per_side = capture.per_side()
    r.frames_sent = ble.frames_sent
    r.link_drops = ble.link_drops
    r.offline_statuses = capture.offline_statuses
    r.final_nights = capture.final_nights
    r.collector_runs = ble.runs
    r.samples_published = sum(b.count for bs in per_side.values() for b in bs)
    r.samples_lost_at_sensor = r.samples_measured - r.samples_published
    for side, bs in sorted(per_side.items()):
        holes = _published_gaps(bs)
        r.gaps_in_published += len(holes)
        r.gap_s_in_published = round(r.gap_s_in_published + sum(h for _at, h in holes), 1)
        r.gaps_at += [f"{side} {at:.0f} s: {h:.2f} s" for at, h in holes]
    if set(per_side) != {"left", "right"}:
        r.summary_mismatches.append(f"{BLE_SUBJECT}: published legs {sorted(per_side)}")
        return
    placeable = {side: _without_overlaps(bs, r) for side, bs in per_side.items()}
    offline = score_arrays(batches_as_arrays(placeable["left"]), batches_as_arrays(placeable["right"]))
    expected = sorted((round(e.onset * 1000), e.side, e.kind, e.plm) for e in offline.events)
    rows = _rows(influxd, f"SELECT duration_s, plm, side, kind FROM movement WHERE subject = '{BLE_SUBJECT}'")
    stored = sorted((x["time"], x["side"], x["kind"], x["plm"]) for x in rows)
    exp_set, got_set = set(expected), set(stored)
    r.movements_expected, r.movements_stored = len(expected), len(stored)
    r.movements_lost = len(exp_set - got_set)
    extra = got_set - exp_set
    r.movements_extra = len(extra)
    t0_ms = min(b.start_ns for bs in per_side.values() for b in bs) / 1e6
    r.movement_diffs = [
        f"{what} {side} {kind} at data s {(t - t0_ms) / 1000:.1f}"
        for what, group in (("lost", exp_set - got_set), ("extra", extra))
        for t, side, kind, _plm in sorted(group)
    ]
    r.movements_duplicated = sum(
        1 for t, side, _k, _p in extra if any(abs(t - e[0]) < 5000 and side == e[1] for e in expected)
    )
    r.summary_mismatches += _night_mismatches(influxd, BLE_SUBJECT, offline)


def format_report(r: SoakReport) -> str:
    rss = [m for _t, m in r.rss_mb]
    half = len(rss) // 2
    lines = [
        f"soak: {r.config['subjects']} subjects x {r.config['minutes']:g} min nights, seed {r.config['seed']}, "
        f"{r.wall_s:.0f} s wall",
        f"  samples produced / published         {r.samples_produced} / {r.samples_published}",
        f"  batches produced / published         {r.batches_produced} / {r.batches_published}"
        " (published incl. duplicates, late and clock-jumped)",
        f"  messages received by the detector    {r.received_by_detector} (incl. redeliveries after kills)",
        f"  refused by the detector              {r.bad_by_detector}",
        f"  movements expected / stored          {r.movements_expected} / {r.movements_stored}",
        f"  movements lost / extra / duplicated  {r.movements_lost} / {r.movements_extra} / {r.movements_duplicated}",
        f"  night summaries equal                {r.summaries_equal} {'; '.join(r.summary_mismatches[:4])}",
        f"  max outbox depth / journal depth     {r.max_outbox_depth} / {r.max_journal_depth}",
        f"  batches dropped by publisher queues  {r.publisher_dropped}",
    ]
    if rss:
        lines.append(
            f"  detector RSS MB                      start {rss[0]:.0f}, max {max(rss):.0f}, end {rss[-1]:.0f}"
            f" (1st-half max {max(rss[:half] or rss):.0f}, 2nd-half max {max(rss[half:]):.0f})"
        )
    for f in r.faults:
        rec = "not recovered" if f.recovery_s is None else f"recovered {f.recovery_s:.2f} s after restart"
        lines.append(
            f"  fault {f.kind:15} at {f.at_s:6.1f} s (night min {f.at_night_min:5.1f}), down {f.down_s:5.1f} s, {rec}"
        )
    if r.ble is not None:
        b = r.ble
        lines += [
            f"  BLE subject {BLE_SUBJECT}: {b.link_drops} link drops, {b.collector_kills} collector SIGKILLs,"
            f" {b.collector_runs} collector runs, {b.frames_sent} frames sent",
            f"    samples measured / published / lost at the sensor  {b.samples_measured} / {b.samples_published}"
            f" / {b.samples_lost_at_sensor} ({b.gaps_in_published} gaps, {b.gap_s_in_published:.1f} s)",
            f"    gaps (side, data s, length)           {'; '.join(b.gaps_at[:8])}",
            f"    published batches overlapping the one before (dropped whole by the detector)"
            f"  {b.overlapping_batches} ({b.overlapping_samples} samples, max {b.max_overlap_ms:.0f} ms,"
            f" at data s {b.overlaps_at_s[:8]})",
            f"    'offline' statuses from the collector / final nights  {b.offline_statuses} / {b.final_nights}"
            " (2 / 1 for one night ended by the final goodbyes)",
            f"    movements expected / stored           {b.movements_expected} / {b.movements_stored}",
            f"    movements lost / extra / duplicated   {b.movements_lost} / {b.movements_extra}"
            f" / {b.movements_duplicated}",
            *(f"    {d}" for d in b.movement_diffs[:6]),
            f"    night summary equal                   {not b.summary_mismatches} {'; '.join(b.summary_mismatches[:4])}",
        ]
    lines.append(f"  verdict: {'PASS' if r.ok else 'FAIL'} (0 lost, 0 duplicated, summaries equal)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fault-injection soak through the real local pipeline")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=120.0, help="night length in data minutes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=400.0, help="batches published per wall second")
    parser.add_argument("--mosquitto-kills", type=int, default=3)
    parser.add_argument("--influx-outages", type=int, default=2)
    parser.add_argument("--detector-kills", type=int, default=3)
    parser.add_argument(
        "--ble",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a subject from scripted Polar peripherals through a collector process",
    )
    parser.add_argument("--ble-drops", type=int, default=2)
    parser.add_argument("--collector-kills", type=int, default=2)
    parser.add_argument("--ble-child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.ble_child:
        return _ble_child(args.ble_child)
    cfg = SoakConfig(
        subjects=args.subjects, minutes=args.minutes, seed=args.seed, batches_per_s=args.rate,
        mosquitto_kills=args.mosquitto_kills, influx_outages=args.influx_outages, detector_kills=args.detector_kills,
        influx_outage_fraction=0.15, late=5, clock_jumps=4, keep=args.keep,
        ble=args.ble, ble_drops=args.ble_drops, collector_kills=args.collector_kills,
    )  # fmt: skip
    report = run_soak(cfg)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
