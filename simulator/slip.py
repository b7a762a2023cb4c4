"""Strap slip (issue 19, item 5): the sensor turns on the ankle while the leg does not move.

An elastic strap holds the sensor pod on the shank by friction. When it lets go (the leg rubs the sheet, the
strap loosens during the night) the pod turns around the shank -- the leg's long axis -- by tens of degrees,
sometimes also tipping a little as it slides down the tapering shank, and stops where the strap holds again.
The leg itself does not move. What the accelerometer sees:

* the gravity vector in the sensor frame turns by the slip's angle, in a fraction of a second, and stays
  there (a step of the static orientation, with no movement after it);
* for a turn about the shank's axis, the component of gravity *along* the shank is unchanged (only the
  sensor's own axes moved around it): the angle between gravity and the shank -- lying vs upright -- is
  the same before and after;
* while the pod turns, it moves on a circle of the shank's radius (a few cm): tangential acceleration
  ``r * angle''`` and centripetal ``r * angle'^2``, and nothing from the leg's muscles.

Slips are drawn per leg from their own random stream (the rest of the night is unchanged), 0-4 a night at
random times in bed, away from the leg's planned movements (so the truth stays unambiguous: a slip is no
movement, and the movements around it keep their true signal).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulator.night import NightPlan

SLIPS_PER_NIGHT = (0, 4)  # per leg, uniform
SLIP_ANGLE_DEG = (10.0, 90.0)  # turn about the shank's long axis
SLIP_DURATION_S = (0.1, 0.5)
SLIP_TILT_P = 0.3  # fraction of slips that also tip the pod (sliding down the shank) ...
SLIP_TILT_DEG = (2.0, 10.0)  # ... by this much, about an axis across the shank
SLIP_RADIUS_M = (0.03, 0.05)  # distance of the sensor from the shank's axis (ankle radius + pod)
SLIP_CLEARANCE_S = 3.0  # no planned movement of the leg within this of a slip


def draw_slips(rng: np.random.Generator, plan: NightPlan, side: str) -> list[dict[str, Any]]:
    """Tonight's slips of one leg's sensor: start, duration, rotation vector (leg frame, rad), radius, pod angle."""
    count = int(rng.integers(SLIPS_PER_NIGHT[0], SLIPS_PER_NIGHT[1] + 1))
    busy = [(m.onset, m.offset) for m in plan.movements if m.side == side] + list(plan.out_of_bed)
    lo, hi = plan.lights_off + 120.0, plan.lights_on - 120.0
    out: list[dict[str, Any]] = []
    for _ in range(count):
        for _attempt in range(200):
            start = float(rng.uniform(lo, hi))
            dur = float(rng.uniform(*SLIP_DURATION_S))
            a, b = start - SLIP_CLEARANCE_S, start + dur + SLIP_CLEARANCE_S
            if hi > lo and all(b <= s or a >= e for s, e in busy):
                break
        else:
            continue
        angle = math.radians(rng.uniform(*SLIP_ANGLE_DEG)) * (1.0 if rng.random() < 0.5 else -1.0)
        rotvec = np.array([angle, 0.0, 0.0])  # leg frame: x is the shank's long axis
        if rng.random() < SLIP_TILT_P:
            across = rng.uniform(0, 2 * math.pi)
            tilt = math.radians(rng.uniform(*SLIP_TILT_DEG))
            rotvec += tilt * np.array([0.0, math.cos(across), math.sin(across)])
        out.append(
            {
                "start": start,
                "end": start + dur,
                "rotvec": rotvec.tolist(),
                "radius_m": float(rng.uniform(*SLIP_RADIUS_M)),
                "pod_deg": float(rng.uniform(0, 360)),  # where around the shank the pod sits (leg frame y-z)
            }
        )
        busy.append((start - SLIP_CLEARANCE_S, start + dur + SLIP_CLEARANCE_S))
    return sorted(out, key=lambda s: s["start"])


def rotation(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (axis * angle, rad): Rodrigues' formula."""
    theta = float(np.linalg.norm(rotvec))
    if theta < 1e-12:
        return np.eye(3)
    k = np.asarray(rotvec) / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * (kx @ kx)


def apply_slips(slips: list[dict[str, Any]], t: np.ndarray, leg: np.ndarray) -> None:
    """Turn the leg-frame reading ``leg`` (n, 3, in place) into what the slipped sensor reads.

    A sensor turned by O relative to the leg reads O^T (leg vector) in its old axes (the mount matrix then
    maps those to the sensor frame as before). Slips compose in time order (O = R_k ... R_1); during a slip
    the turn follows a minimum-jerk profile and the pod's circular motion about the shank adds tangential
    and centripetal acceleration. A function of the sample times only: any window renders the same samples."""
    if not slips or t.shape[0] == 0:
        return
    before = np.eye(3)  # O before the current slip
    prev = 0  # first sample not yet turned
    for s in slips:
        i0, i1 = (int(i) for i in np.searchsorted(t, (s["start"], s["end"])))
        if i0 > prev:
            leg[prev:i0] = (leg[prev:i0].astype(np.float64) @ before).astype(leg.dtype)  # rows: O^T x
        rv = np.asarray(s["rotvec"], dtype=np.float64)
        if i1 > i0:
            dur = s["end"] - s["start"]
            tau = (t[i0:i1] - s["start"]) / dur
            pos = tau**3 * (10 - 15 * tau + 6 * tau**2)
            vel = 30 * tau**2 * (1 - tau) ** 2 / dur  # d pos / dt
            acc = (60 * tau - 180 * tau**2 + 120 * tau**3) / dur**2  # d2 pos / dt2
            theta = float(np.linalg.norm(rv))
            axis = rv / max(theta, 1e-12)
            pod = math.radians(s["pod_deg"])
            radial0 = np.array([0.0, math.cos(pod), math.sin(pod)])
            r = s["radius_m"]
            for j in range(i1 - i0):
                turn = rotation(rv * pos[j])
                radial = turn @ radial0
                lin = r * (theta * acc[j] * np.cross(axis, radial) - (theta * vel[j]) ** 2 * radial) / 9.81
                o = turn @ before
                leg[i0 + j] = (o.T @ (leg[i0 + j].astype(np.float64) + lin)).astype(leg.dtype)
        before = rotation(rv) @ before
        prev = max(prev, i1)
    if prev < t.shape[0]:
        leg[prev:] = (leg[prev:].astype(np.float64) @ before).astype(leg.dtype)
