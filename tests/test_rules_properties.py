"""Property-based tests for plm.rules: invariances and streaming == offline.

Times are drawn on a 1/8 s grid so that onsets, offsets, shifts and differences are exact in binary
floating point; rule thresholds (0.5, 5, 10, 15, 90 s) all lie on that grid, so boundaries get hit.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from plm.rules import (
    AASM,
    RULESETS,
    SIDES,
    WASM2016,
    EventScore,
    EventScorer,
    Gap,
    LegMovement,
    RuleSet,
    ScoredMovement,
    score_events,
)

GRID = 8  # ticks per second

ticks = st.integers(min_value=0, max_value=GRID * 300)
durations = st.one_of(
    st.integers(min_value=1, max_value=GRID * 16),
    st.sampled_from([3, 4, 5, GRID * 10, GRID * 10 + 1, GRID * 15, GRID * 15 + 1]),  # around the limits
)
movement_lists = st.lists(
    st.builds(lambda t, d, s: LegMovement(t / GRID, d / GRID, s), ticks, durations, st.sampled_from(SIDES)),
    max_size=30,
)
gaps = st.builds(
    lambda t, d, side, ends: Gap(t / GRID, (t + d) / GRID, side, ends),
    ticks,
    st.integers(min_value=1, max_value=GRID * 20),
    st.sampled_from([None, *SIDES]),
    st.booleans(),
)
gap_lists = st.lists(gaps, max_size=3)
rule_sets = st.sampled_from(list(RULESETS.values()))
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def shifted_back(score: EventScore, shift: float) -> EventScore:
    return replace(
        score,
        movements=tuple(replace(m, onset=m.onset - shift) for m in score.movements),
        series=tuple(replace(s, start=s.start - shift, end=s.end - shift) for s in score.series),
    )


@PROPERTY_SETTINGS
@given(movement_lists, gap_lists, rule_sets, st.integers(min_value=-(10**6), max_value=2 * 10**9))
def test_invariant_under_time_shift(movements: list[LegMovement], gaps: list[Gap], rules: RuleSet, shift: int) -> None:
    expected = score_events(movements, rules, gaps)
    moved = score_events(
        [replace(m, onset=m.onset + shift) for m in movements],
        rules,
        [replace(g, start=g.start + shift, end=g.end + shift) for g in gaps],
    )
    assert shifted_back(moved, shift) == expected


@PROPERTY_SETTINGS
@given(movement_lists, gap_lists, rule_sets)
def test_invariant_under_swapping_legs(movements: list[LegMovement], gaps: list[Gap], rules: RuleSet) -> None:
    mirror = {"left": "right", "right": "left", "bilateral": "bilateral"}
    expected = score_events(movements, rules, gaps)
    swapped = score_events(
        [replace(m, side=mirror[m.side]) for m in movements],
        rules,
        [replace(g, side=None if g.side is None else mirror[g.side]) for g in gaps],
    )
    assert swapped.movements == tuple(replace(m, side=mirror[m.side]) for m in expected.movements)
    assert replace(swapped, movements=expected.movements) == expected


@PROPERTY_SETTINGS
@given(movement_lists, gap_lists, rule_sets, st.sampled_from(SIDES), st.booleans(), st.booleans())
def test_far_away_movement_changes_nothing_nearby(
    movements: list[LegMovement], gaps: list[Gap], rules: RuleSet, side: str, after: bool, with_gap: bool
) -> None:
    expected = score_events(movements, rules, gaps)
    ends = [m.offset for m in movements] + [g.end for g in gaps]
    starts = [m.onset for m in movements] + [g.start for g in gaps]
    far = (
        LegMovement(max(ends, default=0.0) + 100.0, 2.0, side)
        if after
        else LegMovement(min(starts, default=0.0) - 102.0, 2.0, side)
    )
    extra_gaps = [Gap(far.offset + 1.0, far.offset + 2.0)] if with_gap and not after else []
    extra_gaps += [Gap(far.onset - 2.0, far.onset - 1.0)] if with_gap and after else []
    score = score_events([*movements, far], rules, [*gaps, *extra_gaps])
    nearby = [m for m in score.movements if m.onset != far.onset]
    if nearby and not after:
        # the far CLM may become the first nearby CLM's predecessor: an out-of-range IMI, nothing else
        first = nearby[0]
        assert first.imi is None or first.imi > rules.max_imi_s
        nearby[0] = replace(first, imi=expected.movements[0].imi)
    assert tuple(nearby) == expected.movements
    assert score.series == expected.series  # a lone far movement never joins or forms a series
    (lone,) = (m for m in score.movements if m.onset == far.onset)
    assert (lone.plm, lone.candidate, lone.side) == (False, True, side)
    assert score.clm_count == expected.clm_count + 1
    assert (score.plm_count, score.short_count) == (expected.plm_count, expected.short_count)


@PROPERTY_SETTINGS
@given(movement_lists, gap_lists, gaps, rule_sets)
def test_a_gap_never_adds_a_plm_and_one_in_the_rest_changes_nothing(
    movements: list[LegMovement], known: list[Gap], gap: Gap, rules: RuleSet
) -> None:
    """A gap only ever removes links (runs split, never join); missing data that touches no movement on
    its leg -- a rest of >= 0.5 s on both sides -- and lies in a rest of both legs removes none."""
    expected = score_events(movements, rules, known)
    score = score_events(movements, rules, [*known, gap])
    assert score.plm_count <= expected.plm_count
    assert score.clm_count == expected.clm_count and score.lm_count == expected.lm_count
    merge = rules.same_leg_merge_s
    clear = not gap.ends_series and all(
        gap.start - m.offset >= merge or m.onset - gap.end >= merge for m in movements if gap.side in (None, m.side)
    )
    if clear:
        assert score == expected


@st.composite
def streaming_runs(draw: st.DrawFn) -> tuple[RuleSet, list[LegMovement], list[Gap], list[tuple[str, object]]]:
    """A random schedule of add/add_gap/advance calls that keeps the caller's watermark promise."""
    rules = draw(rule_sets)
    movements = draw(movement_lists)
    gaps = sorted(draw(gap_lists), key=lambda g: g.start)
    queues = {side: sorted((m for m in movements if m.side == side), key=lambda m: m.onset) for side in SIDES}
    watermark = -math.inf
    schedule: list[tuple[str, object]] = []
    while queues["left"] or queues["right"] or gaps:
        choices = [side for side in SIDES if queues[side]] + (["gap"] if gaps else []) + ["advance"]
        choice = draw(st.sampled_from(choices))
        if choice == "gap":
            schedule.append(("gap", gaps.pop(0)))
        elif choice == "advance":
            bound = min([q[0].onset for q in queues.values() if q] + [g.start for g in gaps[:1]])
            base = max(watermark, 0.0)
            watermark = max(watermark, min(bound, base + draw(st.integers(0, GRID * 40)) / GRID))
            schedule.append(("advance", watermark))
        else:
            schedule.append(("add", queues[choice].pop(0)))
    return rules, movements, gaps_all(schedule), schedule


def gaps_all(schedule: list[tuple[str, object]]) -> list[Gap]:
    return [item for kind, item in schedule if kind == "gap"]  # type: ignore[misc]


def window_s(rules: RuleSet) -> float:
    return rules.bilateral_merge_s if rules.bilateral == "offset" else rules.bilateral_onset_window_s


def run_schedule(
    scorer: EventScorer, schedule: list[tuple[str, object]], final: EventScore
) -> dict[float, ScoredMovement]:
    """Play a schedule; return the last emitted version per onset and check emission timeliness."""
    emitted: dict[float, ScoredMovement] = {}
    for kind, item in schedule:
        if kind == "add":
            scorer.add(item)  # type: ignore[arg-type]
        elif kind == "gap":
            scorer.add_gap(item)  # type: ignore[arg-type]
        else:
            watermark: float = item  # type: ignore[assignment]
            for movement in scorer.advance(watermark):
                emitted[movement.onset] = movement
            # every movement whose merge windows have closed, and those of all movements before it (its
            # IMI and series depend on them), must have been emitted by now
            # (AASM merges by onset distance, which can chain through a later movement on the other leg;
            # the scorer then waits for the chain, so only its result, not its timing, is checked there)
            due = []
            for m in final.movements:
                if m.offset + window_s(scorer.rules) > watermark:
                    break
                due.append(m.onset)
            if scorer.rules.bilateral == "offset":
                assert all(onset in emitted for onset in due), (watermark, due, sorted(emitted))
    for movement in scorer.advance(math.inf):
        emitted[movement.onset] = movement
    return emitted


@settings(max_examples=150, deadline=None)
@given(streaming_runs())
def test_streaming_with_any_interleaving_equals_offline(run: tuple) -> None:
    rules, movements, gaps, schedule = run
    offline = score_events(movements, rules, gaps)

    scorer = EventScorer(rules, keep_history=True)
    emitted = run_schedule(scorer, schedule, offline)
    assert scorer.finish() == offline
    assert tuple(sorted(emitted.values(), key=lambda m: m.onset)) == offline.movements

    lean = EventScorer(rules, keep_history=False)
    lean_emitted = run_schedule(lean, schedule, offline)
    closed_series = lean.pop_closed_series()
    lean_score = lean.finish()
    assert tuple(sorted(lean_emitted.values(), key=lambda m: m.onset)) == offline.movements
    assert tuple(closed_series) == offline.series
    assert replace(lean_score, movements=offline.movements, series=offline.series, imis=offline.imis) == offline


@PROPERTY_SETTINGS
@given(movement_lists, gap_lists, rule_sets)
def test_score_invariants(movements: list[LegMovement], gaps: list[Gap], rules: RuleSet) -> None:
    score = score_events(movements, rules, gaps)
    assert score.lm_count + score.long_count == len(score.movements)
    assert score.clm_count == sum(m.candidate for m in score.movements)
    assert score.plm_count == sum(m.plm for m in score.movements) == sum(s.count for s in score.series)
    assert score.series_count == len(score.series)
    assert all(s.count >= rules.min_series_length for s in score.series)
    assert sum(m.parts for m in score.movements) + score.short_count <= len(movements)
    assert all(m.duration > 0 for m in score.movements)
    onsets = [m.onset for m in score.movements]
    assert onsets == sorted(set(onsets))
    assert tuple(m.imi for m in score.movements if m.imi is not None) == score.imis
    for m in score.movements:
        if m.plm:
            assert m.candidate and m.series_id is not None
        if m.kind == "long":
            assert not m.candidate
    if score.clm_count:
        assert 0.0 <= score.periodicity_index <= 1.0  # type: ignore[operator]


def test_rule_sets_used_by_properties() -> None:
    assert {WASM2016.name, AASM.name} == set(RULESETS)
