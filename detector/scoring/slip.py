"""Strap slip: the sensor turned on the ankle while the leg did not move (issue 19, item 5).

Physical reason. The sensor is held on the shank by a strap, by friction. When the strap lets go the pod
turns around the shank (its long axis) by tens of degrees, or tips as it slides down, and stops where the
strap holds again -- in a fraction of a second, driven by the strap's tension against the pod's few grams.
A 3-axis accelerometer (the Polar PMD ACC stream has no gyroscope) cannot tell "the sensor turned" from "the
leg turned" by the direction of gravity alone: both rotate the gravity vector in the sensor frame. What
differs is the time course:

* a slip is a **step**: the resting gravity direction before and after differ by the slip's angle (10-90 deg
  for a pod turning around the shank), reached within well under a second, with the leg still before and
  after (the detector's onset needs rest before, its offset ``offset_quiet_s`` of rest after);
* a leg movement in bed either **returns** (a dorsiflexion with knee/hip flexion rises and releases: LMs and
  twitches end where they began, within the noise of a few degrees: the detector's return test), or moves
  the leg to a new resting position with the body -- turning over, lying down, getting up -- which takes
  seconds (the legs follow the trunk, the pelvis rolls), not a fraction of one.

So a movement is a **strap slip** when its measured motion lasted less than ``SLIP_MAX_S`` and its resting
orientation changed by at least ``SLIP_MIN_DEG``. A slip is neither an LM nor a twitch (not counted, not
passed to the event-level rules: it cannot join or break a PLM series, nor become a posture change or a bed
transition); it is reported as ``strap_slips`` (docs/scoring.md, "Strap slip"). It stays a movement of that
leg for the non-wear test (a sensor that moved was handled or worn).

The physical quantity this leaves unused is the slip's axis: a pod turning about the shank leaves the angle
between gravity and the shank unchanged, a flexion changes it. The shank's axis in the sensor frame is the
leg's learned upright direction, which needs walking in the recording and is known only at the summary,
while a slip must be decided when the movement closes (before the rules see it, live as offline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # detector.scoring.lm uses slip_shaped: no import at run time
    from detector.scoring.lm import RawMovement

SLIP_MAX_S = 1.0
"""Longest motion (onset to offset as measured) that can be a slip. No published value: a slip is "sub-second"
(the pod turns in 0.1-0.5 s; the detector's boundary filter widens a step by ~0.1 s: measured 0.23-0.52 s,
5th-95th percentile, on 93 simulated slips of seeds 10-17 at 25/52/100 Hz). A leg that ends in a new position
moves there with the body (turning over, lying down, getting up: seconds); a movement under 1 s that ended
displaced by >= SLIP_MIN_DEG was never seen among the 5,444 other movements of those nights."""

SLIP_MIN_DEG = 8.0
"""Smallest change of the resting gravity direction that can be a slip. No published value. Movements of the
leg under SLIP_MAX_S return to rest: on seeds 10-17 (5,444 movements, 25/52/100 Hz) the largest orientation
they left behind was 3.9 deg (a twitch); the slips measured 12.8-90.9 deg (simulated 10-90 deg). 8 deg is
twice the largest return error seen and well below the smallest slip; a pod turning by less stays a twitch
(not an LM either)."""


def step_deg(before: Sequence[float] | np.ndarray | None, after: Sequence[float] | np.ndarray | None) -> float | None:
    """Angle (deg) between the resting gravity vectors before and after a movement; None when one is unknown."""
    if before is None or after is None:
        return None
    a, b = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm <= 0:
        return None
    return math.degrees(math.acos(min(1.0, max(-1.0, float(a @ b) / norm))))


def slip_shaped(
    duration: float, before: Sequence[float] | np.ndarray | None, after: Sequence[float] | np.ndarray | None
) -> bool:
    """A motion of ``duration`` s that took the resting gravity vector from ``before`` to ``after``: a slip?"""
    if duration >= SLIP_MAX_S:
        return False
    angle = step_deg(before, after)
    return angle is not None and angle >= SLIP_MIN_DEG


def is_strap_slip(move: RawMovement) -> bool:
    """True when ``move`` is a step of the sensor's orientation too quick for the leg: a strap slip."""
    return slip_shaped(move.duration, move.before, move.after)
