"""Shared helpers for the live-pipeline tests: simulated nights as wire batches, a running detector."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from plm import wire
from plm.config import InfluxSettings, MqttSettings, Settings


def night_batches(night, batch_s: float = 1.0) -> dict[str, list[wire.SampleBatch]]:
    """Cut each leg of a simulated night into wire batches the way a collector does: contiguous runs
    of the device's sample counter, at most ``batch_s`` long, a new batch after every loss."""
    out: dict[str, list[wire.SampleBatch]] = {}
    for side, leg in night.legs.items():
        per_batch = max(1, round(leg.rate_hz * batch_s))
        breaks = np.flatnonzero(np.diff(leg.index) != 1) + 1
        batches, seq = [], 0
        for run in np.split(np.arange(len(leg.t)), breaks):
            for start in range(0, len(run), per_batch):
                idx = run[start : start + per_batch]
                start_ns = round(float(leg.t[idx[0]]) * 1e9)
                batches.append(wire.make_batch(start_ns, leg.rate_hz, leg.xyz[idx], seq % 2**32, now_ns=2**62))
                seq += 1
        out[side] = batches
    return out


def batches_as_arrays(batches: list[wire.SampleBatch]) -> tuple[np.ndarray, np.ndarray]:
    """What the detector sees of a leg: decoded batch timestamps and samples, concatenated."""
    decoded = [wire.decode(wire.encode_binary(b), now_ns=2**62) for b in batches]
    t = np.concatenate([b.timestamps_s() for b in decoded])
    xyz = np.concatenate([b.xyz for b in decoded])
    return t, xyz


def interleave(per_side: dict[str, list[wire.SampleBatch]]) -> list[tuple[str, wire.SampleBatch]]:
    """Both legs' batches in start-time order, as a collector streaming both would send them."""
    merged = [(side, b) for side, bs in per_side.items() for b in bs]
    merged.sort(key=lambda sb: sb[1].start_ns)
    return merged


def settings_for(mosquitto, influxd, state_dir: Path, **detector) -> Settings:
    return Settings(
        mqtt=MqttSettings(url=mosquitto.url, username="plm", password="plm-test-password"),
        influx=InfluxSettings(url=influxd.url, api=1, bucket=influxd.database),
        detector={"state_dir": state_dir, **detector},
    )


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
