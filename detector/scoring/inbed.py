"""Time in bed from leg orientation, and an activity-based sleep/wake *estimate*, per 30-s epoch.

Lying vs upright: when a person stands, walks or sits with feet down, the shank is near vertical, so
gravity lies along the shank's long axis; lying in bed it is near horizontal. The sensor's mounting is
unknown, so each leg's "upright" gravity direction is learned from the recording itself: epochs with
sustained activity, or runs of short blocks of vigorous activity (walking to and from bed), are upright; a
robust mean of their gravity directions is the upright reference, if the leg does not also lie still in
that orientation for more than a few per cent of the night (a restless bed posture is not upright). An
epoch whose mean gravity is more than ``lying_angle_deg`` from it is lying. Limits (also in
docs/scoring.md): a recording that starts and ends in bed has no walking, so there is no reference and the
whole recording counts as in bed; so does one with a long evening sitting feet down and little walking.

Sleep/wake: an in-bed epoch is wake when it holds a long movement (> 10 s: turning over, getting up)
or activity for more than ``wake_active_fraction`` of it, and its neighbours within
``wake_spread_epochs`` are wake too. This is an estimate, not polysomnography: quiet wakefulness
looks like sleep to any accelerometer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detector.scoring.epochs import COLUMNS, STAT_SCALE, table_rows
from detector.scoring.nonwear import HANDLING_S
from detector.scoring.params import DetectorParams


@dataclass(frozen=True)
class EpochClassification:
    epochs: np.ndarray  # epoch indices (t // epoch_s), sorted
    covered_s: np.ndarray  # seconds of data in each epoch (best leg)
    in_bed: np.ndarray  # bool
    asleep: np.ndarray  # bool (subset of in_bed)
    upright: dict[str, np.ndarray | None]  # per side: the upright direction (unit vector), None if not found

    @property
    def posture_reference(self) -> dict[str, bool]:
        """Per side: was an upright direction found?"""
        return {side: up is not None for side, up in self.upright.items()}


def upright_direction(
    table: Mapping[int, np.ndarray],
    blocks: Mapping[int, np.ndarray],
    rate_hz: float,
    params: DetectorParams,
    off: Sequence[tuple[float, float]] = (),
) -> np.ndarray | None:
    """The leg's gravity direction (unit vector) when upright, from its walking; None if unseen or implausible.

    ``table``: the leg's 30-s epoch rows, ``blocks``: the same sums per ``walk_block_s``
    (:class:`detector.scoring.lm.LegDetector`), ``off``: the leg's non-wear spans. Walking is looked for first in
    whole epochs (at least half active), then in short blocks: the walk from the bathroom to bed takes seconds,
    less than the 15 s of activity an epoch needs, and a night with no other walk had no reference at all.
    Each source gives clusters of one orientation, the most vigorous first; the first that is large enough to
    trust (``upright_trusted_epochs``: a day's walking) or plausible for a night (:func:`_plausibly_upright`)
    is the reference."""
    sources = (
        (_walking_epochs(table, rate_hz, params, off), params.upright_min_epochs, 1.0),
        (_walking_blocks(blocks, rate_hz, params, off), params.walk_min_blocks, params.walk_block_s / params.epoch_s),
    )
    for rows, min_rows, epochs_per_row in sources:
        for up, size in _vigorous_clusters(rows, min_rows, params):
            if size * epochs_per_row >= params.upright_trusted_epochs:
                return up
            if _plausibly_upright(up, table, rate_hz, params, off):
                return up
    return None


def _walking_epochs(
    table: Mapping[int, np.ndarray], rate_hz: float, params: DetectorParams, off: Sequence[tuple[float, float]]
) -> np.ndarray:
    """Rows of the epochs at least half covered and ``upright_active_fraction`` active, the sensor on the leg."""
    if not table:
        return np.zeros((0, COLUMNS))
    keys, rows = table_rows(table)
    full = rows[:, 0] >= 0.5 * params.epoch_s * rate_hz
    active = rows[:, 4] >= params.upright_active_fraction * np.maximum(rows[:, 0], 1)
    return rows[full & active & ~_handled(keys, params.epoch_s, off)]


def _mostly_off(keys: np.ndarray, epoch_s: float, off: Sequence[tuple[float, float]]) -> np.ndarray:
    """Epochs at least half inside the (disjoint) spans ``off``."""
    lo = keys * epoch_s
    inside = np.zeros(keys.shape[0])
    for a, b in off:
        inside += np.clip(np.minimum(lo + epoch_s, b) - np.maximum(lo, a), 0, None)
    return inside >= 0.5 * epoch_s


def _handled(keys: np.ndarray, length_s: float, off: Sequence[tuple[float, float]]) -> np.ndarray:
    """Rows touching a non-wear span or the ``HANDLING_S`` either side of it: the sensor in the hand, being
    taken off or put on, moves as vigorously as a walking leg in whatever orientation the hand holds it."""
    lo = keys * length_s
    out = np.zeros(keys.shape[0], dtype=bool)
    for a, b in off:
        out |= (lo < b + HANDLING_S) & (lo + length_s > a - HANDLING_S)
    return out


def _walking_blocks(
    blocks: Mapping[int, np.ndarray], rate_hz: float, params: DetectorParams, off: Sequence[tuple[float, float]]
) -> np.ndarray:
    """Rows of the short blocks that are walking: runs of ``walk_min_blocks`` consecutive blocks, each nearly all
    active with a mean activity envelope of at least ``walk_envelope_g``, and of one mean orientation.

    Why these are walks: the activity signal is the change of the low-passed acceleration over ``diff_lag_s``
    (0.5 s, about half a stride at a stride rate of ~1 Hz). Walking swings the shank through 60-70 degrees
    per stride (about +-30 degrees around the vertical; Winter, *Biomechanics and Motor Control of Human
    Movement*, gait kinematics), so gravity's direction changes by up to 2 g sin(30 deg) = 1 g within that lag,
    a mean envelope of ~0.6 g; 0.3 g is a swing of +-15 degrees, a shuffle. In bed the same envelope sustained
    for more than 10 s in one mean orientation is neither a leg movement (at most 10 s) nor turning over (which
    changes the orientation). Rarer in-bed look-alikes are left to the plausibility check."""
    if not blocks:
        return np.zeros((0, COLUMNS))
    keys, rows = table_rows(blocks)
    walking = walking_blocks_mask(rows, rate_hz, params) & ~_handled(keys, params.walk_block_s, off)
    directions = _unit_rows(rows[:, 1:4])
    # a run: consecutive walking blocks, each within the cluster angle of the one before
    linked = walking[:-1] & walking[1:] & (np.diff(keys) == 1)
    linked &= np.einsum("ij,ij->i", directions[:-1], directions[1:]) >= np.cos(np.radians(params.upright_cluster_deg))
    run_id = np.concatenate([[0], np.cumsum(~linked)])  # a block linked to the one before has its run id
    run_len = np.bincount(run_id)[run_id]
    return rows[walking & (run_len >= params.walk_min_blocks)]


def walking_blocks_mask(rows: np.ndarray, rate_hz: float, params: DetectorParams) -> np.ndarray:
    """Which block rows are walking on their own (see :func:`_walking_blocks`): nearly full, nearly all active,
    vigorous. The leg keeps only these blocks (:meth:`detector.scoring.epochs.EpochTable.retain_completed`)."""
    n = np.maximum(rows[:, 0], 1)
    return (
        (rows[:, 0] >= params.walk_active_fraction * params.walk_block_s * rate_hz)
        & (rows[:, 4] >= params.walk_active_fraction * n)
        & (rows[:, 5] >= params.walk_envelope_g * STAT_SCALE * n)
    )


def _vigorous_clusters(
    chosen: np.ndarray, min_rows: int, params: DetectorParams, most: int = 5
) -> Iterator[tuple[np.ndarray, int]]:
    """Robust mean directions of the rows around the most vigorous one, then around the most vigorous of the rest,
    ... (at most ``most``), each with the number of rows it holds (at least ``min_rows``).

    Seeded at the most vigorous row (largest mean activity envelope), not at the mean of all: walking swings
    the shank through ~60 degrees per stride with heel strikes of 1 g or more, more than nearly any sustained
    movement in bed, whereas a restless night can hold more active epochs in one lying position than the walk to
    and from bed has (the majority then was the bed, and lying was "upright"). The next clusters are there for
    the exception: a vigorous restless spell in bed that the plausibility check turns down."""
    directions = _unit_rows(chosen[:, 1:4])
    vigour = chosen[:, 5] / np.maximum(chosen[:, 0], 1)
    cos_limit = np.cos(np.radians(params.upright_cluster_deg))
    left = np.ones(chosen.shape[0], dtype=bool)
    for _ in range(most):
        if left.sum() < min_rows:
            return
        seed = int(np.argmax(np.where(left, vigour, -np.inf)))
        mean = directions[seed]
        close = left
        for _ in range(3):  # robust mean of the cluster around the seed
            close = left & (directions @ mean >= cos_limit)
            mean = _unit(directions[close].sum(axis=0))
        if close.sum() >= min_rows:
            yield mean, int(close.sum())
        left = left & ~close
        left[seed] = False


def _plausibly_upright(
    up: np.ndarray,
    table: Mapping[int, np.ndarray],
    rate_hz: float,
    params: DetectorParams,
    off: Sequence[tuple[float, float]],
) -> bool:
    """A night is spent lying: inside it (from the first to the last worn epoch lying with respect to ``up``) at
    most ``upright_still_max_fraction`` of the leg's still, worn epochs may be within ``lying_angle_deg`` of ``up``.

    The check exists for a recording with no walk in it (the sensor put on and taken off in bed): a restless
    leg then has vigorous epochs too, all in bed, and the most vigorous of them would make a bed posture
    "upright" -- the hours lying in that posture would leave time in bed and their movements the index. Such
    a posture alternates with the other bed postures all night (on 330 simulated in-bed-only legs a wrong
    candidate held 6-59 % of the still epochs), whereas standing and sitting inside a night are a bathroom
    trip. Before the first lying epoch and after the last the leg may sit upright for hours (an evening on the
    couch; an import keeps 30 min either side of a night): not counted. Still epochs of a sensor off the ankle
    are left out: it may lie on the night stand in any orientation. A recording of days has hours of sitting
    between its nights, but also minutes of walking: a cluster of ``upright_trusted_epochs`` is not checked."""
    keys, rows = table_rows(table)
    still = (rows[:, 0] >= 0.5 * params.epoch_s * rate_hz) & (rows[:, 4] <= params.still_active_fraction * rows[:, 0])
    worn = ~_mostly_off(keys, params.epoch_s, off)
    upright = _unit_rows(rows[:, 1:4]) @ up >= np.cos(np.radians(params.lying_angle_deg))
    lying = np.flatnonzero(worn & (rows[:, 0] > 0) & ~upright)
    if lying.size == 0:
        return True
    inside = np.zeros(keys.shape[0], dtype=bool)
    inside[lying[0] : lying[-1] + 1] = True  # the night: before it and after it the leg may sit for hours
    still &= worn & inside
    if not still.any():
        return True
    return float(upright[still].mean()) <= params.upright_still_max_fraction


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


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def classify_epochs(
    tables: Mapping[str, Mapping[int, np.ndarray]],
    rates: dict[str, float],
    ups: Mapping[str, np.ndarray | None],
    long_movement_spans: list[tuple[float, float]],
    params: DetectorParams,
    nonwear: list[tuple[float, float]] = (),  # type: ignore[assignment]
) -> EpochClassification:
    """In bed and asleep per epoch, from each leg's epoch table (see :class:`detector.scoring.lm.LegDetector`)
    and its upright direction (:func:`upright_direction`; None: unknown).

    ``nonwear``: spans when no leg's sensor was on the ankle (detector.scoring.nonwear); an epoch at least half inside
    them is neither in bed nor asleep (a sensor on a night stand says nothing about the sleeper)."""
    per_leg = {side: table_rows(table) for side, table in tables.items()}
    epochs = np.unique(np.concatenate([keys for keys, _ in per_leg.values()] or [np.zeros(0, np.int64)]))
    m = epochs.shape[0]
    covered = np.zeros(m)
    active_fraction = np.zeros(m)
    lying_votes = np.zeros(m, dtype=bool)
    upright: dict[str, np.ndarray | None] = {}
    for side, table in tables.items():
        rate = rates.get(side)
        up = upright[side] = ups.get(side) if table and rate else None
        if not table or not rate:
            continue
        keys_of_leg, rows = per_leg[side]
        idx = np.searchsorted(epochs, keys_of_leg)  # every key of every leg is in ``epochs``
        covered[idx] = np.maximum(covered[idx], np.minimum(rows[:, 0] / rate, params.epoch_s))
        active_fraction[idx] = np.maximum(active_fraction[idx], rows[:, 4] / np.maximum(rows[:, 0], 1))
        if up is not None:
            angle = np.degrees(np.arccos(np.clip(_unit_rows(rows[:, 1:4]) @ up, -1, 1)))
            lying_votes[idx] |= angle > params.lying_angle_deg
    in_bed = lying_votes if any(up is not None for up in upright.values()) else covered > 0
    in_bed = in_bed & ~_mostly_off(epochs, params.epoch_s, nonwear)
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
    return EpochClassification(epochs, covered, in_bed, asleep, upright)
