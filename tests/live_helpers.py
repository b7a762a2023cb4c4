"""Shared helpers for the live-pipeline tests: simulated nights as wire batches, a running detector."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from plm import wire
from plm.config import InfluxSettings, MqttSettings, Settings
from simulator import batches as simulator_batches

FAR_FUTURE_NS = 2**62  # simulated nights may lie after the machine's clock


def night_batches(night, batch_s: float = 1.0) -> dict[str, list[wire.SampleBatch]]:
    """Each leg of a simulated night as the wire batches a collector would publish."""
    return simulator_batches.night_batches(night, batch_s, now_ns=FAR_FUTURE_NS)


def batches_as_arrays(batches: list[wire.SampleBatch]) -> tuple[np.ndarray, np.ndarray]:
    """What the detector sees of a leg: decoded batch timestamps and samples, concatenated."""
    return simulator_batches.batches_as_arrays(batches, now_ns=FAR_FUTURE_NS)


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
