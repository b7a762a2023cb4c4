"""The one night scorer: acceleration chunks in, final movements and a night summary out.

:class:`NightScorer` is the implementation used live (MQTT) and offline (files): :func:`score_arrays`
is one ``feed`` per leg plus :meth:`NightScorer.finish`. Per leg a :class:`detector.scoring.lm.LegDetector`
turns samples into movements; LMs go to the event-level rules (:class:`plm.rules.EventScorer`), twitches
are reported on their own. A movement can be final only when every leg's data has passed it (the
*watermark* = the earliest time a leg could still report a movement from), so a leg that falls silent
holds the others back until :meth:`NightScorer.mark_gap` says it is lost.

One-leg gaps: a hole >= ``series_gap_s`` on a leg goes to the rules as a data gap on that leg. It breaks
the links of the movements it cuts into or comes within a merge of; the other leg's movements are scored
as a one-leg recording scores them, and a series runs on across a gap that lies in a rest
(docs/scoring.md, choice 8).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.scoring.inbed import EpochClassification, angle_deg, classify_epochs, leg_postures, upright_direction
from detector.scoring.lm import LegDetector, LegGap, RawMovement
from detector.scoring.nonwear import HANDLING_S, MIN_WORN_FRACTION, find_nonwear, intersect, overlap_s
from detector.scoring.params import DetectorParams
from detector.scoring.slip import is_strap_slip, step_deg
from plm.rules import WASM2016, EventScorer, Gap, LegMovement, RuleSet, ScoredMovement, Series

logger = logging.getLogger(__name__)

PARALLEL_MIN_SAMPLES = 100_000
"""Legs fed together are scored in parallel threads when each chunk has at least this many samples
(below it a thread costs more than it saves)."""

NOTICE = "Measures leg movements from acceleration; it does not diagnose. Sleep is an activity-based estimate."


@dataclass(frozen=True, slots=True)
class MovementEvent:
    """One final (or updated) movement. ``kind``: lm, long or twitch; identity = (kind is twitch, side, onset)."""

    onset: float
    duration: float
    side: str  # left | right | bilateral
    kind: str  # lm | long | twitch
    plm: bool = False
    candidate: bool = False
    series_id: int | None = None
    imi: float | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return ("twitch", self.side, self.onset) if self.kind == "twitch" else ("rules", self.onset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "onset": self.onset,
            "duration": self.duration,
            "side": self.side,
            "kind": self.kind,
            "plm": self.plm,
            "candidate": self.candidate,
            "series_id": self.series_id,
            "imi": self.imi,
        }


MovementUpdate = MovementEvent


def _from_scored(m: ScoredMovement) -> MovementEvent:
    return MovementEvent(m.onset, m.duration, m.side, m.kind, m.plm, m.candidate, m.series_id, m.imi)


@dataclass(frozen=True)
class NightSummary:
    """Everything ``plm score --json`` prints; ``to_dict()`` is exactly that object."""

    fields: dict[str, Any]
    events: tuple[MovementEvent, ...] = field(default=())

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return {**self.fields, "events": [e.to_dict() for e in self.events]}


class NightScorer:
    """Incremental scorer for one night of one subject (picklable; state bounded per sensor).

    ``feed(side, t, xyz)``: t in seconds (any origin, strictly increasing per side), xyz in g, any
    chunking; returns movements that became final or changed (a PLM flag set when a series forms).
    """

    def __init__(
        self,
        rules: RuleSet = WASM2016,
        params: DetectorParams | None = None,
        sides: tuple[str, ...] = ("left", "right"),
        *,
        keep_events: bool = True,
    ) -> None:
        if not sides or any(s not in ("left", "right") for s in sides) or len(set(sides)) != len(sides):
            raise ValueError(f"sides must be a non-empty subset of ('left', 'right'), got {sides!r}")
        self.rules = rules
        self.params = params or DetectorParams()
        self.sides = tuple(sides)
        self.keep_events = keep_events
        self._legs = {side: LegDetector(side, self.params) for side in self.sides}
        self._rules = EventScorer(rules, keep_history=False)
        self._events: dict[tuple[Any, ...], MovementEvent] = {}
        self._series: list[Series] = []
        self._counts = {"twitch": 0, "late": 0}
        # movements that turned a leg by more than posture_change_deg: (side, onset, offset, before, after);
        # a few a night (turning over, lying down, getting up); those between lying and upright are
        # getting into or out of bed (see summary)
        self._posture_changes: list[tuple[str, float, float, np.ndarray, np.ndarray]] = []
        # every movement each leg reported (twitches too), (onset, offset) in onset order: the non-wear test
        # needs to know which epochs no movement touched, and where the handling before and after ends
        self._leg_moves: dict[str, list[tuple[float, float]]] = {side: [] for side in self.sides}
        # strap slips (detector.scoring.slip): the sensor turned on the ankle; neither LMs nor twitches
        self._slips: list[tuple[str, float, float, float]] = []
        self._finished = False

    # ----------------------------------------------------------------- input
    def feed(self, side: str, t: np.ndarray, xyz: np.ndarray) -> list[MovementEvent]:
        """Consume one chunk of one leg; ValueError (nothing consumed) for bad samples."""
        leg = self._leg(side)
        moves, gaps = leg.feed(t, xyz)
        return self._after(moves, gaps)

    def feed_legs(self, chunks: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[MovementEvent]:
        """Consume one chunk of several legs at once; the same result as feeding them one after the other.

        Long chunks of different legs are scored in parallel threads: a leg's detector touches only its
        own state, and its compiled loops (most of the work) run without the GIL, so the two legs of a
        night held in memory take little more than one. On a ValueError a leg may have been consumed
        while another was not: for whole recordings (``score_arrays``), not for a live stream."""
        legs = [(self._leg(side), t, xyz) for side, (t, xyz) in chunks.items()]
        if len(legs) > 1 and min(len(t) for _, t, _ in legs) >= PARALLEL_MIN_SAMPLES:
            with ThreadPoolExecutor(max_workers=len(legs), thread_name_prefix="plm-leg") as pool:
                results = list(pool.map(lambda job: job[0].feed(job[1], job[2]), legs))
        else:
            results = [leg.feed(t, xyz) for leg, t, xyz in legs]
        moves = [m for leg_moves, _ in results for m in leg_moves]
        gaps = [g for _, leg_gaps in results for g in leg_gaps]
        return self._after(moves, gaps)

    def mark_gap(self, side: str, until: float, since: float | None = None) -> list[MovementEvent]:
        """Declare that ``side`` has no data up to ``until`` (sensor lost); later samples must be after it.
        ``since`` is where the gap starts for a leg that has had no data at all yet."""
        moves, gaps = self._leg(side).skip_to(float(until), None if since is None else float(since))
        return self._after(moves, gaps)

    def finish(self) -> NightSummary:
        """End of the night: flush every leg and the rules, return the final summary."""
        if not self._finished:
            moves: list[RawMovement] = []
            gaps: list[LegGap] = []
            for leg in self._legs.values():
                m, g = leg.flush()
                moves += m
                gaps += g
            self._after(moves, gaps, watermark=math.inf)
            self._finished = True
        return self.summary()

    # ----------------------------------------------------------------- read-only views (live service)
    @property
    def watermark(self) -> float:
        """No leg can still report a movement that starts before this time (-inf until every leg has data)."""
        return min(leg.watermark for leg in self._legs.values())

    def epoch_table(self, side: str) -> Mapping[int, np.ndarray]:
        """The leg's 30-s epoch rows (see :class:`detector.scoring.lm.LegDetector`); read, never modify."""
        return self._legs[side].epochs

    def leg_rate_hz(self, side: str) -> float | None:
        return self._legs[side].rate_hz

    def upright_direction(self, side: str) -> np.ndarray | None:
        """The leg's learned upright gravity direction (unit vector), None while unknown."""
        return self._uprights(self.nonwear())[side]

    def epoch_classification(self) -> EpochClassification:
        """In bed / asleep per epoch so far: the same estimate the summary's time in bed and sleep use."""
        legs = self._legs
        rates = {side: leg.rate_hz for side, leg in legs.items() if leg.rate_hz}
        longs = [(e.onset, e.onset + e.duration) for e in self._events.values() if e.kind == "long"]
        nonwear = self.nonwear()
        off = intersect(nonwear.values())
        tables = {s: leg.epochs for s, leg in legs.items()}
        return classify_epochs(tables, rates, self._uprights(nonwear), longs, self.params, off)

    def nonwear(self) -> dict[str, list[tuple[float, float]]]:
        """Per leg with data: the spans its sensor was off the ankle so far (detector.scoring.nonwear)."""
        out = {}
        for side, leg in self._legs.items():
            if leg.first_t is None:
                continue
            moves = sorted(self._leg_moves[side])
            out[side] = [(a, b) for a, b, _ in find_nonwear(leg.wear, moves, leg.last_t)]
        return out

    def _uprights(self, nonwear: dict[str, list[tuple[float, float]]]) -> dict[str, np.ndarray | None]:
        """Each leg's upright direction (None: unknown), its non-wear left out of the plausibility check."""
        return {
            side: upright_direction(leg.epochs, leg.blocks, leg.rate_hz, self.params, nonwear.get(side, ()))
            if leg.rate_hz
            else None
            for side, leg in self._legs.items()
        }

    # ----------------------------------------------------------------- plumbing
    def _leg(self, side: str) -> LegDetector:
        if self._finished:
            raise ValueError("this night is finished; start a new NightScorer")
        try:
            return self._legs[side]
        except KeyError:
            raise ValueError(f"side {side!r} is not one of this scorer's sides {self.sides}") from None

    def _after(
        self, moves: list[RawMovement], gaps: list[LegGap], watermark: float | None = None
    ) -> list[MovementEvent]:
        updates: list[MovementEvent] = []
        floor = self._rules.watermark
        for gap in gaps:
            start = max(gap.start, floor)
            if gap.end > start:
                self._rules.add_gap(Gap(start, gap.end, gap.side))
        for move in sorted(moves, key=lambda m: m.onset):
            self._leg_moves[move.side].append((move.onset, move.offset))
            if is_strap_slip(move):
                self._slips.append((move.side, move.onset, move.offset, step_deg(move.before, move.after) or 0.0))
            elif move.kind == "twitch":
                event = MovementEvent(move.onset, move.duration, move.side, "twitch")
                self._counts["twitch"] += 1
                self._store(event)
                updates.append(event)
            elif move.onset < floor:
                self._counts["late"] += 1
                logger.warning("%s movement at %.3f arrived after the watermark; dropped", move.side, move.onset)
            else:
                self._rules.add(LegMovement(move.onset, move.duration, move.side))
                self._note_posture_change(move)
        if watermark is None:
            watermark = min(leg.watermark for leg in self._legs.values())
        if watermark > floor:
            for scored in self._rules.advance(watermark):
                event = _from_scored(scored)
                self._store(event)
                updates.append(event)
            self._series += self._rules.pop_closed_series()
        updates.sort(key=lambda e: e.onset)
        return updates

    def _note_posture_change(self, move: RawMovement) -> None:
        if move.before is None or move.after is None:
            return
        before, after = np.asarray(move.before), np.asarray(move.after)
        if angle_deg(before, after) > self.params.posture_change_deg:
            self._posture_changes.append((move.side, move.onset, move.offset, before, after))

    def _postures(
        self, ups: dict[str, np.ndarray | None]
    ) -> tuple[list[tuple[float, float]], dict[str, list[tuple[float, float]]]]:
        """Movements that took a leg between lying and upright (relative to its learned upright direction:
        lying down into bed, getting up out of it), and per leg the spans its shank was upright
        (:func:`detector.scoring.inbed.leg_postures`). A sleep lab's scoring starts after the first transition
        and stops before the second (lights-off, lights-on, a bathroom trip): neither they nor the movements of
        an upright leg are LMs of the night."""
        transitions: list[tuple[float, float]] = []
        upright: dict[str, list[tuple[float, float]]] = {}
        for side, up in ups.items():
            if up is None:
                continue
            changes = sorted((c[1:] for c in self._posture_changes if c[0] == side), key=lambda c: c[0])
            moved, upright[side] = leg_postures(changes, up, self.params.lying_angle_deg)
            transitions += moved
        return sorted(transitions), upright  # legs report in any interleaving: sorted, the result does not depend on it

    def _store(self, event: MovementEvent) -> None:
        if self.keep_events or event.kind == "long":
            self._events[event.key] = event

    # ----------------------------------------------------------------- summary
    def summary(self) -> NightSummary:
        """The night so far (live) or the final night (after :meth:`finish`)."""
        p = self.params
        legs = self._legs
        events = sorted(self._events.values(), key=lambda e: (e.onset, e.side))
        firsts = [leg.first_t for leg in legs.values() if leg.first_t is not None]
        lasts = [leg.last_t for leg in legs.values() if leg.last_t is not None]
        start = min(firsts) if firsts else None
        end = max(lasts) if lasts else None
        span = (end - start) if start is not None and end is not None else 0.0
        rates = {side: leg.rate_hz for side, leg in legs.items() if leg.rate_hz}
        longs = [(e.onset, e.onset + e.duration) for e in events if e.kind == "long"]
        nonwear = self.nonwear()
        off = intersect(nonwear.values())  # no leg worn: not time in bed, not in any index
        ups = self._uprights(nonwear)
        epochs = classify_epochs({s: leg.epochs for s, leg in legs.items()}, rates, ups, longs, p, off)
        epoch_s = p.epoch_s
        # time in bed as a sleep lab counts it: from the first to the last lying epoch (lights-off to
        # lights-on), a trip to the bathroom included; movements while up are still not counted as PLMs
        lying = np.flatnonzero(epochs.in_bed)
        bed_period = slice(int(lying[0]), int(lying[-1]) + 1) if lying.size else slice(0, 0)
        # an epoch covers its samples' n / rate seconds, the recording first to last sample (n - 1) / rate: time in
        # bed (and asleep) may not exceed the recording, so at most the span (issue 18: 0.02 s over at 52 Hz)
        in_bed_s = min(float(epochs.covered_s[bed_period].sum()), span)
        if off and lying.size:  # the sensors off the ankle inside the bed period are not time in bed
            bed_lo, bed_hi = float(epochs.epochs[lying[0]] * epoch_s), float((epochs.epochs[lying[-1]] + 1) * epoch_s)
            in_bed_s = max(0.0, in_bed_s - overlap_s(bed_lo, bed_hi, off))
        sleep_s = min(float(epochs.covered_s[epochs.asleep].sum()), in_bed_s)
        wake_s = in_bed_s - sleep_s

        def state_of(onset: float) -> int:  # 0 out of bed / unknown, 1 wake in bed, 2 asleep
            i = int(np.searchsorted(epochs.epochs, math.floor(onset / epoch_s)))
            if i < epochs.epochs.shape[0] and epochs.epochs[i] == math.floor(onset / epoch_s):
                return 2 if epochs.asleep[i] else (1 if epochs.in_bed[i] else 0)
            return 0

        scored = [e for e in events if e.kind != "twitch"]
        # a sleep lab scores leg movements in bed (lights-off to lights-on, not while the subject is up):
        # movements in epochs classified upright (standing, walking, sitting with the feet down) stay in
        # ``events`` as measured, but are not counted as LMs of the night (``lm_count``, per hour); nor are those
        # of a leg upright for seconds inside a lying epoch (sitting on the edge of the bed: docs/scoring.md)
        transitions, upright = self._postures(ups)

        def leg_upright(e: MovementEvent) -> bool:  # a bilateral movement: every leg with a posture reference
            legs = [e.side] if e.side in upright else list(upright) if e.side == "bilateral" else []
            return bool(legs) and all(any(a <= e.onset < b for a, b in upright[side]) for side in legs)

        # taking a sensor off and putting it back on is the hand's work, not the leg's
        handling = [(a - HANDLING_S, a) for spans in nonwear.values() for a, _ in spans]
        handling += [(b, b + HANDLING_S) for spans in nonwear.values() for _, b in spans]
        excluded = transitions + handling

        def in_bed_lm(e: MovementEvent) -> bool:
            end = e.onset + e.duration
            return (
                state_of(e.onset) > 0 and not leg_upright(e) and not any(a < end and b > e.onset for a, b in excluded)
            )

        lms_in_bed = [e for e in scored if e.kind == "lm" and in_bed_lm(e)]
        plms = [e for e in scored if e.plm]
        plm_states = [
            0
            if leg_upright(e) or any(a < e.onset + e.duration and b > e.onset for a, b in handling)
            else state_of(e.onset)
            for e in plms
        ]
        plm_in_bed = sum(1 for s in plm_states if s > 0)
        plm_sleep = sum(1 for s in plm_states if s == 2)
        plm_wake = sum(1 for s in plm_states if s == 1)
        clm = sum(1 for e in scored if e.candidate)
        series = list(self._series)
        if self._rules.open_series is not None:
            series.append(self._rules.open_series)
        missing = []
        for leg in legs.values():
            if leg.first_t is None or start is None or end is None or span <= 0:  # span > 0: both are known
                missing.append(1.0 if span > 0 else 0.0)
                continue
            outside = (leg.first_t - start) + (end - (leg.last_t or end))
            missing.append(min(1.0, (leg.missing_s + outside) / span))
        missing_fraction = float(np.mean(missing)) if missing else 0.0
        hours = max(1, math.ceil(span / 3600)) if span > 0 else 0
        per_hour = []
        for h in range(hours):
            lo_t, hi_t = start + 3600 * h, start + 3600 * (h + 1)  # type: ignore[operator]
            inside = [e for e in scored if lo_t <= e.onset < hi_t]
            per_hour.append(
                {
                    "hour": h,
                    "start": lo_t,
                    "lm_count": sum(1 for e in lms_in_bed if lo_t <= e.onset < hi_t),
                    "plm_count": sum(1 for e in inside if e.plm),
                    "twitch_count": sum(1 for e in events if e.kind == "twitch" and lo_t <= e.onset < hi_t),
                }
            )
        gaps = [
            {"side": g.side, "start": g.start, "end": g.end}
            for g in sorted((g for leg in legs.values() for g in leg.gaps), key=lambda g: g.start)
        ]

        nonwear_s = sum(b - a for a, b in off)
        worn_fraction = in_bed_s / (in_bed_s + nonwear_s) if in_bed_s + nonwear_s > 0 else None
        # too little of the night measured: a PLM index of it would describe part of a night as the whole
        insufficient = worn_fraction is not None and nonwear_s > 0 and worn_fraction < MIN_WORN_FRACTION

        def per_hour_of(count: int, seconds: float) -> float | None:
            return count / (seconds / 3600) if seconds > 0 and not insufficient else None

        fields = {
            "notice": NOTICE,
            "rules": self.rules.name,
            "sides": list(self.sides),
            "start": start,
            "end": end,
            "recording_h": span / 3600,
            "time_in_bed_h": in_bed_s / 3600,
            "sleep_h": sleep_s / 3600,
            "wake_in_bed_h": wake_s / 3600,
            "lm_count": len(lms_in_bed),
            "lm_out_of_bed_count": sum(1 for e in scored if e.kind == "lm") - len(lms_in_bed),
            "clm_count": clm,
            "plm_count": len(plms),
            "plm_in_bed_count": plm_in_bed,
            "plm_index": per_hour_of(plm_in_bed, in_bed_s),
            "plms_index": per_hour_of(plm_sleep, sleep_s),
            "plmw_index": per_hour_of(plm_wake, wake_s),
            "periodicity_index": len(plms) / clm if clm else None,
            "series_count": len(series),
            "series": [{**s.to_dict(), "duration": s.end - s.start} for s in series],
            "imis": [e.imi for e in scored if e.imi is not None],
            "twitch_count": self._counts["twitch"],
            "vibration_count": sum(leg.vibration_count for leg in legs.values()),
            "long_movement_count": sum(1 for e in scored if e.kind == "long"),
            "bilateral_count": sum(1 for e in scored if e.side == "bilateral"),
            "per_hour": per_hour,
            "missing_fraction": missing_fraction,
            "missing_flag": missing_fraction > p.missing_flag_fraction,
            "gaps": gaps,
            "out_of_bed": _out_of_bed_spans(epochs, epoch_s),
            "bed_transitions": [{"start": a, "end": b} for a, b in transitions],
            # per leg, the spans its shank was upright (sitting, standing, walking), to the movement; within the recording
            "upright": sorted(
                (
                    {"side": side, "start": max(a, start), "end": min(b, end)}
                    for side, spans in upright.items()
                    for a, b in spans
                    if start is not None and end is not None and min(b, end) > max(a, start)
                ),
                key=lambda d: (d["start"], d["side"]),
            ),
            "nonwear": sorted(
                ({"side": side, "start": a, "end": b} for side, spans in nonwear.items() for a, b in spans),
                key=lambda d: (d["start"], d["side"]),
            ),
            "strap_slip_count": len(self._slips),
            "strap_slips": [
                {"side": side, "start": a, "end": b, "angle_deg": angle}
                for side, a, b, angle in sorted(self._slips, key=lambda s: (s[1], s[0]))
            ],
            "nonwear_h": nonwear_s / 3600,
            "worn_fraction": worn_fraction,
            "wear_insufficient": insufficient,
            "rate_hz": {side: rates.get(side) for side in self.sides},
            "posture_reference": epochs.posture_reference,
            "late_movements_dropped": self._counts["late"],
            "final": self._finished,
        }
        return NightSummary(fields, tuple(events) if self.keep_events else ())


def _out_of_bed_spans(epochs: EpochClassification, epoch_s: float) -> list[dict[str, float]]:
    """Runs of recorded epochs classified out of bed (upright), as ``{start, end}`` in the input time base;
    none without a posture reference (the whole recording then counts as in bed)."""
    if not any(epochs.posture_reference.values()):
        return []
    spans: list[dict[str, float]] = []
    for key, in_bed in zip(epochs.epochs.tolist(), epochs.in_bed.tolist(), strict=True):
        if in_bed:
            continue
        start, end = key * epoch_s, (key + 1) * epoch_s
        if spans and spans[-1]["end"] == start:
            spans[-1]["end"] = end
        else:
            spans.append({"start": start, "end": end})
    return spans


def score_arrays(
    left: tuple[np.ndarray, np.ndarray],
    right: tuple[np.ndarray, np.ndarray] | None = None,
    rules: RuleSet = WASM2016,
    params: DetectorParams | None = None,
) -> NightSummary:
    """Score a whole night held in memory: the same :class:`NightScorer`, one chunk per leg."""
    sides = ("left",) if right is None else ("left", "right")
    scorer = NightScorer(rules, params, sides)
    scorer.feed_legs({"left": left} if right is None else {"left": left, "right": right})
    return scorer.finish()


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every loop with the argument types the detector uses.

    The first use on a machine compiles for several seconds; a test session or a service calls this once
    up front so that the cost is not paid inside the first timed request or a child process's deadline."""
    t = np.arange(0.0, 90.0, 1 / 52)
    rng = np.random.default_rng(0)
    xyz = np.array([0.0, 0.0, 1.0]) + rng.normal(0, 0.002, (t.shape[0], 3))
    xyz[1500:1560] += 0.3  # one movement, so the scan runs too
    score_arrays((t, xyz), (t, xyz.copy()))
