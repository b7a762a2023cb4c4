"""Collector load: N scripted Polar sensors at 52 Hz, real-time pacing, real mosquitto.

Target: one collector process handles >= 8 sensors at 52 Hz using < 5 % of one core.

Measures process CPU time over a real-time window twice in the same run:
  baseline  -- the scripted peripherals stream to a BleakClient with a no-op notification handler
  collector -- the full collector (decode, timing, batching, SQLite queue, MQTT publish)
and prints the collector's CPU as % of one core, its ratio to the 5 % target, and the baseline.
The peripherals' own cost (pre-encoded frames, asyncio timers) is in both numbers; the printed
"net" figure subtracts it.

    python bench/collector_load.py [--sensors 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

from bleak import BleakClient

from collector import polar_pmd as pmd
from collector.service import Collector
from collector.testing import ScriptedPolar, ScriptedRadio, ankle_signal, polar_frames
from plm.config import Settings
from plm.ops.localservices import Mosquitto

RATE, PER_FRAME = 52.0, 71
PACE_S = PER_FRAME / RATE  # a real Verity sends a frame every ~1.37 s


def _peripherals(n: int, seconds: float) -> list[ScriptedPolar]:
    frames_needed = int(seconds / PACE_S) + 5
    out = []
    for i in range(n):
        signal = ankle_signal(frames_needed * PER_FRAME, RATE, seed=i)
        wall0 = time.time_ns()
        frames = polar_frames(signal, wall0_ns=wall0, drift_ppm=20.0)
        p = ScriptedPolar(address=f"A0:9E:1A:00:00:{i:02X}", name=f"Polar Sense {i:08X}", frames=frames, pace_s=PACE_S)
        out.append(p)
    return out


async def _baseline(n: int, seconds: float) -> float:
    radio = ScriptedRadio().add(*_peripherals(n, seconds))
    clients = []
    for p in radio.peripherals.values():
        c = BleakClient(p.address, backend=radio.client_backend())
        await c.connect()
        await c.start_notify(pmd.PMD_CONTROL, lambda _c, _d: None)
        await c.start_notify(pmd.PMD_DATA, lambda _c, _d: None)
        await c.write_gatt_char(pmd.PMD_CONTROL, pmd.start_acc_command(), response=True)
        clients.append(c)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    for c in clients:
        await c.disconnect()
    return cpu / wall


async def _collector(n: int, seconds: float, broker: Mosquitto, queue_dir: Path) -> tuple[float, int]:
    radio = ScriptedRadio().add(*_peripherals(n, seconds + 10))
    sensors = [
        {"id": f"s{i}", "side": "left", "driver": "polar_pmd", "address": p.address}
        for i, p in enumerate(radio.peripherals.values())
    ]
    settings = Settings(
        mqtt={"url": broker.url, "username": "plm", "password": "plm-test-password"},
        subjects=[{"id": f"bench{i}", "sensors": [s]} for i, s in enumerate(sensors)],
        collector={"queue_dir": str(queue_dir), "queue_max_batches": 100_000},
    )
    collector = Collector(
        settings, scanner_backend=radio.scanner_backend(), client_backend=radio.client_backend(), status_interval_s=60
    )
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    await asyncio.sleep(3.0)  # connect and warm up
    published0 = sum(s.publisher.published for s in collector.sensors)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    published = sum(s.publisher.published for s in collector.sensors) - published0
    stop.set()
    await task
    return cpu / wall, published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(workdir=Path(tmp) / "mosquitto")
        broker.start()
        try:
            base = asyncio.run(_baseline(args.sensors, args.seconds))
            load, published = asyncio.run(_collector(args.sensors, args.seconds, broker, Path(tmp) / "queue"))
        finally:
            broker.stop()
    expected = args.sensors * args.seconds
    target = 0.05
    print(f"sensors={args.sensors} rate=52 Hz window={args.seconds:.0f} s")
    print(f"baseline (scripted radio only): {base * 100:.2f} % of one core")
    print(f"collector (whole process):      {load * 100:.2f} % of one core")
    print(f"collector net of baseline:      {(load - base) * 100:.2f} % of one core")
    print(f"ratio to the 5 % target:        {load / target:.2f} (whole process), {(load - base) / target:.2f} (net)")
    print(f"batches published: {published} (~{expected:.0f} expected)")
    print("PASS" if load < target else "FAIL")


if __name__ == "__main__":
    main()
