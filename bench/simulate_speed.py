"""Simulator speed: an 8-hour two-leg 52 Hz night with truth, against a baseline measured in this run.

    python bench/simulate_speed.py                 # night generation + CSV writing (target <= 2 s)
    python bench/simulate_speed.py --stream 500    # also: 500 subjects (1,000 sensors) live for 30 s

The baseline is one ``numpy.random.Generator.standard_normal`` float32 draw of every sample of both
legs (the least any simulator that adds noise must do), so the ratio is comparable across machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator import simulate_night

TARGET_S = 2.0


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def night_bench(repeat: int, profile: str) -> None:
    n = 8 * 3600 * 52
    rng = np.random.default_rng(0)
    baseline = _best(lambda: rng.standard_normal((2, n, 3), dtype=np.float32), repeat)
    generate = _best(lambda: simulate_night(profile, seed=7), repeat)
    night = simulate_night(profile, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        write = _best(lambda: night.write(tmp), repeat)
        total = _best(lambda: simulate_night(profile, seed=7).write(tmp), repeat)
    samples = sum(len(leg) for leg in night.legs.values())
    print(f"8 h two-leg 52 Hz night ({profile}, {samples:,} samples), best of {repeat}:")
    print(f"  baseline (one normal draw of the same size) {baseline:6.3f} s")
    print(f"  generate (plan + render + truth)           {generate:6.3f} s  = {generate / baseline:5.1f} x baseline")
    print(f"  write CSV x2 + truth.json                  {write:6.3f} s  = {write / baseline:5.1f} x baseline")
    print(f"  total (what `plm simulate night` does)     {total:6.3f} s  = {total / baseline:5.1f} x baseline")
    print(f"  target <= {TARGET_S:.1f} s: {'met' if total <= TARGET_S else 'MISSED'}")


def stream_bench(subjects: int, seconds: float) -> None:
    from plm.config import MqttSettings
    from plm.mqtt import connect, make_client
    from plm.ops.localservices import Mosquitto
    from plm.wire import SAMPLES_WILDCARD
    from simulator.stream import NightStreamer, StreamConfig

    with tempfile.TemporaryDirectory() as tmp, Mosquitto(workdir=Path(tmp)) as broker:
        settings = MqttSettings(url=broker.url, username="plm", password="plm-test-password")
        received = [0]
        sub = make_client(settings, "bench-sub", on_connect=lambda c: c.subscribe(SAMPLES_WILDCARD, 0))
        sub.on_message = lambda *_: received.__setitem__(0, received[0] + 1)
        connect(sub, settings)
        t0 = time.perf_counter()
        streamer = NightStreamer(settings, StreamConfig(subjects=subjects, speed=1, max_clients=16)).start()
        streamer.wait_ready(600)
        setup = time.perf_counter() - t0
        threading.Event().wait(seconds)
        stats = streamer.stop()
        time.sleep(1)
        sub.disconnect()
        sub.loop_stop()
    rate = stats.batches / stats.elapsed_s
    print(f"stream: {stats.sensors} sensors at 52 Hz, real time, {stats.elapsed_s:.1f} s (setup {setup:.1f} s)")
    print(f"  {rate:,.0f} batches/s published (need {stats.sensors:,}/s), {received[0]:,} received, "
          f"max lag {stats.max_lag_s:.2f} s  -> {'sustained' if stats.max_lag_s < 2 else 'FELL BEHIND'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", default="rls-severe")
    parser.add_argument("--stream", type=int, default=0, metavar="SUBJECTS", help="also run a live load test")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    night_bench(args.repeat, args.profile)
    if args.stream:
        stream_bench(args.stream, args.seconds)


if __name__ == "__main__":
    main()
