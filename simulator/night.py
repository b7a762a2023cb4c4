"""The night plan: what the body does, second by second, before any sensor sees it.

Pure and seeded: one :class:`numpy.random.Generator` drives everything, so a seed is a night. The
plan is small (a few thousand events), so it is built up front; samples are rendered from it later,
in any window (see :mod:`simulator.kinematics`), which lets the streamer serve a thousand sensors
without holding a thousand nights in memory.

Time is true wall time in Unix seconds throughout; the sensor's own clock only appears in
:mod:`simulator.sensor`. Sources for every number are in docs/simulator.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plm.rules import WASM2016, Gap, LegMovement, score_events
from simulator.profiles import Profile

SIDES = ("left", "right")
EPOCH_S = 30.0
STAGES = ("wake", "n1", "n2", "n3", "rem")
OUT = "out"  # out of bed (before lights-off, after lights-on, or up during the night)
LM_KINDS = ("lm", "long", "twitch")  # rendered with leg-movement kinematics (dorsiflexion)
BODY_KINDS = ("posture", "walking")  # body movements, rendered as posture transitions / steps
# What a leg-EMG scorer would call a leg movement: turning over in bed moves (and activates) the legs too,
# so a posture change is scored with its real duration (mostly a bilateral LM or a long movement).
# Walking happens out of bed, which the truth treats as a gap.
SCORED_KINDS = (*LM_KINDS, "posture")

# relative PLM density per stage (light NREM most, REM rarest: Pollmacher & Schulz 1993, Ferri 2016)
_PLM_STAGE_WEIGHT = {"n1": 1.0, "n2": 1.0, "n3": 0.55, "rem": 0.12}
_RUN_CONTINUE = {"n1": 1.0, "n2": 1.0, "n3": 0.97, "rem": 0.80, "wake": 0.92}
_IMI_STAGE_FACTOR = {"n1": 1.0, "n2": 1.0, "n3": 1.1, "rem": 1.3, "wake": 0.95}
# PLM duration gamma (mean, sd) by stage: ~3 s (SD ~0.65-0.9) in NREM, shortest in REM
_DURATION = {"n1": (3.0, 0.9), "n2": (3.0, 0.9), "n3": (2.7, 0.8), "rem": (1.9, 0.6), "wake": (3.2, 1.2)}
_TURN_STAGE_WEIGHT = {"wake": 2.0, "n1": 1.3, "n2": 1.0, "n3": 0.3, "rem": 0.25}
_ISOLATED_STAGE_WEIGHT = {"wake": 1.5, "n1": 1.2, "n2": 1.0, "n3": 0.5, "rem": 0.3}
_TWITCH_STAGE_WEIGHT = {"wake": 0.7, "n1": 1.6, "n2": 0.8, "n3": 0.3, "rem": 2.0}
P_MONOLATERAL = 0.42  # LMs with no activity on the other leg
P_ONE_MATCH = 0.55  # LMs with exactly one matching LM on the other leg (rest: two)
P_SHORT_IMI = 0.06  # a periodic LM followed 2-4 s later by another (the second IMI peak)

_POSTURE_ROLL = {"supine": 0.0, "left": 90.0, "right": -90.0, "prone": 180.0}
_POSTURE_P = {"supine": 0.45, "left": 0.25, "right": 0.25, "prone": 0.05}


@dataclass(slots=True)
class Movement:
    """One true movement of one leg. ``params`` drive the renderer; the rest is ground truth."""

    onset: float
    offset: float
    side: str
    kind: str  # lm | long | twitch | posture | walking
    role: str  # periodic | short_imi | isolated | restless | twitch | turn | get_up | lie_down | sit | stand | walk
    stage: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.offset - self.onset

    def to_dict(self) -> dict[str, Any]:
        out = {
            "onset": round(self.onset, 3),
            "offset": round(self.offset, 3),
            "duration": round(self.offset - self.onset, 3),
            "side": self.side,
            "kind": self.kind,
            "role": self.role,
            "stage": self.stage,
        }
        if "rot_deg" in self.params:
            out["rotation_deg"] = round(self.params["rot_deg"], 2)
            out["peak_dynamic_g"] = round(self.params["peak_dyn_g"], 4)
        return out


@dataclass(slots=True)
class Activity:
    """A span of one leg's base posture: ``still`` (roll/pitch), ``transition`` (from -> to) or ``walk``."""

    start: float
    end: float
    kind: str
    params: dict[str, Any]


@dataclass
class NightPlan:
    profile: Profile
    seed: int
    start: float
    end: float
    lights_off: float
    lights_on: float
    sleep_onset: float | None
    epochs: np.ndarray  # stage index per 30-s epoch from lights_off (-1 = out of bed)
    stages: list[tuple[float, float, str]]
    movements: list[Movement]
    activities: dict[str, list[Activity]]
    out_of_bed: list[tuple[float, float]]
    partner: list[dict[str, Any]]
    plms_target: float

    def stage_at(self, t: float) -> str:
        if t < self.lights_off or t >= self.lights_on:
            return OUT
        i = min(int((t - self.lights_off) // EPOCH_S), len(self.epochs) - 1)
        code = int(self.epochs[i])
        return OUT if code < 0 else STAGES[code]

    def hours(self) -> dict[str, float]:
        """In-bed, sleep and wake-in-bed hours (out-of-bed spans are neither)."""
        in_bed_h = (self.lights_on - self.lights_off) / 3600
        sleep = float(np.count_nonzero(self.epochs > 0)) * EPOCH_S / 3600
        wake = float(np.count_nonzero(self.epochs == 0)) * EPOCH_S / 3600
        return {"in_bed": in_bed_h, "sleep": sleep, "wake_in_bed": wake}


# ----------------------------------------------------------------------------- hypnogram


def _hypnogram(rng: np.random.Generator, profile: Profile, n_ep: int) -> tuple[np.ndarray, int]:
    """Stage per epoch: latency, ~90-min NREM-REM cycles (N3 early, REM late), wake bouts, final awakening."""
    ep_per_min = 60.0 / EPOCH_S
    stages = np.zeros(n_ep, dtype=np.int8)
    latency = int(min(rng.lognormal(math.log(profile.sleep_latency_min), 0.5) * ep_per_min, 0.3 * n_ep))
    final_wake = int(min(rng.uniform(2, 15) * ep_per_min, 0.1 * n_ep))
    i, k = latency, 0
    n3_age = max(0.15, 1.0 - (profile.age - 20.0) / 70.0)  # slow-wave sleep declines with age
    while i < n_ep - final_wake:
        length = rng.normal(92, 10)
        n1 = rng.uniform(2, 6) if k == 0 else rng.uniform(0.5, 3)
        n3 = n3_age * (rng.uniform(15, 40) if k == 0 else rng.uniform(8, 25) if k == 1 else rng.uniform(0, 8))
        rem = rng.uniform(5, 12) if k == 0 else rng.uniform(12, 22) if k == 1 else rng.uniform(18, 35)
        n2 = max(10.0, length - n1 - n3 - rem)
        for code, minutes in ((1, n1), (2, 0.7 * n2), (3, n3), (2, 0.3 * n2), (4, rem)):
            j = min(n_ep - final_wake, i + round(minutes * ep_per_min))
            stages[i:j] = code
            i = j
        k += 1
    stages[n_ep - final_wake :] = 0
    sleep_start, sleep_end = latency, n_ep - final_wake
    if sleep_end - sleep_start > 10:
        hours = n_ep * EPOCH_S / 3600
        for _ in range(rng.poisson(profile.wake_bouts_per_8h * hours / 8)):
            at = int(rng.integers(sleep_start + 2, sleep_end))
            dur = round(min(30.0, max(0.5, rng.lognormal(math.log(profile.wake_bout_median_min), 0.8))) * ep_per_min)
            stages[at : min(sleep_end, at + dur)] = 0
            stages[min(sleep_end, at + dur) : min(sleep_end, at + dur + int(rng.integers(1, 3)))] = 1
    return stages, latency


def _segments(codes: np.ndarray, t0: float) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    if len(codes) == 0:
        return out
    change = np.flatnonzero(np.diff(codes)) + 1
    bounds = np.concatenate([[0], change, [len(codes)]])
    for a, b in itertools.pairwise(bounds):
        code = int(codes[a])
        out.append((t0 + a * EPOCH_S, t0 + b * EPOCH_S, OUT if code < 0 else STAGES[code]))
    return out


# ----------------------------------------------------------------------------- body (posture, getting up)


def _lying_angles(rng: np.random.Generator, posture: str, side: str) -> dict[str, float]:
    splay = -12.0 if side == "left" else 12.0  # supine feet fall outwards
    roll = _POSTURE_ROLL[posture] + (splay if posture == "supine" else 0.0) + rng.normal(0, 12)
    pitch = rng.normal(4, 5) if posture == "supine" else rng.normal(0, 8) if posture != "prone" else rng.normal(-3, 5)
    return {"roll": roll, "pitch": pitch}


def _upright_angles(rng: np.random.Generator, sitting: bool) -> dict[str, float]:
    return {"roll": rng.uniform(-30, 30), "pitch": rng.uniform(68, 86) if sitting else rng.uniform(84, 92)}


def _next_posture(rng: np.random.Generator, current: str | None) -> str:
    names = [p for p in _POSTURE_P if p != current]
    weights = np.array([_POSTURE_P[p] for p in names])
    return str(rng.choice(names, p=weights / weights.sum()))


def _wiggle(rng: np.random.Generator, amp_g: tuple[float, float], hz: tuple[float, float], n: int = 4) -> dict:
    """Irregular limb motion during a body movement: a few sinusoids with random frequency, phase, direction."""
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return {
        "w_amp": rng.uniform(*amp_g, size=n) / math.sqrt(n),
        "w_hz": rng.uniform(*hz, size=n),
        "w_phase": rng.uniform(0, 2 * math.pi, size=n),
        "w_dir": dirs,
    }


class _BodyBuilder:
    """Appends each leg's activities in time order and records posture/walking movements."""

    def __init__(self, rng: np.random.Generator, start: float) -> None:
        self.rng = rng
        self.t = start
        self.angles: dict[str, dict[str, float]] = {}
        self.activities: dict[str, list[Activity]] = {s: [] for s in SIDES}
        self.movements: list[Movement] = []

    def still(self, until: float) -> None:
        if until > self.t:
            for side in SIDES:
                self.activities[side].append(Activity(self.t, until, "still", dict(self.angles[side])))
            self.t = until

    def set_angles(self, angles: dict[str, dict[str, float]]) -> None:
        self.angles = angles

    def transition(self, duration: float, to: dict[str, dict[str, float]], role: str, stage: str) -> None:
        lag = self.rng.uniform(0, min(0.6, duration * 0.15))  # the legs never move in perfect lockstep
        for i, side in enumerate(SIDES):
            s = self.t + (lag if i else 0.0)
            e = self.t + duration - (0.0 if i else lag)
            params = {"from": dict(self.angles[side]), "to": dict(to[side])}
            params.update(_wiggle(self.rng, (0.04, 0.25), (0.4, 4.0)))
            if s > self.t:
                self.activities[side].append(Activity(self.t, s, "still", dict(self.angles[side])))
            self.activities[side].append(Activity(s, e, "transition", params))
            if e < self.t + duration:
                self.activities[side].append(Activity(e, self.t + duration, "still", dict(to[side])))
            self.movements.append(Movement(s, e, side, "posture", role, stage, {}))
        self.t += duration
        self.angles = to

    def walk(self, duration: float, stage: str) -> None:
        step_hz = self.rng.uniform(1.6, 2.0)
        phase0 = self.rng.uniform(0, 2 * math.pi)
        for i, side in enumerate(SIDES):
            params = {
                "roll": self.angles[side]["roll"],
                "step_hz": step_hz,
                "phase": phase0 + i * math.pi,
                "swing_deg": self.rng.uniform(15, 28),
                "heel_g": self.rng.uniform(0.3, 1.0),
                "heel_hz": self.rng.uniform(12, 20),
                "bounce_g": self.rng.uniform(0.08, 0.2),
            }
            self.activities[side].append(Activity(self.t, self.t + duration, "walk", params))
            self.movements.append(Movement(self.t, self.t + duration, side, "walking", "walk", stage, {}))
        self.t += duration


def _get_up(b: _BodyBuilder, away_s: float, next_posture: str) -> tuple[float, float]:
    """Sit up, stand, walk off, stay away, walk back, lie down. Returns the out-of-bed span."""
    rng = b.rng
    sit = {s: _upright_angles(rng, True) for s in SIDES}
    b.transition(rng.uniform(3, 6), sit, "get_up", "wake")
    b.still(b.t + rng.uniform(2, 8))
    out_start = b.t
    b.transition(rng.uniform(1.5, 3), {s: _upright_angles(rng, False) for s in SIDES}, "stand", OUT)
    b.walk(rng.uniform(5, 30), OUT)
    b.set_angles({s: _upright_angles(rng, rng.random() < 0.6) for s in SIDES})  # toilet / standing
    b.still(b.t + away_s)
    b.walk(rng.uniform(5, 30), OUT)
    b.transition(rng.uniform(1.5, 3), {s: _upright_angles(rng, True) for s in SIDES}, "sit", OUT)
    out_end = b.t
    b.still(b.t + rng.uniform(2, 8))
    b.transition(rng.uniform(3, 8), {s: _lying_angles(rng, next_posture, s) for s in SIDES}, "lie_down", "wake")
    return out_start, out_end


# ----------------------------------------------------------------------------- leg movements


def _gamma(rng: np.random.Generator, mean: float, sd: float) -> float:
    shape = (mean / sd) ** 2
    return float(rng.gamma(shape, mean / shape))


def _lm_params(rng: np.random.Generator, duration: float, kind: str) -> dict[str, Any]:
    """Kinematics of one ankle dorsiflexion (with knee/hip flexion): rise, hold, release, tremor."""
    lever = rng.uniform(0.2, 0.5)
    if kind == "twitch":
        rot = float(np.clip(rng.lognormal(math.log(1.5), 0.7), 0.2, 10))
        rise, release = duration * 0.4, duration * 0.6
    else:
        rot = float(np.clip(rng.lognormal(math.log(4.5), 0.85), 0.3, 25))
        # bigger flexions take longer: draw the peak ankle acceleration (0.01-0.6 g, median 0.08 g)
        # and derive the minimum-jerk rise time from it (peak = 5.77 * lever * angle / T^2)
        want = float(np.clip(rng.lognormal(math.log(0.08), 0.8), 0.01, 0.6)) * 9.81
        natural = math.sqrt(lever * math.radians(rot) * 5.7735 / want)
        rise = float(np.clip(natural, 0.1, 0.35 * duration))
        release = float(np.clip(natural * rng.uniform(1.0, 1.8), 0.15, 0.4 * duration))
    direction = rng.normal(size=3) * np.array([0.6, 0.5, 1.0])
    direction /= np.linalg.norm(direction)
    # peak of lever * angle'' for a minimum-jerk rise of A rad in T s: 5.77 A / T^2, in g
    peak = lever * math.radians(rot) * 5.7735 / min(rise, release) ** 2 / 9.81
    params: dict[str, Any] = {
        "rot_deg": rot,
        "axis_deg": rng.normal(0, 30),  # 0 = pure sagittal (pitch); +-90 = rotation about the shank
        "rise": rise,
        "release": release,
        "lever_m": lever,
        "dir": direction,
        "tremor_hz": rng.uniform(2, 8),
        "tremor_g": float(np.clip(rng.lognormal(math.log(0.008), 0.7), 0.001, 0.08)),
        "tremor_phase": rng.uniform(0, 2 * math.pi),
        "peak_dyn_g": peak,
    }
    if kind == "long":
        params["slow_deg"] = rng.uniform(2, 10)
        params["slow_hz"] = rng.uniform(0.2, 1.2)
    return params


class _Planner:
    def __init__(self, rng: np.random.Generator, profile: Profile, plan_stage, lights_off: float, epochs: np.ndarray):
        self.rng = rng
        self.profile = profile
        self.stage_at = plan_stage
        self.lights_off = lights_off
        self.epochs = epochs
        self.p_left = rng.uniform(0.35, 0.65)
        self.duration_scale = rng.uniform(0.85, 1.08)
        self.blocked: list[tuple[float, float]] = []  # body movements and out-of-bed spans (+ margins)
        self.busy: list[tuple[float, float]] = []  # planned LM activity
        self.movements: list[Movement] = []

    # -- helpers
    def _free(self, t0: float, t1: float, spans: list[tuple[float, float]]) -> bool:
        return all(t1 <= a or t0 >= b for a, b in spans)

    def _epoch_times(self, weights: dict[str, float], n: int, time_weight: bool = False) -> np.ndarray:
        codes = self.epochs
        w = np.array([0.0] + [weights.get(s, 0.0) for s in STAGES])[codes + 1]
        if time_weight:  # densest in the first half of the night
            rel = np.linspace(0, 1, len(codes), endpoint=False)
            w = w * (1.5 - rel)
        if n <= 0 or w.sum() <= 0:
            return np.empty(0)
        idx = self.rng.choice(len(codes), size=n, p=w / w.sum())
        return self.lights_off + (idx + self.rng.random(n)) * EPOCH_S

    def _duration(self, stage: str) -> float:
        mean, sd = _DURATION.get(stage, _DURATION["n2"])
        return float(np.clip(_gamma(self.rng, mean * self.duration_scale, sd), 0.5, 9.5))

    def add_lm(self, onset: float, duration: float, kind: str, role: str) -> list[Movement]:
        """One LM with its bilateral structure: none (42 %), one (55 %) or two (3 %) movements on the other leg."""
        rng = self.rng
        stage = self.stage_at(onset)
        primary = "left" if rng.random() < self.p_left else "right"
        other = "right" if primary == "left" else "left"
        out = [Movement(onset, onset + duration, primary, kind, role, stage, _lm_params(rng, duration, kind))]
        u = rng.random()
        if kind == "twitch":
            if u < 0.3:
                d = rng.uniform(0.1, 0.45)
                on = onset + rng.uniform(0, 0.2)
                out.append(Movement(on, on + d, other, kind, role, stage, _lm_params(rng, d, kind)))
        elif u >= P_MONOLATERAL:
            on = onset + rng.uniform(0, 1.0)
            cap = 9.5 if kind == "lm" else 30.0
            d = float(np.clip(duration * rng.lognormal(0, 0.25), 0.5, cap))
            two = u >= P_MONOLATERAL + P_ONE_MATCH and duration > 2.5
            if two:
                d = rng.uniform(0.5, max(0.6, duration / 2 - 0.7))
            out.append(Movement(on, on + d, other, kind, role, stage, _lm_params(rng, d, kind)))
            if two:
                on2 = on + d + rng.uniform(0.6, 0.9)
                if on2 < onset + duration + 0.4:
                    d2 = rng.uniform(0.5, 1.5)
                    out.append(Movement(on2, on2 + d2, other, kind, role, stage, _lm_params(rng, d2, kind)))
        self.movements.extend(out)
        return out

    # -- periodic runs
    def periodic_runs(self, n_wanted: int) -> int:
        """Add PLM runs until about ``n_wanted`` periodic LMs are planned; returns how many were added."""
        added, attempts = 0, 0
        imi_median = self.profile.imi_median_s()
        while added < n_wanted and attempts < 400:
            attempts += 1
            starts = self._epoch_times({**_PLM_STAGE_WEIGHT, "wake": self.profile.wake_plm_factor}, 1, time_weight=True)
            if starts.size == 0:
                break
            t = float(starts[0])
            length = 4 + int(self.rng.geometric(1.0 / max(1.0, self.profile.run_mean - 3.0))) - 1
            run_median = imi_median * self.rng.lognormal(0, 0.15)
            onsets: list[float] = []
            for _ in range(length):
                stage = self.stage_at(t)
                if stage == OUT or self.rng.random() > _RUN_CONTINUE.get(stage, 0.0):
                    break
                dur = self._duration(stage)
                if not self._free(t - 2, t + dur + 2, self.blocked) or not self._free(t - 1, t + dur + 1, self.busy):
                    break
                onsets.append(t)
                group = self.add_lm(t, dur, "lm", "periodic")
                if self.rng.random() < P_SHORT_IMI:
                    gap = self.rng.uniform(2.0, 4.0)
                    # the first movement must end >= 0.6 s before the next starts, else the rules merge them
                    for m in group:
                        m.offset = max(m.onset + 0.5, min(m.offset, t + gap - 0.6))
                    if all(m.offset <= t + gap - 0.6 for m in group):
                        self.add_lm(t + gap, float(np.clip(_gamma(self.rng, 1.5, 0.5), 0.5, 3)), "lm", "short_imi")
                imi = run_median * _IMI_STAGE_FACTOR.get(stage, 1.0) * self.rng.lognormal(0, 0.3)
                t += imi
            if onsets:
                self.busy.append((onsets[0] - 1, t))
                added += len(onsets) if len(onsets) >= 4 else 0
        return added

    def scattered(self, kind: str, role: str, per_h: float, weights: dict[str, float], hours: float) -> None:
        for t in np.sort(self._epoch_times(weights, int(self.rng.poisson(per_h * hours)))):
            stage = self.stage_at(t)
            if kind == "twitch":
                dur = self.rng.uniform(0.1, 0.45)
            elif kind == "long":
                dur = self.rng.uniform(10.5, 30.0)
            else:
                dur = float(np.clip(_gamma(self.rng, 2.2, 1.2), 0.5, 9.5))
            margin = 0.0 if kind == "twitch" else 10.0
            if stage == OUT or not self._free(t - 2, t + dur + 2, self.blocked):
                continue
            if not self._free(t - margin, t + dur + margin, self.busy):
                continue
            self.add_lm(float(t), dur, kind, role)
            self.busy.append((t - 1, t + dur + 1))


def _truth_lms(movements: list[Movement]) -> list[LegMovement]:
    return [LegMovement(m.onset, m.offset - m.onset, m.side) for m in movements if m.kind in SCORED_KINDS]


def _plms_count(plan_stage, movements: list[Movement], gaps: list[Gap]) -> int:
    score = score_events(_truth_lms(movements), WASM2016, gaps)
    return sum(1 for m in score.movements if m.plm and plan_stage(m.onset) in ("n1", "n2", "n3", "rem"))


# ----------------------------------------------------------------------------- the plan


def plan_night(
    profile: Profile, seed: int, start: float, duration_s: float, plms_per_h: float | None = None
) -> NightPlan:
    """Build the whole body-level night (stages, posture, movements, partner) from one seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x504C4D]))
    end = start + duration_s
    b = _BodyBuilder(rng, start)
    b.set_angles({s: _upright_angles(rng, False) for s in SIDES})
    b.still(start + rng.uniform(3, 10))
    b.walk(rng.uniform(8, 25), OUT)
    b.transition(rng.uniform(1.5, 3), {s: _upright_angles(rng, True) for s in SIDES}, "sit", OUT)
    b.still(b.t + rng.uniform(3, 15))
    posture = _next_posture(rng, None)
    b.transition(rng.uniform(3, 8), {s: _lying_angles(rng, posture, s) for s in SIDES}, "lie_down", OUT)
    lights_off = b.t
    lights_on = end - rng.uniform(80, 150)
    if lights_on - lights_off < 5 * 60:
        raise ValueError(f"a night of {duration_s / 3600:.2f} h is too short to simulate (need >= 0.25 h)")
    n_ep = int((lights_on - lights_off) // EPOCH_S)
    lights_on = lights_off + n_ep * EPOCH_S
    epochs, latency = _hypnogram(rng, profile, n_ep)
    sleep_onset = lights_off + latency * EPOCH_S if np.any(epochs > 0) else None

    # getting up: inside a wake bout (made if needed), never in the first or last 10 minutes
    hours_in_bed = n_ep * EPOCH_S / 3600
    n_up = int(rng.poisson(profile.get_up_mean * hours_in_bed / 8)) if n_ep > 60 else 0
    ups: list[tuple[float, float]] = []
    for at in np.sort(rng.uniform(lights_off + 600, lights_on - 900, size=n_up)) if n_up else []:
        away = rng.uniform(40, 360)
        total = away + 150.0
        if ups and at < ups[-1][1] + 300:
            continue
        ups.append((float(at), float(at + total)))
        i0 = int((at - 60 - lights_off) // EPOCH_S)
        i1 = int((at + total + 90 - lights_off) // EPOCH_S) + 1
        epochs[max(0, i0) : min(n_ep, i1)] = 0

    def stage_at(t: float) -> str:
        if t < lights_off or t >= lights_on:
            return OUT
        return STAGES[int(epochs[min(int((t - lights_off) // EPOCH_S), n_ep - 1)])]

    # turning over (thinned Poisson by stage), then build the in-bed body timeline
    turn_w = np.array([_TURN_STAGE_WEIGHT[s] for s in STAGES])[epochs]
    n_turn = int(rng.poisson(profile.turnover_per_h * hours_in_bed * turn_w.mean()))
    turns = (
        np.sort(lights_off + (rng.choice(n_ep, size=n_turn, p=turn_w / turn_w.sum()) + rng.random(n_turn)) * EPOCH_S)
        if n_turn
        else np.empty(0)
    )
    body = sorted([(float(t), "turn") for t in turns] + [(u[0], "up") for u in ups])
    out_of_bed: list[tuple[float, float]] = []
    for t, what in body:
        if t < b.t + 20:
            continue
        if what == "turn":
            dur = float(np.clip(rng.lognormal(math.log(6), 0.5), 3, 20))
            if t + dur > lights_on - 30:
                continue
            b.still(t)
            posture = _next_posture(rng, posture)
            b.transition(dur, {s: _lying_angles(rng, posture, s) for s in SIDES}, "turn", stage_at(t))
        else:
            b.still(t)
            posture = _next_posture(rng, None)
            out_of_bed.append(_get_up(b, rng.uniform(40, 300), posture))
    for s, e in out_of_bed:  # out of bed is not sleep or wake-in-bed: mark its epochs
        epochs[max(0, int((s - lights_off) // EPOCH_S)) : math.ceil((e - lights_off) / EPOCH_S)] = -1

    def stage_at_final(t: float) -> str:
        if t < lights_off or t >= lights_on:
            return OUT
        code = int(epochs[min(int((t - lights_off) // EPOCH_S), n_ep - 1)])
        return OUT if code < 0 else STAGES[code]

    b.still(lights_on + rng.uniform(5, 30))
    b.transition(rng.uniform(3, 6), {s: _upright_angles(rng, True) for s in SIDES}, "get_up", OUT)
    b.still(b.t + rng.uniform(3, 10))
    b.transition(rng.uniform(1.5, 3), {s: _upright_angles(rng, False) for s in SIDES}, "stand", OUT)
    b.walk(min(rng.uniform(8, 20), max(1.0, end - b.t - 2)), OUT)
    b.still(end)

    planner = _Planner(rng, profile, stage_at_final, lights_off, epochs)
    planner.blocked = [(m.onset - 2, m.offset + 2) for m in b.movements] + [(s - 5, e + 5) for s, e in out_of_bed]
    sleep_h = float(np.count_nonzero(epochs > 0)) * EPOCH_S / 3600
    plms_target = profile.draw_plms_target(rng) if plms_per_h is None else float(plms_per_h)
    wanted = round(plms_target * sleep_h)
    planner.periodic_runs(wanted)
    planner.scattered("lm", "isolated", profile.isolated_lm_per_h, _ISOLATED_STAGE_WEIGHT, hours_in_bed)
    planner.scattered("long", "restless", profile.long_lm_per_h, {"wake": 1.0, "n1": 0.2}, hours_in_bed)
    planner.scattered("twitch", "twitch", profile.twitch_per_h, _TWITCH_STAGE_WEIGHT, hours_in_bed)
    # the rules break some runs (short IMIs, isolated LMs): top up until the scored PLMS count reaches the target
    score_gaps = [Gap(s, e, ends_series=True) for s, e in out_of_bed]
    for _ in range(6):
        got = _plms_count(stage_at_final, planner.movements, score_gaps)
        if got >= 0.95 * wanted or wanted == 0:
            break
        if planner.periodic_runs(round((wanted - got) * 1.1)) == 0:
            break

    partner = _partner(rng, lights_off, lights_on)
    movements = sorted(b.movements + planner.movements, key=lambda m: (m.onset, m.side))
    for m in movements:  # truth on the millisecond grid of the CSV, so truth.json scores exactly the same
        m.onset, m.offset = round(m.onset, 3), round(m.offset, 3)
    return NightPlan(
        profile=profile,
        seed=int(seed),
        start=start,
        end=end,
        lights_off=lights_off,
        lights_on=lights_on,
        sleep_onset=sleep_onset,
        epochs=epochs,
        stages=[(start, lights_off, OUT), *_segments(epochs, lights_off), (lights_on, end, OUT)],
        movements=movements,
        activities=b.activities,
        out_of_bed=out_of_bed,
        partner=partner,
        plms_target=plms_target,
    )


def _partner(rng: np.random.Generator, t0: float, t1: float, per_h: float = 3.0) -> list[dict[str, Any]]:
    """Bed-partner movements felt through the mattress: small (1-5 mg) 1-10 Hz, sometimes a turn (5-20 mg)."""
    out: list[dict[str, Any]] = []
    hours = (t1 - t0) / 3600
    for t in np.sort(rng.uniform(t0, t1, size=int(rng.poisson(per_h * hours)))):
        big = rng.random() < 0.25
        dur = rng.uniform(3, 12) if big else rng.uniform(1, 20)
        amp = rng.uniform(5, 20) if big else float(np.clip(rng.lognormal(math.log(2.5), 0.5), 0.8, 6))
        n = 3
        out.append(
            {
                "start": float(t),
                "end": float(min(t1, t + dur)),
                "amp_g": amp / 1000.0,
                "hz": rng.uniform(1, 10, size=n),
                "phase": rng.uniform(0, 2 * math.pi, size=n),
                "legs": rng.uniform(0.5, 1.0, size=2),
            }
        )
    return out


def partner_turns_over_lms(plan: NightPlan, seed: int, fraction: float = 0.25) -> list[dict[str, Any]]:
    """Bed-partner turns (5-20 mg, 3-12 s, 1-10 Hz along vertical) that start 0.3-3 s after the onset of
    ``fraction`` of the night's LMs: the partner's bounce overlapping a leg movement on purpose (issue 19,
    error 2). Drawn from their own random stream, so the rest of the night is unchanged."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x424F554E]))
    out: list[dict[str, Any]] = []
    for m in plan.movements:
        if m.kind != "lm" or rng.random() >= fraction:
            continue
        start = m.onset + rng.uniform(0.3, 3.0)
        n = 3
        out.append(
            {
                "start": float(start),
                "end": float(min(plan.lights_on, start + rng.uniform(3, 12))),
                "amp_g": rng.uniform(5, 20) / 1000.0,
                "hz": rng.uniform(1, 10, size=n),
                "phase": rng.uniform(0, 2 * math.pi, size=n),
                "legs": rng.uniform(0.5, 1.0, size=2),
            }
        )
    return [p for p in out if p["end"] > p["start"]]
