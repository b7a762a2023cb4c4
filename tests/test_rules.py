"""Boundary tests for the event-level scoring rules (plm.rules); one test per rule edge."""

from __future__ import annotations

import json
import math

import pytest

from plm.rules import (
    AASM,
    RULESETS,
    WASM2016,
    EventScorer,
    Gap,
    LegMovement,
    RuleSet,
    score_events,
)

UNIX_BASE = 1_700_000_000.3  # a unix-time origin whose fraction is not exact in binary


def left_train(onsets: list[float], duration: float = 2.0, side: str = "left") -> list[LegMovement]:
    return [LegMovement(onset, duration, side) for onset in onsets]


def cumulative(start: float, imis: list[float]) -> list[float]:
    onsets = [start]
    for imi in imis:
        onsets.append(onsets[-1] + imi)
    return onsets


# --------------------------------------------------------------------------- IMI bounds
@pytest.mark.parametrize("base", [0.0, UNIX_BASE])
@pytest.mark.parametrize(
    ("imi", "expected_plm"),
    [(10.0, 4), (90.0, 4), (9.99, 0), (90.01, 0), (45.0, 4)],
)
def test_imi_bounds_are_inclusive_and_exact(base: float, imi: float, expected_plm: int) -> None:
    score = score_events(left_train(cumulative(base, [imi] * 3)))
    assert score.clm_count == 4
    assert score.plm_count == expected_plm
    assert score.series_count == (1 if expected_plm else 0)
    assert all(abs(value - imi) < 1e-9 for value in score.imis)


def test_imi_rounding_absorbs_unix_time_round_off() -> None:
    onsets = [10.3, 20.3, 30.3, 40.3]  # e.g. parsed from a CSV in decimal seconds
    # differences of decimal floats are not exactly 10.0 ...
    assert 40.3 - 30.3 < 10.0
    # ... but the rule treats them as exactly 10.0 (inclusive)
    score = score_events(left_train(onsets))
    assert score.plm_count == 4
    assert score.imis == (10.0, 10.0, 10.0)


@pytest.mark.parametrize(("count", "expected_plm"), [(3, 0), (4, 4), (5, 5)])
def test_series_needs_four_clms(count: int, expected_plm: int) -> None:
    score = score_events(left_train([20.0 * k for k in range(count)]))
    assert score.plm_count == expected_plm
    assert all(m.plm == (expected_plm > 0) for m in score.movements)


def test_one_bad_imi_splits_the_run_into_separate_evaluations() -> None:
    # 4 good (20 s), then 9.99 s, then 4 good: the short-IMI CLM starts the second series
    onsets = [*cumulative(0.0, [20.0] * 3), *cumulative(69.99, [20.0] * 3)]
    score = score_events(left_train(onsets))
    assert score.plm_count == 8
    assert [(s.start, s.count) for s in score.series] == [(0.0, 4), (69.99, 4)]
    assert score.movements[4].imi == pytest.approx(9.99)
    assert score.movements[4].series_id == 1


def test_clm_after_short_imi_may_start_new_series() -> None:
    """Documented open-point choice: the interval before a series' first member does not matter."""
    onsets = [0.0, 20.0, 40.0, 45.0, 65.0, 85.0, 105.0]
    score = score_events(left_train(onsets))
    assert [m.plm for m in score.movements] == [False, False, False, True, True, True, True]
    assert score.series[0].start == 45.0


def test_long_imi_ends_series_and_next_clm_can_start_another() -> None:
    onsets = [*cumulative(0.0, [30.0] * 3), *cumulative(90.0 + 91.0, [30.0] * 3)]
    score = score_events(left_train(onsets))
    assert score.series_count == 2
    assert score.plm_count == 8
    assert 91.0 in score.imis  # the out-of-range IMI is still an IMI between consecutive CLMs


# --------------------------------------------------------------------------- durations
@pytest.mark.parametrize(("duration", "kind", "candidate"), [(10.0, "lm", True), (10.01, "long", False)])
def test_monolateral_max_duration(duration: float, kind: str, candidate: bool) -> None:
    score = score_events([LegMovement(UNIX_BASE, duration, "right")])
    (movement,) = score.movements
    assert (movement.kind, movement.candidate, movement.side) == (kind, candidate, "right")
    assert score.long_count == (kind == "long")


@pytest.mark.parametrize(("duration", "is_lm"), [(0.5, True), (0.49, False)])
def test_minimum_lm_duration(duration: float, is_lm: bool) -> None:
    score = score_events([LegMovement(3.0, duration, "left")])
    assert len(score.movements) == int(is_lm)
    assert score.short_count == int(not is_lm)
    assert score.lm_count == int(is_lm)


def test_short_twitch_is_not_an_lm_and_does_not_break_a_series() -> None:
    movements = [*left_train([0.0, 20.0, 40.0, 60.0]), LegMovement(30.0, 0.3, "left")]
    score = score_events(movements)
    assert score.short_count == 1
    assert score.plm_count == 4


@pytest.mark.parametrize(("gap", "merged"), [(0.49, True), (0.5, False)])
def test_same_leg_merge_threshold(gap: float, merged: bool) -> None:
    first = LegMovement(UNIX_BASE, 1.0, "left")
    second = LegMovement(first.offset + gap, 1.0, "left")
    score = score_events([first, second])
    if merged:
        (movement,) = score.movements
        assert movement.duration == pytest.approx(2.0 + gap)
        assert movement.parts == 1  # same-leg merging makes one monolateral movement
    else:
        assert len(score.movements) == 2


def test_same_leg_merge_of_two_shorts_makes_an_lm() -> None:
    score = score_events([LegMovement(0.0, 0.3, "left"), LegMovement(0.6, 0.3, "left")])
    assert score.short_count == 0
    assert score.movements[0].duration == pytest.approx(0.9)


def test_merged_movement_longer_than_ten_seconds_is_long() -> None:
    score = score_events([LegMovement(0.0, 6.0, "left"), LegMovement(6.2, 6.0, "left")])
    assert [m.kind for m in score.movements] == ["long"]


# --------------------------------------------------------------------------- bilateral (WASM)
@pytest.mark.parametrize(("end", "kind"), [(15.0, "lm"), (15.01, "long")])
def test_bilateral_max_duration(end: float, kind: str) -> None:
    score = score_events([LegMovement(0.0, 8.0, "left"), LegMovement(7.0, end - 7.0, "right")])
    (movement,) = score.movements
    assert movement.side == "bilateral"
    assert movement.parts == 2
    assert movement.kind == kind
    assert movement.candidate == (kind == "lm")


@pytest.mark.parametrize(("gap", "merged"), [(0.49, True), (0.5, False), (-1.0, True)])
def test_wasm_bilateral_merge_window(gap: float, merged: bool) -> None:
    first = LegMovement(100.0, 2.0, "left")
    score = score_events([first, LegMovement(first.offset + gap, 2.0, "right")])
    assert len(score.movements) == (1 if merged else 2)


def alternating_parts(count: int) -> list[LegMovement]:
    """``count`` 2 s parts alternating legs, each overlapping the previous one by 0.1 s."""
    return [LegMovement(1.9 * k, 2.0, "left" if k % 2 == 0 else "right") for k in range(count)]


@pytest.mark.parametrize(("parts", "candidate"), [(4, True), (5, False)])
def test_bilateral_part_limit(parts: int, candidate: bool) -> None:
    score = score_events(alternating_parts(parts))
    (movement,) = score.movements
    assert (movement.parts, movement.kind, movement.candidate) == (parts, "lm", candidate)
    assert score.lm_count == 1
    assert score.clm_count == int(candidate)


def test_five_part_bilateral_breaks_a_series() -> None:
    five = [LegMovement(m.onset + 60.0, m.duration, m.side) for m in alternating_parts(5)]
    score = score_events([*left_train([0.0, 20.0, 40.0]), *five, *left_train([80.0, 100.0, 120.0])])
    assert score.plm_count == 0
    assert score.movements[3].imi is None and score.movements[4].imi is None


# --------------------------------------------------------------------------- breaks
def test_long_movement_in_the_middle_splits_evaluation() -> None:
    clms = left_train([0.0, 20.0, 40.0, 60.0, 100.0, 120.0, 140.0, 160.0])
    score = score_events([*clms, LegMovement(80.0, 12.0, "right")])
    assert score.long_count == 1
    assert score.series_count == 2
    assert score.plm_count == 8
    after_long = next(m for m in score.movements if m.onset == 100.0)
    assert after_long.imi is None
    # with only three CLMs on one side of the long movement, that side scores nothing
    score = score_events([*clms[1:], LegMovement(80.0, 12.0, "right")])
    assert score.plm_count == 4
    assert score.series[0].start == 100.0


def test_a_data_gap_in_the_rest_between_two_clms_leaves_their_link() -> None:
    """A hole is missing evidence, not a break: the IMI is still measured between the onsets seen."""
    movements = left_train([0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0])
    assert score_events(movements).plm_count == 7
    score = score_events(movements, gaps=[Gap(63.0, 79.0)])  # 1 s after the 60-s movement ends, 1 s before 80
    assert score.plm_count == 7 and [s.count for s in score.series] == [7]
    assert score.movements[4].imi == 20.0
    # a hole that swallowed a movement: the IMI across it is 40 s, still in range
    score = score_events([m for m in movements if m.onset != 60.0], gaps=[Gap(55.0, 70.0)])
    assert score.plm_count == 6 and score.movements[3].imi == 40.0
    # gaps before the first or after the last movement break nothing
    assert score_events(movements, gaps=[Gap(-10.0, -1.0), Gap(123.0, 500.0)]).plm_count == 7


@pytest.mark.parametrize(
    ("gap", "touched", "clear"),
    [
        # cuts into the 60-s movement (60-62 s): its end is unknown
        ((61.0, 70.0), 60.0, (62.5, 70.0)),
        # starts 0.4 s after its end: it may have gone on (a rest < 0.5 s merges); 0.5 s after is a rest
        ((62.4, 70.0), 60.0, (62.5, 70.0)),
        # ends 0.4 s before the next onset: that movement may have started earlier
        ((70.0, 79.6), 80.0, (70.0, 79.5)),
        # ends inside it: its onset is unknown
        ((50.0, 61.0), 60.0, (50.0, 59.5)),
    ],
)
def test_a_data_gap_touching_a_movement_breaks_both_its_links(
    gap: tuple[float, float], touched: float, clear: tuple[float, float]
) -> None:
    movements = left_train([0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0])
    score = score_events(movements, gaps=[Gap(*gap)])
    by_onset = {m.onset: m for m in score.movements}
    assert by_onset[touched].imi is None and by_onset[touched + 20.0].imi is None
    assert not by_onset[touched].plm
    assert score.plm_count == 4  # the side with four CLMs still forms a series, the side with three not
    assert score_events(movements, gaps=[Gap(*clear)]).plm_count == 8


def test_a_gap_on_one_leg_hides_that_legs_movements_only() -> None:
    """A sensor that drops out on one leg: the other leg's movements are scored as a one-leg recording
    scores them, a bilateral movement included, unless the gap touches its part on the silent leg."""
    movements = [*left_train([0.0, 20.0, 40.0]), LegMovement(60.0, 2.0, "left"), LegMovement(61.0, 7.0, "right")]
    movements += left_train([80.0, 100.0])
    assert score_events(movements).plm_count == 6
    # the right leg is lost for a minute from 63 s on: its movement at 61-68 s is cut, so the bilateral
    # movement's extent is unknown
    assert score_events(movements, gaps=[Gap(63.0, 123.0, "right")]).plm_count == 0
    # the left leg is lost 63-65 s: clear of its part (60-62 s); the right leg saw the rest of it
    assert score_events(movements, gaps=[Gap(63.0, 65.0, "left")]).plm_count == 6
    # lost for good from 10 s on: the left leg's series is scored on its own, as with one sensor
    one_leg = [m for m in movements if m.side == "left"]
    assert score_events(one_leg, gaps=[Gap(10.0, 500.0, "right")]).plm_count == 6
    assert score_events(one_leg, gaps=[Gap(10.0, 500.0)]).plm_count == 0  # every leg: nothing was seen


def test_an_interruption_ends_the_series_across_it() -> None:
    """Out of bed is not missing data: the series ends, as the non-CLM movements of getting up end it."""
    movements = left_train([0.0, 20.0, 40.0, 60.0, 120.0, 140.0, 160.0])
    assert score_events(movements).plm_count == 7  # the 60-s IMI is in range
    assert score_events(movements, gaps=[Gap(65.0, 115.0)]).plm_count == 7  # missing data in the rest
    score = score_events(movements, gaps=[Gap(65.0, 115.0, ends_series=True)])
    assert score.plm_count == 4 and score.movements[4].imi is None


# --------------------------------------------------------------------------- AASM
@pytest.mark.parametrize(("imi", "expected_plm"), [(5.0, 4), (4.99, 0), (90.0, 4), (90.01, 0)])
def test_aasm_imi_bounds(imi: float, expected_plm: int) -> None:
    assert score_events(left_train(cumulative(UNIX_BASE, [imi] * 3), 1.0), AASM).plm_count == expected_plm


@pytest.mark.parametrize(("delay", "merged"), [(4.9, True), (4.99, True), (5.0, False)])
def test_aasm_bilateral_onset_window(delay: float, merged: bool) -> None:
    movements = [LegMovement(10.0, 2.0, "left"), LegMovement(10.0 + delay, 2.0, "right")]
    assert len(score_events(movements, AASM).movements) == (1 if merged else 2)
    # WASM combines only overlapping / < 0.5 s apart movements
    assert len(score_events(movements, WASM2016).movements) == 2


def test_aasm_part_longer_than_ten_seconds_makes_bilateral_long() -> None:
    score = score_events([LegMovement(0.0, 10.5, "left"), LegMovement(1.0, 2.0, "right")], AASM)
    (movement,) = score.movements
    assert (movement.side, movement.kind) == ("bilateral", "long")
    # WASM: only the combined 15 s limit applies
    assert score_events([LegMovement(0.0, 10.5, "left"), LegMovement(1.0, 2.0, "right")]).movements[0].kind == "lm"


def test_rulesets_registry() -> None:
    assert RULESETS == {"wasm2016": WASM2016, "aasm": AASM}
    assert (WASM2016.min_imi_s, AASM.min_imi_s, WASM2016.max_imi_s) == (10.0, 5.0, 90.0)
    with pytest.raises(ValueError, match="min_imi_s"):
        RuleSet(name="bad", min_imi_s=100.0)


# --------------------------------------------------------------------------- indices and output
def test_indices_and_to_dict() -> None:
    movements = [*left_train([0.0, 20.0, 40.0, 60.0]), *left_train([300.0, 400.0])]
    score = score_events(movements)
    assert (score.clm_count, score.plm_count, score.series_count) == (6, 4, 1)
    assert score.periodicity_index == pytest.approx(4 / 6)
    assert score.plm_index(0.5) == pytest.approx(8.0)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError):
            score.plm_index(bad)
    data = json.loads(json.dumps(score.to_dict(hours=2.0)))
    assert data["plm_index"] == pytest.approx(2.0)
    assert data["series"] == [{"series_id": 0, "start": 0.0, "end": 62.0, "count": 4}]
    assert data["events"][0] == {
        "onset": 0.0,
        "duration": 2.0,
        "side": "left",
        "kind": "lm",
        "candidate": True,
        "plm": True,
        "parts": 1,
        "imi": None,
        "series_id": 0,
    }
    assert "plm_index" not in score.to_dict()


def test_empty_input() -> None:
    score = score_events([])
    assert (score.lm_count, score.clm_count, score.plm_count, score.periodicity_index) == (0, 0, 0, None)


@pytest.mark.parametrize(
    "args",
    [
        (0.0, 0.0, "left"),
        (0.0, -1.0, "left"),
        (math.nan, 1.0, "left"),
        (0.0, math.inf, "left"),
        (0.0, 1.0, "both"),
        (0.0, 1.0, "Left"),
    ],
)
def test_leg_movement_validation(args: tuple) -> None:
    with pytest.raises(ValueError):
        LegMovement(*args)


def test_gap_validation() -> None:
    with pytest.raises(ValueError):
        Gap(5.0, 5.0)


# --------------------------------------------------------------------------- streaming contract
def test_streaming_emits_once_the_merge_windows_close_and_flips_plm() -> None:
    scorer = EventScorer(WASM2016, keep_history=False)
    scorer.add(LegMovement(0.0, 2.0, "left"))
    assert scorer.advance(2.49) == []
    (first,) = scorer.advance(2.5)  # offset + 0.5 s: same-leg and bilateral windows are closed
    assert (first.onset, first.plm, first.imi) == (0.0, False, None)
    for onset in (20.0, 40.0):
        scorer.add(LegMovement(onset, 2.0, "left"))
        (emitted,) = scorer.advance(onset + 2.5)
        assert not emitted.plm and emitted.imi == 20.0
    scorer.add(LegMovement(60.0, 2.0, "left"))
    flipped = scorer.advance(62.5)
    assert [(m.onset, m.plm, m.series_id) for m in flipped] == [(o, True, 0) for o in (0.0, 20.0, 40.0, 60.0)]
    assert scorer.open_series is not None and scorer.open_series.count == 4
    assert scorer.pop_closed_series() == []
    scorer.advance(60.0 + 91.0)  # no CLM can continue the series any more
    assert [s.count for s in scorer.pop_closed_series()] == [4]
    final = scorer.finish()
    assert (final.plm_count, final.series_count, final.movements) == (4, 1, ())


def test_aasm_streaming_waits_for_the_onset_window() -> None:
    scorer = EventScorer(AASM)
    scorer.add(LegMovement(0.0, 2.0, "left"))
    assert scorer.advance(4.99) == []
    assert [m.onset for m in scorer.advance(5.0)] == [0.0]


def test_contract_violations_are_rejected_without_losing_state() -> None:
    scorer = EventScorer()
    scorer.add(LegMovement(10.0, 2.0, "left"))
    with pytest.raises(ValueError, match="onset order"):
        scorer.add(LegMovement(5.0, 2.0, "left"))
    scorer.add(LegMovement(5.0, 2.0, "right"))  # the other leg may lag behind
    scorer.advance(20.0)
    with pytest.raises(ValueError, match="watermark"):
        scorer.add(LegMovement(19.0, 1.0, "right"))
    with pytest.raises(ValueError, match="watermark"):
        scorer.add_gap(Gap(19.0, 25.0))
    score = scorer.finish()
    assert [m.onset for m in score.movements] == [5.0, 10.0]
