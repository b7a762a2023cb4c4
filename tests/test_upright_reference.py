"""The leg's upright reference (detector.scoring.inbed.upright_direction): found from a walk of seconds, and
refused when the only candidates are a restless leg's bed postures (a recording with no walk in it)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.scoring.epochs import STAT_SCALE, EpochTable
from detector.scoring.inbed import upright_direction
from detector.scoring.params import DetectorParams
from detector.scoring.scorer import NightScorer

RATE = 50.0
SHANK = np.array([0.9, 0.1, 0.42])  # the sensor's axis along the shank: gravity when standing
SHANK = SHANK / np.linalg.norm(SHANK)
LYING = np.array([0.05, -0.95, 0.3])  # shank horizontal, on the back
LYING = LYING / np.linalg.norm(LYING)
ASIDE = np.cross(SHANK, LYING)  # a third axis: walking swings the shank in the plane of SHANK and ASIDE


def _rotate(a: np.ndarray, b: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Unit vectors at ``angle`` (radians) from ``a`` towards ``b`` (b perpendicular to a)."""
    return np.cos(angle)[:, None] * a + np.sin(angle)[:, None] * b


def _night(walk_s: float, lying_min: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A minute sitting (the sensor put on), a short walk to bed (shank swinging +-25 degrees at 0.9 strides/s,
    heel strikes), lying down, then lying still with sensor noise and a heartbeat, a leg movement a minute."""
    rng = np.random.default_rng(seed)
    sit = np.tile(_rotate(SHANK, LYING, np.radians([10.0])), (int(60 * RATE), 1))
    walk_t = np.arange(0.0, walk_s, 1 / RATE)
    swing = np.radians(25.0) * np.sin(2 * np.pi * 0.9 * walk_t)
    walk = _rotate(SHANK, ASIDE, swing)
    strike = np.exp(-((walk_t * 0.9) % 1.0) / 0.03 * 0.9) * 0.8
    walk += strike[:, None] * SHANK
    down_t = np.arange(0.0, 3.0, 1 / RATE)
    down = _rotate(SHANK, LYING, np.pi / 2 * np.clip(down_t / 3.0, 0, 1))
    lie_t = np.arange(0.0, lying_min * 60, 1 / RATE)
    lie = np.tile(LYING, (lie_t.shape[0], 1)) + 0.001 * np.sin(2 * np.pi * 1.1 * lie_t)[:, None] * SHANK
    for onset in np.arange(30.0, lie_t[-1] - 10, 60.0):  # 2-s leg movements: the foot lifts the shank 15 degrees
        k = (lie_t >= onset) & (lie_t < onset + 2.0)
        lift = np.radians(15.0) * np.sin(np.pi * (lie_t[k] - onset) / 2.0)
        lie[k] = _rotate(LYING, SHANK, lift)
    xyz = np.concatenate([sit, walk, down, lie])
    xyz += rng.normal(0, 0.002, xyz.shape)
    t = 1_700_000_000.0 + np.arange(xyz.shape[0]) / RATE
    return t, xyz


def _reference(t: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray | None, dict]:
    scorer = NightScorer(sides=("left",))
    scorer.feed("left", t, xyz)
    summary = scorer.finish()
    return scorer.upright_direction("left"), summary.to_dict()


def test_a_twenty_second_walk_to_bed_is_enough_for_the_upright_reference() -> None:
    """The walk from the bathroom to bed fills no 30-s epoch half with activity; its 5-s blocks do."""
    up, summary = _reference(*_night(walk_s=20.0, lying_min=40))
    assert up is not None and summary["posture_reference"] == {"left": True}
    assert float(up @ SHANK) > np.cos(np.radians(10))
    assert summary["time_in_bed_h"] < 40.5 / 60  # the walk and lying down are not time in bed


def test_without_the_walk_there_is_no_reference_and_the_whole_recording_is_in_bed() -> None:
    t, xyz = _night(walk_s=20.0, lying_min=40)
    start = int(85.0 * RATE)  # the recording starts lying: the 2-s leg movements are all there is
    up, summary = _reference(t[start:], xyz[start:])
    assert up is None and summary["posture_reference"] == {"left": False}


def _rows(direction: np.ndarray, count: int, samples: int, active: float, envelope_g: float) -> np.ndarray:
    g = direction / np.linalg.norm(direction)
    row = [
        samples,
        *np.rint(g * samples * STAT_SCALE),
        round(active * samples),
        round(envelope_g * samples * STAT_SCALE),
    ]
    return np.tile(np.array(row, dtype=np.int64), (count, 1))


def _table(parts: list[tuple[int, np.ndarray]]) -> dict[int, np.ndarray]:
    table: dict[int, np.ndarray] = {}
    for first, rows in parts:
        table.update({first + i: row for i, row in enumerate(rows)})
    return table


EPOCH = int(30 * RATE)


ON_SIDE = np.cross(LYING, SHANK)  # the shank still horizontal, rolled 90 degrees about its axis


@pytest.mark.parametrize("still_in_that_posture", [0.3, 0.06])
def test_a_restless_bed_posture_is_not_taken_for_upright(still_in_that_posture: float) -> None:
    """No walk: three restless epochs in one bed posture are the most vigorous activity of the night. The leg
    also lies still in that posture, between spells in another, for a share of the night that no standing or
    sitting inside a night holds: refused."""
    in_posture = round(still_in_that_posture * 100)
    parts = [(0, _rows(LYING, 3, EPOCH, 0.7, 0.25))]  # restless spell
    for hour in range(6):  # turning between the two postures every hour
        first = 10 + 120 * hour
        parts += [(first, _rows(LYING, in_posture, EPOCH, 0.0, 0.002))]
        parts += [(first + in_posture, _rows(ON_SIDE, 100 - in_posture, EPOCH, 0.0, 0.002))]
    assert upright_direction(_table(parts), {}, RATE, DetectorParams()) is None


def test_an_evening_sitting_before_bed_does_not_veto_the_walk() -> None:
    """Sitting feet down for two hours before the walk to bed, and lying up after getting up: upright and
    still, but before and after the night, not inside it (an import keeps 30 min of each around a night)."""
    walk_blocks = _table([(250, _rows(SHANK, 3, int(5 * RATE), 1.0, 0.5))])
    table = _table(
        [
            (0, _rows(SHANK * 0.9 + LYING * 0.3, 240, EPOCH, 0.03, 0.003)),  # the couch
            (241, _rows(LYING, 960, EPOCH, 0.01, 0.003)),  # the night
            (1201, _rows(SHANK, 60, EPOCH, 0.02, 0.003)),  # breakfast
        ]
    )
    up = upright_direction(table, walk_blocks, RATE, DetectorParams())
    assert up is not None and float(up @ SHANK) > np.cos(np.radians(20))


def test_a_day_of_walking_is_trusted_though_the_leg_sat_upright_for_hours() -> None:
    """A recording of a day and a night: hours sitting feet down (upright and still), between nights too, and
    enough walking epochs that the plausibility check for a night does not apply (nights are split by posture)."""
    table = _table(
        [
            (0, _rows(LYING, 900, EPOCH, 0.02, 0.003)),  # a night
            (900, _rows(SHANK, 12, EPOCH, 0.9, 0.5)),  # 6 min of walking
            (920, _rows(SHANK * 0.9 + LYING * 0.2, 1500, EPOCH, 0.02, 0.003)),  # sitting
            (2500, _rows(LYING, 900, EPOCH, 0.02, 0.003)),  # the next night
        ]
    )
    up = upright_direction(table, {}, RATE, DetectorParams())
    assert up is not None and float(up @ SHANK) > np.cos(np.radians(10))


def test_a_sensor_left_upright_on_the_night_stand_does_not_veto_the_walk() -> None:
    """Still epochs of a sensor off the ankle say nothing about the leg: they are left out of the check
    (taken off at 3 a.m., standing on its end on the night stand, put back on at 5)."""
    walk_blocks = _table([(0, _rows(SHANK, 4, int(5 * RATE), 1.0, 0.5))])
    table = _table(
        [
            (0, _rows(SHANK, 1, EPOCH, 0.6, 0.3)),
            (1, _rows(LYING, 300, EPOCH, 0.01, 0.003)),
            (301, _rows(SHANK, 240, EPOCH, 0.0, 0.001)),  # on the night stand
            (541, _rows(LYING, 300, EPOCH, 0.01, 0.003)),
        ]
    )
    off = [(301 * 30.0, 541 * 30.0)]
    params = DetectorParams()
    assert upright_direction(table, walk_blocks, RATE, params) is None  # as if worn: 29 % upright and still
    up = upright_direction(table, walk_blocks, RATE, params, off)
    assert up is not None and float(up @ SHANK) > np.cos(np.radians(10))


def test_taking_the_sensor_off_is_not_walking() -> None:
    """Two vigorous epochs of the hand taking the sensor off (any orientation) just before its non-wear span are
    not the leg's walking: the 20-s walk to bed in blocks is the reference."""
    walk_blocks = _table([(0, _rows(SHANK, 4, int(5 * RATE), 1.0, 0.5))])
    in_hand = np.array([-0.2, 0.3, -0.93])
    table = _table(
        [
            (0, _rows(SHANK, 1, EPOCH, 0.6, 0.3)),
            (1, _rows(LYING, 300, EPOCH, 0.01, 0.003)),
            (301, _rows(in_hand, 2, EPOCH, 0.8, 0.6)),
            (303, _rows(ON_SIDE, 300, EPOCH, 0.0, 0.001)),  # on the night stand until the end
        ]
    )
    off = [(303 * 30.0, 603 * 30.0)]
    params = DetectorParams()
    without = upright_direction(table, walk_blocks, RATE, params)
    assert without is not None and float(without @ in_hand / np.linalg.norm(in_hand)) > 0.9  # what it was before
    up = upright_direction(table, walk_blocks, RATE, params, off)
    assert up is not None and float(up @ SHANK) > np.cos(np.radians(10))


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 50)), min_size=1, max_size=40),
    st.lists(st.integers(1, 9), min_size=1, max_size=10),
)
def test_the_rows_kept_do_not_depend_on_the_chunking(steps, cuts) -> None:
    """EpochTable.retain_completed checks a row once, when complete: fed in any chunks, the table is the same."""
    keys = np.cumsum([k for k, _ in steps]).astype(np.int64)
    sums = np.zeros((keys.shape[0], 6), dtype=np.int64)
    sums[:, 5] = [v for _, v in steps]

    def keep(rows: np.ndarray) -> np.ndarray:
        return rows[:, 5] % 3 != 0

    def fed(sizes: list[int]) -> EpochTable:
        table, i = EpochTable(capacity=2), 0
        for size in itertools.cycle(sizes):
            if i >= keys.shape[0]:
                return table
            k, s = keys[i : i + size], sums[i : i + size]
            first = np.flatnonzero(np.diff(k, prepend=k[0] - 1))  # merge repeated keys as epoch_sums does
            table.add(k[first], np.add.reduceat(s, first))
            table.retain_completed(keep)
            i += size
        raise AssertionError  # unreachable: cycle is endless

    whole, chunked = fed([keys.shape[0]]), fed(cuts)
    assert whole.epochs.tolist() == chunked.epochs.tolist()
    assert whole.rows.tolist() == chunked.rows.tolist()
    assert all(keep(whole.rows[:-1]))
