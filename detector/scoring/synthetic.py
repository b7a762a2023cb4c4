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
) -> tuple[np.ndarray, np.ndarray]:
    """Acceleration (g) of a shank lying (or upright) that tilts by each movement's angle and back."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate_hz)
    t = np.arange(n) / rate_hz
    if jitter:
        t = t + rng.uniform(-jitter, jitter, n) / rate_hz
        t.sort()
    theta = np.zeros(n)
    for m in movements:
        inside = (t >= m.onset) & (t < m.onset + m.duration)
        tau = t[inside] - m.onset
        ramp = max((m.duration - m.hold_s) / 2, 1e-9)  # rise and release each take this long
        phase = np.clip(np.minimum(tau, m.duration - tau) / ramp, 0, 1)
        theta[inside] += np.radians(m.angle_deg) * 0.5 * (1 - np.cos(np.pi * phase))
    # leg frame: z along the shank; lying = gravity along -y, upright = gravity along -z; tilt about x
    base = np.radians(90.0 if lying else 0.0)
    angle = base + theta
    gravity = np.stack([np.zeros(n), -np.sin(angle), -np.cos(angle)], axis=1)
    alpha = np.gradient(np.gradient(theta, t), t)  # angular acceleration -> tangential acceleration
    linear = np.stack(
        [np.zeros(n), SHANK_RADIUS_M * alpha / G * np.cos(angle), -SHANK_RADIUS_M * alpha / G * np.sin(angle)], axis=1
    )
    leg = -gravity + linear  # an accelerometer at rest reads +1 g upward
    xyz = leg @ random_rotation(rng).T + rng.normal(0, noise_g, (n, 3))
    return t + t0, np.round(xyz, 3)
