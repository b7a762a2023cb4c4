"""The sensor on the ankle: mounting, noise floor, calibration error, quantisation, clock and losses.

Three clocks matter (docs/simulator.md, "Time bases"):

* true wall time -- when a sample was really taken; the ground truth uses it;
* the device clock -- nominal ``i / rate`` from the start, but the crystal runs ``ppm`` fast or
  slow, so over 8 h it drifts up to ~1.4 s from wall time; Polar frames carry this clock;
* the collector's estimate -- wall time plus a little per-packet jitter; this is the CSV ``t`` and
  the MQTT batch time, because a collector maps device time to wall time before publishing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simulator.kinematics import leg_acceleration
from simulator.night import SIDES, NightPlan
from simulator.slip import apply_slips, draw_slips

# "Taken off" (issue 19): the sensor is unstrapped, handled and left on a table or the floor at any orientation;
# sometimes it is put back on. Handling is a few seconds of hand motion; on the table the sensor reads gravity
# and its own noise only, plus the slow drift of its zero-g offset as it cools from skin to room temperature
# (MEMS offset tempco of a few 0.1 mg/K, ~12 K, time constant minutes).
TAKEN_OFF_MIN_S = 20 * 60.0  # shortest time off the ankle the simulator draws
HANDLING_S = (4.0, 20.0)  # unstrapping/strapping and carrying the sensor
THERMAL_DRIFT_MG = 3.0  # SD per axis of the offset drift after removal
THERMAL_TAU_S = 600.0

NOISE_BLOCK = 1024  # samples per independently seeded noise block (rendering any window is reproducible)
RANGE_G = 8.0  # Polar Verity Sense ACC range


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3-D rotation (normalised Gaussian quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@dataclass
class SensorModel:
    """Everything about one leg's sensor tonight; drawn once per night from the seed."""

    side: str
    rate_hz: float
    start: float  # wall time of sample 0
    n_total: int  # samples the device takes between start and the end of the recording
    clock_ppm: float
    mount: np.ndarray  # 3x3 rotation, leg frame -> sensor frame
    noise_g: float
    bias_g: np.ndarray
    scale: np.ndarray
    jitter_s: float
    partner: bool
    seed: int
    gaps: list[tuple[float, float]] = field(default_factory=list)
    drops: list[tuple[float, float]] = field(default_factory=list)
    # taken off the ankle: {"start", "end", "put_back", "handling_s": (off, on), "up" (sensor frame unit
    # vector while lying on the table), "drift_g" (3,), "shake": list of (amp g, hz, phase, dir (3,))}
    off: list[dict] = field(default_factory=list)
    # strap slips (simulator.slip): {"start", "end", "rotvec" (leg frame, rad), "radius_m", "pod_deg"}
    slips: list[dict] = field(default_factory=list)

    @property
    def packet_len(self) -> int:
        return max(1, round(self.rate_hz))

    def wall_times(self, i0: int, i1: int) -> np.ndarray:
        """True wall time of samples i0..i1-1: the crystal is ``ppm`` fast, so it samples that much faster."""
        return self.start + np.arange(i0, i1, dtype=np.float64) / (self.rate_hz * (1 + self.clock_ppm * 1e-6))

    def device_ns(self, i0: int, i1: int) -> np.ndarray:
        """Device clock (Unix ns, set to wall time at sample 0) of samples i0..i1-1: nominal spacing."""
        base = round(self.start * 1e9)
        return base + np.round(np.arange(i0, i1, dtype=np.float64) * (1e9 / self.rate_hz)).astype(np.int64)

    def kept(self, t_wall: np.ndarray) -> np.ndarray:
        keep = np.ones(len(t_wall), dtype=bool)
        for a, b in self.gaps + self.drops:
            i0, i1 = np.searchsorted(t_wall, (a, b))
            keep[i0:i1] = False
        return keep

    def render(self, plan: NightPlan, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Samples i0..i1-1 -> (collector time s, xyz float32 g quantised to 1 mg, device ns, kept mask)."""
        t_wall = self.wall_times(i0, i1)
        leg = leg_acceleration(plan, self.side, t_wall, partner=self.partner)
        apply_slips(self.slips, t_wall, leg)
        for ev in self.off:
            _take_off(self.mount, ev, t_wall, leg)
        xyz = leg @ (self.mount * self.scale[:, None]).T.astype(np.float32)
        xyz += self.bias_g.astype(np.float32)
        noise, jitter = self._noise(i0, i1)
        xyz += noise
        xyz *= np.float32(1000.0)
        np.clip(xyz, -RANGE_G * 1000, RANGE_G * 1000, out=xyz)
        np.rint(xyz, out=xyz)
        xyz /= np.float32(1000.0)
        t_wall += jitter
        return t_wall, xyz, self.device_ns(i0, i1), self.kept(t_wall - jitter)

    def _noise(self, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
        """White noise and per-packet timestamp jitter, from per-block seeds so any window is reproducible."""
        b0, b1 = i0 // NOISE_BLOCK, (i1 - 1) // NOISE_BLOCK + 1
        pk = self.packet_len
        bound = 0.2 / self.rate_hz  # adjacent packets never swap order
        noise = np.empty(((b1 - b0) * NOISE_BLOCK, 3), dtype=np.float32)
        jitter = np.empty((b1 - b0) * NOISE_BLOCK)
        for b in range(b0, b1):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, SIDES.index(self.side), b]))
            k = (b - b0) * NOISE_BLOCK
            noise[k : k + NOISE_BLOCK] = rng.standard_normal((NOISE_BLOCK, 3), dtype=np.float32)
            idx = np.arange(b * NOISE_BLOCK, (b + 1) * NOISE_BLOCK) // pk
            per_packet = np.clip(rng.normal(0, self.jitter_s, idx[-1] - idx[0] + 1), -bound, bound)
            jitter[k : k + NOISE_BLOCK] = per_packet[idx - idx[0]]
        off = i0 - b0 * NOISE_BLOCK
        noise = noise[off : off + i1 - i0]
        noise *= np.float32(self.noise_g)
        return noise, jitter[off : off + i1 - i0]


def _take_off(mount: np.ndarray, ev: dict, t: np.ndarray, leg: np.ndarray) -> None:
    """Replace the leg's acceleration (leg frame, in place) by the sensor's while it is off the ankle."""
    s, e = ev["start"], ev["end"]
    i0, i1 = np.searchsorted(t, (s, e))
    if i1 <= i0:
        return
    tt = t[i0:i1]
    h_off, h_on = ev["handling_s"]
    up_leg = (mount.T @ np.asarray(ev["up"])).astype(np.float32)  # the table's up, in the leg frame
    w = np.clip((tt - s) / h_off, 0, 1)
    if ev["put_back"]:
        w = np.minimum(w, np.clip((e - tt) / h_on, 0, 1))
    w = (w * w * w * (10 - 15 * w + 6 * w * w)).astype(np.float32)[:, None]
    vec = (1 - w) * leg[i0:i1] + w * up_leg
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-6)
    handling = (w > 0) & (w < 1)
    env = np.sin(np.pi * w[:, 0]) * handling[:, 0]
    for amp, hz, ph, d in ev["shake"]:
        vec += np.outer(amp * env * np.sin(2 * math.pi * hz * (tt - s) + ph), d).astype(np.float32)
    on_table = tt - (s + h_off)
    drift = 1 - np.exp(-np.clip(on_table, 0, None) / THERMAL_TAU_S)
    vec += np.outer(drift * w[:, 0], mount.T @ np.asarray(ev["drift_g"])).astype(np.float32)
    leg[i0:i1] = vec


def draw_taken_off(rng: np.random.Generator, plan: NightPlan) -> dict:
    """One removal during the night: when, for how long, put back or not, and how it lies on the table."""
    lo, hi = plan.lights_off + 0.1 * (plan.lights_on - plan.lights_off), plan.lights_on - TAKEN_OFF_MIN_S - 60
    start = float(rng.uniform(lo, max(lo, hi)))
    put_back = bool(rng.random() < 0.5)
    end = float(min(plan.end, start + rng.uniform(TAKEN_OFF_MIN_S, 3 * 3600))) if put_back else float(plan.end)
    if put_back and end >= plan.lights_on - 60:
        put_back, end = False, float(plan.end)
    up = rng.normal(size=3)  # any orientation: a table or the floor, face up, down or on an edge
    if rng.random() < 0.5:  # often flat on one face
        up = np.zeros(3)
        up[rng.integers(3)] = rng.choice([-1.0, 1.0])
    shake = [
        (float(rng.uniform(0.05, 0.4)), float(rng.uniform(1, 6)), float(rng.uniform(0, 2 * math.pi)), _unit(rng))
        for _ in range(3)
    ]
    return {
        "start": start,
        "end": end,
        "put_back": put_back,
        "handling_s": (float(rng.uniform(*HANDLING_S)), float(rng.uniform(*HANDLING_S))),
        "up": (up / np.linalg.norm(up)).tolist(),
        "drift_g": (rng.normal(0, THERMAL_DRIFT_MG, 3) / 1000.0).tolist(),
        "shake": shake,
    }


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def make_sensors(
    plan: NightPlan,
    rate_hz: float,
    legs: tuple[str, ...],
    *,
    seed: int,
    orientation: str = "random",
    noise_mg: float | None = None,
    drift: bool = True,
    jitter_ms: float = 2.0,
    drops: bool = True,
    gap: bool | None = None,
    partner: bool | None = True,
    calibration: bool = True,
    taken_off: bool | None = False,
    strap_slip: bool | None = False,
) -> dict[str, SensorModel]:
    """Draw tonight's sensors. ``gap=None`` gives a sensor-off gap on 25 % of nights; True forces one.
    ``taken_off``: True = a sensor is taken off the ankle once tonight (both legs' sensors on 60 % of two-leg
    nights), None = on 20 % of nights, False = never (default). ``strap_slip``: True = each sensor slips on the
    ankle 0-4 times tonight (simulator.slip), None = on 20 % of nights, False = never (default)."""
    slip_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x534C4950]))  # own stream
    want_slip = (slip_rng.random() < 0.2) if strap_slip is None else bool(strap_slip)
    slips = {side: draw_slips(slip_rng, plan, side) if want_slip else [] for side in SIDES}
    off_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4F4646]))  # own stream: other draws keep
    want_off = (off_rng.random() < 0.2) if taken_off is None else bool(taken_off)
    off_legs: tuple[str, ...] = ()
    off_events: dict[str, dict] = {}
    if want_off:
        off_legs = legs if (len(legs) == 2 and off_rng.random() < 0.6) else (str(off_rng.choice(legs)),)
        first = draw_taken_off(off_rng, plan)
        for side in off_legs:  # both legs: taken off within a minute of each other, put back together
            ev = draw_taken_off(off_rng, plan)
            shift = float(off_rng.uniform(0, 60)) if side != off_legs[0] else 0.0
            ev.update(start=first["start"] + shift, end=first["end"], put_back=first["put_back"])
            off_events[side] = ev
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x53454E]))
    start = plan.start + rng.uniform(0, 1 / rate_hz)
    in_bed = plan.lights_on - plan.lights_off
    want_gap = rng.random() < 0.25 if gap is None else bool(gap)
    gap_legs: tuple[str, ...] = ()
    gap_span: tuple[float, float] | None = None
    if want_gap:
        dur = min(rng.uniform(120, 900), 0.2 * in_bed)
        s = rng.uniform(plan.lights_off + 0.05 * in_bed, plan.lights_on - dur - 0.05 * in_bed)
        gap_span = (float(s), float(s + dur))
        gap_legs = legs if (len(legs) == 2 and rng.random() < 0.3) else (str(rng.choice(legs)),)
    with_partner = (rng.random() < 0.6) if partner is None else bool(partner)
    out = {}
    for side in SIDES:
        ppm = rng.uniform(-50, 50) if drift else 0.0
        n_total = int((plan.end - start) * rate_hz * (1 + ppm * 1e-6))
        mount = random_rotation(rng) if orientation == "random" else np.eye(3)
        model = SensorModel(
            side=side,
            rate_hz=float(rate_hz),
            start=float(start),
            n_total=n_total,
            clock_ppm=float(ppm),
            mount=mount,
            noise_g=(rng.uniform(2.0, 4.5) if noise_mg is None else float(noise_mg)) / 1000.0,
            bias_g=rng.normal(0, 0.015, 3) if calibration else np.zeros(3),
            scale=1 + rng.normal(0, 0.01, 3) if calibration else np.ones(3),
            jitter_s=jitter_ms / 1000.0,
            partner=with_partner,
            seed=int(rng.integers(2**62)),
        )
        if side in off_events:
            model.off.append(off_events[side])
        model.slips = slips[side]
        if gap_span and side in gap_legs:
            model.gaps.append(gap_span)
        if drops:
            hours = (plan.end - plan.start) / 3600
            for t in np.sort(rng.uniform(plan.start, plan.end, size=rng.poisson(4.0 * hours))):
                packets = int(rng.geometric(0.5))
                model.drops.append((float(t), float(t + packets * rng.uniform(1.0, 1.4))))
        if side in legs:
            out[side] = model
    return out


def wall_to_sample(model: SensorModel, t: float) -> int:
    """Index of the first sample at or after wall time ``t``."""
    return max(0, math.ceil((t - model.start) * model.rate_hz * (1 + model.clock_ppm * 1e-6)))
