"""Time in bed from leg orientation, and an activity-based sleep/wake *estimate*, per 30-s epoch.

Lying vs upright: when a person stands, walks or sits with feet down, the shank is near vertical, so
gravity lies along the shank's long axis; lying in bed it is near horizontal. The sensor's mounting is
unknown, so each leg's "upright" gravity direction is learned from the recording itself: epochs with
sustained activity (walking to and from bed) are upright; a robust mean of their gravity directions is
the upright reference. An epoch whose mean gravity is more than ``lying_angle_deg`` from it is lying.
Limits (also in docs/scoring.md): a recording that starts and ends in bed has no walking, so there is
no reference and the whole recording counts as in bed; restless tossing in bed with > 50 % activity
for a whole epoch can pollute the reference (the robust mean keeps the majority direction).

Sleep/wake: an in-bed epoch is wake when it holds a long movement (> 10 s: turning over, getting up)
or activity for more than ``wake_active_fraction`` of it, and its neighbours within
``wake_spread_epochs`` are wake too. This is an estimate, not polysomnography: quiet wakefulness
looks like sleep to any accelerometer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from detector.scoring.epochs import table_rows
from detector.scoring.params import DetectorParams


@dataclass(frozen=True)
class EpochClassification:
    epochs: np.ndarray  # epoch indices (t // epoch_s), sorted
    covered_s: np.ndarray  # seconds of data in each epoch (best leg)
    in_bed: np.ndarray  # bool
    asleep: np.ndarray  # bool (subset of in_bed)
    posture_reference: dict[str, bool]  # per side: was an upright direction found?


def upright_direction(table: Mapping[int, np.ndarray], rate_hz: float, params: DetectorParams) -> np.ndarray | None:
    """The leg's gravity direction (unit vector) when upright, from walking-like epochs; None if unseen."""
    if not table:
        return None
    _, rows = table_rows(table)
    full = rows[:, 0] >= 0.5 * params.epoch_s * rate_hz
    active = rows[:, 4] >= params.upright_active_fraction * np.maximum(rows[:, 0], 1)
    chosen = rows[full & active]
    if chosen.shape[0] < params.upright_min_epochs:
        return None
    directions = chosen[:, 1:4] / np.linalg.norm(chosen[:, 1:4], axis=1, keepdims=True)
    # seed the cluster at the most vigorous epoch (largest mean activity envelope), not at the mean of all:
    # walking swings the shank through ~60 degrees per stride with heel strikes of 1 g or more, more than
    # any sustained movement in bed, whereas a restless night can hold more active epochs in one lying
    # position than the walk to and from bed has (the majority then was the bed, and lying was "upright")
    vigour = chosen[:, 5] / np.maximum(chosen[:, 0], 1)
    mean = directions[int(np.argmax(vigour))]
    cos_limit = np.cos(np.radians(params.upright_cluster_deg))
    for _ in range(3):  # robust mean of the cluster around the seed
        close = directions @ mean >= cos_limit
        if close.sum() < params.upright_min_epochs:
            return None
        mean = _unit(directions[close].sum(axis=0))
    return mean


PostureChange = tuple[float, float, np.ndarray, np.ndarray]  # onset, offset, gravity before, gravity after


def leg_postures(
    changes: list[PostureChange], up: np.ndarray, lying_angle_deg: float
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """One leg's bed transitions and the spans its shank was upright, from its posture changes in time order.

    Between two posture changes the leg keeps the orientation the first one left it in (smaller changes are
    not posture changes), so the changes alone are a timeline of the leg's orientation, to the movement,
    where the 30-s epochs only vote by their mean. Returns the movements that took the leg between lying and
    upright (getting into and out of bed) and the spans the shank was upright: sitting on the edge of the bed
    before lying down or after sitting up, standing, walking -- unbounded (+-inf) before the first change and
    after the last. A sleep lab scores leg movements lying in bed (lights-off to lights-on); movements of a leg
    that is upright are not that, however short the sitting was (seconds, inside an epoch that is mostly
    lying: the epochs cannot see it)."""

    def upright(g: np.ndarray) -> bool:
        return angle_deg(g, up) <= lying_angle_deg

    transitions: list[tuple[float, float]] = []
    spans: list[tuple[float, float]] = []

    def add(a: float, b: float) -> None:
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        elif b > a:
            spans.append((a, b))

    if not changes:
        return transitions, spans
    since, was_up = -math.inf, upright(changes[0][2])
    for onset, offset, before, after in changes:
        up_before, up_after = upright(before), upright(after)
        if was_up:
            add(since, onset)
        if up_before != up_after:
            transitions.append((onset, offset))
        elif up_before:  # sitting up -> standing: upright throughout
            add(onset, offset)
        since, was_up = offset, up_after
    if was_up:
        add(since, math.inf)
    return transitions, spans


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two gravity vectors (any length)."""
    cos = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def classify_epochs(
    tables: Mapping[str, Mapping[int, np.ndarray]],
    rates: dict[str, float],
    long_movement_spans: list[tuple[float, float]],
    params: DetectorParams,
    nonwear: list[tuple[float, float]] = (),  # type: ignore[assignment]
) -> EpochClassification:
    """In bed and asleep per epoch, from each leg's epoch table (see :class:`detector.scoring.lm.LegDetector`).

    ``nonwear``: spans when no leg's sensor was on the ankle (detector.scoring.nonwear); an epoch at least half inside
    them is neither in bed nor asleep (a sensor on a night stand says nothing about the sleeper)."""
    per_leg = {side: table_rows(table) for side, table in tables.items()}
    epochs = np.unique(np.concatenate([keys for keys, _ in per_leg.values()] or [np.zeros(0, np.int64)]))
    m = epochs.shape[0]
    covered = np.zeros(m)
    active_fraction = np.zeros(m)
    lying_votes = np.zeros(m, dtype=bool)
    any_reference = False
    reference: dict[str, bool] = {}
    for side, table in tables.items():
        rate = rates.get(side)
        if not table or not rate:
            reference[side] = False
            continue
        up = upright_direction(table, rate, params)
        reference[side] = up is not None
        keys_of_leg, rows = per_leg[side]
        idx = np.searchsorted(epochs, keys_of_leg)  # every key of every leg is in ``epochs``
        covered[idx] = np.maximum(covered[idx], np.minimum(rows[:, 0] / rate, params.epoch_s))
        active_fraction[idx] = np.maximum(active_fraction[idx], rows[:, 4] / np.maximum(rows[:, 0], 1))
        if up is not None:
            any_reference = True
            direction = rows[:, 1:4] / np.maximum(np.linalg.norm(rows[:, 1:4], axis=1, keepdims=True), 1e-12)
            angle = np.degrees(np.arccos(np.clip(direction @ up, -1, 1)))
            lying_votes[idx] |= angle > params.lying_angle_deg
    in_bed = lying_votes if any_reference else covered > 0
    if len(nonwear):
        lo = epochs * params.epoch_s
        off = np.zeros(m)
        for a, b in nonwear:
            off += np.clip(np.minimum(lo + params.epoch_s, b) - np.maximum(lo, a), 0, None)
        in_bed = in_bed & (off < 0.5 * params.epoch_s)
    wake_seed = in_bed & (active_fraction > params.wake_active_fraction)
    for start, end in long_movement_spans:
        first, last = int(np.floor(start / params.epoch_s)), int(np.floor(end / params.epoch_s))
        first_i, last_i = np.searchsorted(epochs, first), np.searchsorted(epochs, last, side="right")
        wake_seed[first_i:last_i] = True
    wake = wake_seed.copy()
    for shift in range(1, params.wake_spread_epochs + 1):
        wake[shift:] |= wake_seed[:-shift]
        wake[:-shift] |= wake_seed[shift:]
    asleep = in_bed & ~wake
    return EpochClassification(epochs, covered, in_bed, asleep, reference)
