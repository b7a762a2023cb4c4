"""A small physical leg model for tests: a rigid shank that tilts, in a randomly mounted sensor.

Not the project simulator (that is ``simulator``); this exists so the detector's own tests do not
depend on another stage and so that the signal physics is explicit: the sensor measures gravity
rotated into its frame plus the linear acceleration of a point on a rotating shank, plus white noise,
quantised to 1 mg like the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHANK_RADIUS_M = 0.35  # knee-to-sensor distance: linear acceleration = r * angular acceleration
G = 9.81


@dataclass(frozen=True)
class SyntheticMovement:
    onset: float
    duration: float
    angle_deg: float
    hold_s: float = 0.0  # motionless hold in the middle (a held dorsiflexion): rise, hold, release


@dataclass(frozen=True)
class SyntheticSlip:
    """The sensor turning on the ankle (strap slip): a minimum-jerk turn of the sensor about the shank's long
    axis by ``angle_deg`` (plus ``tilt_deg`` about a lateral axis) over ``duration``; the leg does not move.
    The pod on its circle of ``radius_m`` about the shank adds tangential and centripetal acceleration."""

    onset: float
    duration: float
    angle_deg: float
    tilt_deg: float = 0.0
    radius_m: float = 0.04


@dataclass(frozen=True)
class SyntheticBounce:
    """The mattress moving the whole leg up and down (a bed partner turning over): a vertical translation,
    so the specific force is gravity scaled by 1 + a(t)/g along itself -- no rotation of the shank and no
    acceleration across gravity. ``a(t)`` is broadband: sinusoids at ``hz`` with random phases under a
    sin^2 envelope, ``peak_g`` at most (docs/scoring.md 4d)."""

    onset: float
    duration: float
    peak_g: float
    hz: tuple[float, ...] = (1.7, 3.9, 7.3)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def leg_recording(
    movements: list[SyntheticMovement],
    duration_s: float,
    rate_hz: float = 52.0,
    noise_g: float = 0.003,
    seed: int = 0,
    t0: float = 0.0,
    lying: bool = True,
    jitter: float = 0.0,
    slips: tuple[SyntheticSlip, ...] = (),
    bounces: tuple[SyntheticBounce, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Acceleration (g) of a shank lying (or upright) that tilts by each movement's angle and back; with
    ``slips``, the sensor turns on the shank at those times (the leg itself does not)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate_hz)
    t = np.arange(n) / rate_hz
    if jitter:
        t = t + rng.uniform(-jitter, jitter, n) / rate_hz
        t.sort()
    theta = np.zeros(n)
    alpha = np.zeros(n)  # angular acceleration, analytic: a numerical derivative would spread an edge over samples
    for m in movements:
        inside = (t >= m.onset) & (t < m.onset + m.duration)
        tau = t[inside] - m.onset
        ramp = max((m.duration - m.hold_s) / 2, 1e-9)  # rise and release each take this long
        phase = np.clip(np.minimum(tau, m.duration - tau) / ramp, 0, 1)
        theta[inside] += np.radians(m.angle_deg) * 0.5 * (1 - np.cos(np.pi * phase))
        ramping = phase < 1
        alpha[np.flatnonzero(inside)[ramping]] += (
            np.radians(m.angle_deg) * 0.5 * (np.pi / ramp) ** 2 * np.cos(np.pi * phase[ramping])
        )
    # leg frame: z along the shank; lying = gravity along -y, upright = gravity along -z; tilt about x
    base = np.radians(90.0 if lying else 0.0)
    angle = base + theta
    gravity = np.stack([np.zeros(n), -np.sin(angle), -np.cos(angle)], axis=1)
    linear = np.stack(
        [np.zeros(n), SHANK_RADIUS_M * alpha / G * np.cos(angle), -SHANK_RADIUS_M * alpha / G * np.sin(angle)], axis=1
    )
    scale = np.ones(n)
    phases = np.random.default_rng([seed, 0xB0])  # own stream: the same leg and noise with or without a bounce
    for bounce in bounces:
        inside = (t >= bounce.onset) & (t < bounce.onset + bounce.duration)
        tau = t[inside] - bounce.onset
        wave = sum(np.sin(2 * np.pi * f * tau + phases.uniform(0, 2 * np.pi)) for f in bounce.hz) / len(bounce.hz)
        scale[inside] += bounce.peak_g * np.sin(np.pi * tau / bounce.duration) ** 2 * wave
    leg = -gravity * scale[:, None] + linear  # an accelerometer at rest reads +1 g upward
    leg = _slipped(leg, t, slips)
    xyz = leg @ random_rotation(rng).T + rng.normal(0, noise_g, (n, 3))
    return t + t0, np.round(xyz, 3)


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * (kx @ kx)


def _slipped(leg: np.ndarray, t: np.ndarray, slips: tuple[SyntheticSlip, ...]) -> np.ndarray:
    """What a sensor that turned on the shank reads: a sensor turned by O (leg frame) reads O^T x."""
    out = leg.copy()
    turned = np.eye(3)  # O after the slips so far
    for s in sorted(slips, key=lambda s: s.onset):
        rotvec = np.radians(s.angle_deg) * np.array([0.0, 0.0, 1.0]) + np.radians(s.tilt_deg) * np.array([1.0, 0, 0])
        theta = float(np.linalg.norm(rotvec))
        axis = rotvec / theta
        tau = np.clip((t - s.onset) / s.duration, 0, 1)
        pos = tau**3 * (10 - 15 * tau + 6 * tau**2)
        vel = 30 * tau**2 * (1 - tau) ** 2 / s.duration
        acc = (60 * tau - 180 * tau**2 + 120 * tau**3) / s.duration**2
        for i in np.flatnonzero(t >= s.onset):
            turn = _axis_angle(axis, theta * pos[i])
            radial = turn @ np.array([1.0, 0.0, 0.0])
            lin = s.radius_m * (theta * acc[i] * np.cross(axis, radial) - (theta * vel[i]) ** 2 * radial) / G
            out[i] = (turn @ turned).T @ (leg[i] + lin)
        turned = _axis_angle(axis, theta) @ turned
    return out
