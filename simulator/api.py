"""``simulate_night``: the one call tests, the demo, benchmarks and new users make."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulator.csvio import write_leg_csv
from simulator.night import SIDES, partner_turns_over_lms, plan_night
from simulator.profiles import get_profile
from simulator.sensor import NOISE_BLOCK, SensorModel, make_sensors
from simulator.truth import Truth

log = logging.getLogger(__name__)

DEFAULT_DURATION_H = 8.0
MIN_RATE_HZ, MAX_RATE_HZ = 10.0, 500.0
_EPOCH_2024_03_01_2230 = 1_709_332_200.0
_OPTIONS = {
    "age": "subject age in years (default: the profile's)",
    "plms_per_h": "force tonight's PLMS index target instead of drawing it from the profile band",
    "orientation": "'random' mounting per night (default) or 'fixed' (leg frame = sensor frame)",
    "noise_mg": "white noise floor in mg RMS (default: 2-4.5 drawn per sensor)",
    "drift": "clock drift of +-50 ppm (default True)",
    "jitter_ms": "per-packet timestamp jitter SD in ms (default 2; bounded so samples stay ordered)",
    "drops": "bursts of dropped packets, ~4 an hour (default True)",
    "gap": "sensor off for 2-15 min: None = on 25 % of nights (default), True = always, False = never",
    "partner": "bed-partner vibration: True (default), False, or None = on 60 % of nights",
    "calibration": "per-axis bias (~15 mg) and scale (~1 %) errors (default True)",
    "bounce": "bed-partner turns overlapping 25 % of the LMs on purpose (default False; needs partner)",
    "strap_slip": "the sensor turns on the ankle 0-4 times a night (leg still): False (default), True, None = 20 %",
    "taken_off": "sensor taken off the ankle onto a table/floor, sometimes put back: False (default), True, None = 20 %",
}


@dataclass
class LegRecording:
    """One sensor's night as the collector would publish it.

    ``t``: the collector's wall-time estimate of each sample (Unix s; true time + a few ms jitter);
    ``xyz``: float32 (n, 3) in g, quantised to 1 mg; ``device_ns``: the sensor's own drifting clock
    (Unix ns) -- what Polar frames carry; ``index``: the device's sample counter (jumps at losses).
    """

    side: str
    rate_hz: float
    t: np.ndarray
    xyz: np.ndarray
    device_ns: np.ndarray
    index: np.ndarray
    sensor: SensorModel

    def __len__(self) -> int:
        return len(self.t)

    @property
    def milli_g(self) -> np.ndarray:
        """Samples as the int16 milli-g a device sends."""
        return np.rint(self.xyz.astype(np.float64) * 1000.0).astype(np.int16)


@dataclass
class SimulatedNight:
    legs: dict[str, LegRecording]
    truth: Truth

    def write(self, out_dir: str | Path, gzip: bool = False) -> dict[str, Path]:
        """Write ``<side>.csv`` (``.csv.gz`` when asked) per leg and ``truth.json``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        suffix = ".csv.gz" if gzip else ".csv"
        # numpy releases the GIL in the heavy steps: one thread per leg halves the wall time on 2 cores
        with ThreadPoolExecutor(max_workers=len(self.legs) or 1) as pool:
            futures = {
                side: pool.submit(write_leg_csv, out / f"{side}{suffix}", leg.t, leg.xyz, gzip=gzip)
                for side, leg in self.legs.items()
            }
            paths = {"truth": self.truth.write(out / "truth.json")}
            paths.update({side: f.result() for side, f in futures.items()})
        return paths


def parse_legs(legs: str) -> tuple[str, ...]:
    if legs == "both":
        return SIDES
    if legs in SIDES:
        return (legs,)
    raise ValueError(f"legs must be 'both', 'left' or 'right', got {legs!r}")


def prepare_night(
    profile: str = "rls-moderate",
    seed: int = 0,
    rate_hz: float = 52.0,
    legs: str = "both",
    start_unix_s: float | None = None,
    duration_h: float | None = None,
    **options: Any,
) -> Truth:
    """Plan the night and draw the sensors, without rendering samples (cheap: the streamer's entry point)."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"unknown simulator option(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(rate_hz, int | float) or not MIN_RATE_HZ <= float(rate_hz) <= MAX_RATE_HZ:
        raise ValueError(f"rate_hz must be {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz, got {rate_hz!r}")
    duration_h = DEFAULT_DURATION_H if duration_h is None else float(duration_h)
    if not 0.25 <= duration_h <= 16:
        raise ValueError(f"duration_h must be 0.25-16 h, got {duration_h!r}")
    if options.get("orientation", "random") not in ("random", "fixed"):
        raise ValueError(f"orientation must be 'random' or 'fixed', got {options['orientation']!r}")
    sides = parse_legs(legs)
    prof = get_profile(profile, options.get("age"))
    start = _EPOCH_2024_03_01_2230 - 86400.0 * (int(seed) % 365) if start_unix_s is None else float(start_unix_s)
    plan = plan_night(prof, int(seed), start, duration_h * 3600.0, options.get("plms_per_h"))
    if options.get("bounce"):
        plan.partner = sorted(plan.partner + partner_turns_over_lms(plan, int(seed)), key=lambda p: p["start"])
    sensor_opts = {k: v for k, v in options.items() if k not in ("age", "plms_per_h", "bounce")}
    sensors = make_sensors(plan, float(rate_hz), sides, seed=int(seed), **sensor_opts)
    return Truth(plan, sensors, float(rate_hz), {k: options[k] for k in sorted(options)})


RENDER_CHUNK = 64 * NOISE_BLOCK  # ~20 min at 52 Hz: temporaries stay small and are reused, not page-faulted


def render_leg(truth: Truth, side: str) -> LegRecording:
    """Render one leg in chunks into preallocated arrays (same samples as one big render, ~2x faster)."""
    sensor = truth.sensors[side]
    n = sensor.n_total
    t = np.empty(n)
    xyz = np.empty((n, 3), dtype=np.float32)
    dev = np.empty(n, dtype=np.int64)
    keep = np.empty(n, dtype=bool)
    for i0 in range(0, n, RENDER_CHUNK):
        i1 = min(n, i0 + RENDER_CHUNK)
        t[i0:i1], xyz[i0:i1], dev[i0:i1], keep[i0:i1] = sensor.render(truth.plan, i0, i1)
    index = np.flatnonzero(keep)
    if len(index) == n:
        return LegRecording(side, sensor.rate_hz, t, xyz, dev, index, sensor)
    return LegRecording(side, sensor.rate_hz, t[index], xyz[index], dev[index], index, sensor)


def simulate_night(
    profile: str = "rls-moderate",
    seed: int = 0,
    rate_hz: float = 52.0,
    legs: str = "both",
    start_unix_s: float | None = None,
    duration_h: float | None = None,
    **options: Any,
) -> SimulatedNight:
    """A realistic night of ankle acceleration with ground truth; deterministic per seed.

    ``options`` (all optional): see ``simulator.api._OPTIONS`` -- age, plms_per_h, orientation,
    noise_mg, drift, jitter_ms, drops, gap, partner, calibration.
    """
    truth = prepare_night(profile, seed, rate_hz, legs, start_unix_s, duration_h, **options)
    with ThreadPoolExecutor(max_workers=len(truth.sensors)) as pool:
        futures = {side: pool.submit(render_leg, truth, side) for side in truth.sensors}
        recordings = {side: f.result() for side, f in futures.items()}
    return SimulatedNight(recordings, truth)
