"""Body plan -> acceleration of the shank in the leg's own frame, for any window of sample times.

Leg frame: x along the shank towards the knee, y lateral, z anterior (the front of the shin).
An accelerometer at rest reads the *up* vector (+1 g against gravity), so lying supine reads
(0, 0, 1), lying on the side about (0, +-1, 0) and standing (1, 0, 0). ``roll`` turns the leg about
the shank, ``pitch`` tilts the shank up (knee flexion, sitting, standing)::

    up = (sin pitch, cos pitch sin roll, cos pitch cos roll)

A leg movement is a smooth rise-hold-release of a small rotation (ankle dorsiflexion with knee/hip
flexion moves the shank a few degrees) plus the linear acceleration of the ankle on its lever arm and
a few-Hz tremor; never a rectangle of noise. Everything is vectorised per event slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.night import LM_KINDS, SIDES, NightPlan

G = 9.81
_MAX_MOVEMENT_S = 40.0  # longest scored movement the renderer has to look back for

# Cardiorespiratory micro-motion of a worn leg (the ballistocardiogram, BCG). Each heartbeat ejects blood into
# the aorta and the body recoils along its head-foot axis (Starr et al. 1939, Am J Physiol 127:1; Pinheiro et
# al. 2010, Open Biomed Eng J 4:201): a damped I-J-K complex of ~0.3 s with most energy at 2-10 Hz, which a
# bed-mounted or body-worn accelerometer picks up at any site. Seismocardiograms on the chest reach 10-50 mg;
# the leg is far from the heart and damped by the mattress, so the shank's share is taken as a few mg peak
# (an assumption, not a measurement: BCG_PEAK_MG below). Breathing rocks the pelvis and with it the legs by a
# few hundredths of a degree at 0.2-0.3 Hz. Both are what a sensor on a table lacks (docs/scoring.md, non-wear).
BCG_PEAK_MG = (1.5, 5.0)  # peak of the heartbeat complex at the shank, drawn per leg and night
BCG_RING_HZ, BCG_DECAY_S = 5.0, 0.08  # the complex: a 5-Hz oscillation decaying in ~0.1 s
HEART_BPM = (48.0, 72.0)  # sleeping heart rate
BREATH_PER_MIN = (11.0, 17.0)  # sleeping breathing rate
BREATH_TILT_DEG = (0.01, 0.05)  # tilt of the shank with each breath


@dataclass
class _SideIndex:
    act_start: np.ndarray
    movements: list
    mov_onset: np.ndarray
    partner_start: np.ndarray


def _index(plan: NightPlan, side: str) -> _SideIndex:
    cache = plan.__dict__.setdefault("_render_index", {})
    if side not in cache:
        movs = [m for m in plan.movements if m.side == side and m.kind in LM_KINDS]
        cache[side] = _SideIndex(
            np.array([a.start for a in plan.activities[side]]),
            movs,
            np.array([m.onset for m in movs]),
            np.array([p["start"] for p in plan.partner]),
        )
    return cache[side]


def _minjerk(tau: np.ndarray) -> np.ndarray:
    return tau * tau * tau * (10 - 15 * tau + 6 * tau * tau)


def leg_acceleration(plan: NightPlan, side: str, t: np.ndarray, *, partner: bool = True) -> np.ndarray:
    """Specific force (g) of the ``side`` shank in its leg frame at true wall times ``t`` (sorted), shape (n, 3)."""
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    n = len(t)
    roll = np.zeros(n, dtype=np.float32)
    pitch = np.zeros(n, dtype=np.float32)
    dyn = np.zeros((n, 3), dtype=np.float32)
    if n == 0:
        return dyn
    idx = _index(plan, side)
    t_first, t_last = t[0], t[-1]
    acts = plan.activities[side]
    a0 = max(0, int(np.searchsorted(idx.act_start, t_first, "right")) - 1)
    a1 = int(np.searchsorted(idx.act_start, t_last, "right"))
    for act in acts[a0:a1]:
        i0, i1 = np.searchsorted(t, (act.start, act.end))
        if i1 <= i0:
            continue
        tt = t[i0:i1] - act.start
        p = act.params
        if act.kind == "still":
            roll[i0:i1] = p["roll"]
            pitch[i0:i1] = p["pitch"]
            if p["pitch"] > 45:  # standing or sitting: postural sway
                pitch[i0:i1] += 1.2 * np.sin(2 * math.pi * 0.3 * tt + p["roll"])
        elif act.kind == "transition":
            dur = act.end - act.start
            tau = tt / dur
            s = _minjerk(tau)
            roll[i0:i1] = p["from"]["roll"] + (p["to"]["roll"] - p["from"]["roll"]) * s
            pitch[i0:i1] = p["from"]["pitch"] + (p["to"]["pitch"] - p["from"]["pitch"]) * s
            env = np.sin(math.pi * tau)
            for amp, hz, ph, d in zip(p["w_amp"], p["w_hz"], p["w_phase"], p["w_dir"], strict=True):
                dyn[i0:i1] += np.outer(amp * env * np.sin(2 * math.pi * hz * tt + ph), d)
        else:  # walk
            stride_hz = p["step_hz"] / 2
            dur = act.end - act.start
            env = np.clip(np.minimum(tt, dur - tt) / 0.7, 0, 1)
            cycle = stride_hz * tt + p["phase"] / (2 * math.pi)
            roll[i0:i1] = p["roll"]
            pitch[i0:i1] = 90.0 + env * p["swing_deg"] * np.sin(2 * math.pi * cycle)
            since_strike = (cycle % 1.0) / stride_hz
            heel = p["heel_g"] * np.exp(-since_strike / 0.03) * np.cos(2 * math.pi * p["heel_hz"] * since_strike)
            bounce = p["bounce_g"] * np.sin(2 * math.pi * p["step_hz"] * tt + 2 * p["phase"])
            dyn[i0:i1, 0] += env * (heel + bounce)
            dyn[i0:i1, 2] += env * 0.3 * heel
    m0 = int(np.searchsorted(idx.mov_onset, t_first - _MAX_MOVEMENT_S))
    m1 = int(np.searchsorted(idx.mov_onset, t_last, "right"))
    for m in idx.movements[m0:m1]:
        i0, i1 = np.searchsorted(t, (m.onset, m.offset))
        if i1 <= i0:
            continue
        _add_leg_movement(m, t[i0:i1] - m.onset, roll[i0:i1], pitch[i0:i1], dyn[i0:i1])
    _add_physiology(plan, side, t, pitch, dyn)
    pr, pp = np.radians(roll), np.radians(pitch)
    cp = np.cos(pp)
    up = np.empty((n, 3), dtype=np.float32)
    up[:, 0] = np.sin(pp)
    up[:, 1] = cp * np.sin(pr)
    up[:, 2] = cp * np.cos(pr)
    if partner and plan.partner:
        vib = np.zeros(n, dtype=np.float32)
        leg = SIDES.index(side)
        p0 = max(0, int(np.searchsorted(idx.partner_start, t_first - 60.0)))
        p1 = int(np.searchsorted(idx.partner_start, t_last, "right"))
        for ev in plan.partner[p0:p1]:
            i0, i1 = np.searchsorted(t, (ev["start"], ev["end"]))
            if i1 <= i0:
                continue
            tt = t[i0:i1] - ev["start"]
            env = np.sin(math.pi * tt / (ev["end"] - ev["start"])) ** 2
            wave = sum(np.sin(2 * math.pi * hz * tt + ph) for hz, ph in zip(ev["hz"], ev["phase"], strict=True))
            vib[i0:i1] += ev["amp_g"] * ev["legs"][leg] * env * wave / math.sqrt(len(ev["hz"]) / 2)
        up *= (1.0 + vib)[:, None]  # the mattress moves vertically: the vibration is along "up"
    up += dyn
    return up


def _physiology_params(plan: NightPlan, side: str) -> dict[str, float]:
    cache = plan.__dict__.setdefault("_physiology", {})
    if side not in cache:
        rng = np.random.default_rng(np.random.SeedSequence([int(plan.seed), 0x424347, SIDES.index(side)]))
        cache[side] = {
            "bcg_g": rng.uniform(*BCG_PEAK_MG) / 1000.0,
            "heart_hz": rng.uniform(*HEART_BPM) / 60.0,
            "hrv_hz": rng.uniform(0.05, 0.15),  # slow heart-rate modulation (~5 %)
            "hrv_phase": rng.uniform(0, 2 * math.pi),
            "breath_hz": rng.uniform(*BREATH_PER_MIN) / 60.0,
            "breath_phase": rng.uniform(0, 2 * math.pi),
            "breath_deg": rng.uniform(*BREATH_TILT_DEG),
        }
    return cache[side]


def _add_physiology(plan: NightPlan, side: str, t: np.ndarray, pitch: np.ndarray, dyn: np.ndarray) -> None:
    """Heartbeat (BCG along the shank, some across it) and breathing (a tiny tilt), a function of time only,
    so any window renders the same samples."""
    p = _physiology_params(plan, side)
    tt = t - plan.start
    f = p["heart_hz"]
    beats = f * tt + 0.05 * f / p["hrv_hz"] * np.sin(2 * math.pi * p["hrv_hz"] * tt + p["hrv_phase"])
    since = (beats % 1.0) / f  # seconds since the last beat
    bcg = p["bcg_g"] * np.exp(-since / BCG_DECAY_S) * np.sin(2 * math.pi * BCG_RING_HZ * since)
    dyn[:, 0] += bcg
    dyn[:, 2] += 0.4 * bcg
    pitch += p["breath_deg"] * np.sin(2 * math.pi * p["breath_hz"] * tt + p["breath_phase"])


def _add_leg_movement(m, tau: np.ndarray, roll: np.ndarray, pitch: np.ndarray, dyn: np.ndarray) -> None:
    p = m.params
    dur = m.offset - m.onset
    rise, rel = p["rise"], p["release"]
    env = np.ones_like(tau)
    acc = np.zeros_like(tau)  # second derivative of env, 1/s^2
    r = tau < rise  # minimum-jerk rise: position, velocity and acceleration all start at zero
    x = tau[r] / rise
    env[r] = _minjerk(x)
    acc[r] = (60 * x - 180 * x * x + 120 * x**3) / rise**2
    f = tau > dur - rel
    x = (tau[f] - (dur - rel)) / rel
    env[f] = np.minimum(env[f], 1 - _minjerk(x))
    acc[f] = -(60 * x - 180 * x * x + 120 * x**3) / rel**2
    angle = p["rot_deg"] * env
    if "slow_deg" in p:  # a long, restless movement keeps moving
        angle = angle + p["slow_deg"] * env * np.sin(2 * math.pi * p["slow_hz"] * tau)
    axis = math.radians(p["axis_deg"])
    pitch += angle * math.cos(axis)
    roll += angle * math.sin(axis)
    d = p["dir"]
    lin = p["lever_m"] * math.radians(p["rot_deg"]) * acc / G
    tremor = p["tremor_g"] * env * np.sin(2 * math.pi * p["tremor_hz"] * tau + p["tremor_phase"])
    dyn += np.outer(lin, d) + np.outer(tremor, d[[1, 2, 0]])
