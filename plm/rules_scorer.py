"""The one implementation of the event-level rules: an incremental scorer.

Offline scoring (:func:`plm.rules.score_events`) feeds everything and calls :meth:`EventScorer.finish`;
the live detector feeds movements as they are detected and calls :meth:`EventScorer.advance` with a
watermark. Both go through the same three stages, so they cannot disagree:

1. same-leg merge per side (gap < ``same_leg_merge_s``), then drop merged movements shorter than
   ``min_lm_s`` (counted as ``short_count``);
2. bilateral merge of the surviving monolateral LMs, taken in global onset order (left before right
   on equal onsets, so that the order never depends on when data arrived);
3. classification (LM / long / CLM) and PLM series over the resulting movements and data gaps: a
   gap breaks the links of the movements on its leg that it touches (their extent is unknown), not a
   link it only lies between (docs/scoring.md, choice 8).

Each stage holds only what can still change: the open same-leg movement per side, LMs waiting for
the other leg to catch up, the open bilateral group, and the open run of CLMs (at most
``min_series_length - 1`` movements before it becomes a series, then only its last member).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field, replace

from plm.rules_model import (
    SIDES,
    WASM2016,
    EventScore,
    Gap,
    LegMovement,
    RuleSet,
    ScoredMovement,
    Series,
    quantize,
)

logger = logging.getLogger(__name__)

_OTHER_SIDE = {"left": "right", "right": "left"}


@dataclass(slots=True)
class _Mono:
    """A monolateral movement while (and after) same-leg merging."""

    onset: float
    offset: float
    side: str


@dataclass(slots=True)
class _Group:
    """An open bilateral combination; keeps aggregates only, so a pathological chain stays O(1)."""

    onset: float
    offset: float
    parts: int
    longest_part_s: float
    last_onset: dict[str, float] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # per leg: first onset, last offset

    @classmethod
    def start(cls, mono: _Mono) -> _Group:
        return cls(
            mono.onset,
            mono.offset,
            1,
            quantize(mono.offset - mono.onset),
            {mono.side: mono.onset},
            {mono.side: (mono.onset, mono.offset)},
        )

    def add(self, mono: _Mono) -> None:
        self.offset = max(self.offset, mono.offset)
        self.parts += 1
        self.longest_part_s = max(self.longest_part_s, quantize(mono.offset - mono.onset))
        self.last_onset[mono.side] = mono.onset
        first, last = self.spans.get(mono.side, (mono.onset, mono.offset))
        self.spans[mono.side] = (first, max(last, mono.offset))


class EventScorer:
    """Incremental event-level scorer (see the module docstring for the stages).

    Contract: per side, movements are added in onset order (sides may interleave arbitrarily).
    ``advance(watermark)`` is the caller's promise that no movement or gap starting before
    ``watermark`` will be added later; it returns every movement that became final or changed since the
    previous call (last version only, keyed by onset). ``advance(math.inf)`` flushes everything and
    closes the open series; :meth:`finish` does that and returns the whole score.

    With ``keep_history=False`` only counters are kept: ``finish()`` then returns empty
    ``movements``/``series``/``imis`` and the caller gathers what ``advance`` emitted.
    """

    def __init__(self, rules: RuleSet = WASM2016, *, keep_history: bool = True) -> None:
        self.rules = rules
        self.keep_history = keep_history
        self._watermark = -math.inf
        # stage 1
        self._last_onset: dict[str, float] = dict.fromkeys(SIDES, -math.inf)
        self._pending: dict[str, _Mono | None] = dict.fromkeys(SIDES)
        self._ready: dict[str, deque[_Mono]] = {side: deque() for side in SIDES}
        # stage 2
        self._group: _Group | None = None
        self._closed_groups: deque[_Group] = deque()
        # stage 3
        self._gaps: list[Gap] = []
        self._prev_onset: float | None = None
        self._prev_candidate = False
        self._prev_touches_gap = False
        self._run_len = 0
        self._run_members: list[ScoredMovement] = []
        self._run_last_onset = 0.0
        self._series_id: int | None = None
        self._series_start = 0.0
        self._series_end = 0.0
        # outputs
        self._changed: dict[float, ScoredMovement] = {}
        self._new_series: list[Series] = []
        self._history: dict[float, ScoredMovement] = {}
        self._series_history: list[Series] = []
        self._imis: list[float] = []
        self._counts = dict.fromkeys(("lm", "clm", "plm", "series", "long", "short"), 0)

    # ----------------------------------------------------------------- input
    def add(self, movement: LegMovement) -> None:
        """Accept one monolateral movement; raises ValueError (state untouched) if it breaks the contract."""
        if not isinstance(movement, LegMovement):
            raise TypeError(f"expected LegMovement, got {type(movement).__name__}")
        side = movement.side
        if movement.onset < self._watermark:
            raise ValueError(f"movement onset {movement.onset} is before the watermark {self._watermark}")
        if movement.onset < self._last_onset[side]:
            raise ValueError(
                f"{side} movement onset {movement.onset} precedes the previous {side} onset "
                f"{self._last_onset[side]}; movements on one leg must arrive in onset order"
            )
        self._last_onset[side] = movement.onset
        pending = self._pending[side]
        if pending is not None and quantize(movement.onset - pending.offset) < self.rules.same_leg_merge_s:
            pending.offset = max(pending.offset, movement.offset)
            return
        if pending is not None:
            self._finalize_mono(pending)
        self._pending[side] = _Mono(movement.onset, movement.offset, side)

    def add_gap(self, gap: Gap) -> None:
        """Accept a data gap (it breaks the links of the movements it touches, :meth:`_touches_gap`) or an
        interruption (``ends_series``: it ends any series across it)."""
        if not isinstance(gap, Gap):
            raise TypeError(f"expected Gap, got {type(gap).__name__}")
        if gap.start < self._watermark:
            raise ValueError(f"gap start {gap.start} is before the watermark {self._watermark}")
        self._gaps.append(gap)

    def advance(self, watermark: float) -> list[ScoredMovement]:
        """Move the watermark forward and return movements that became final or changed, by onset."""
        if not isinstance(watermark, int | float) or math.isnan(watermark):
            raise ValueError(f"watermark must be a number, got {watermark!r}")
        self._watermark = max(self._watermark, float(watermark))
        self._pump()
        changed = sorted(self._changed.values(), key=lambda m: m.onset)
        self._changed = {}
        return changed

    def pop_closed_series(self) -> list[Series]:
        """Series known to be complete since the previous call (for live summaries)."""
        closed, self._new_series = self._new_series, []
        return closed

    @property
    def open_series(self) -> Series | None:
        """The series still growing at the current watermark, if the open run already is one."""
        if self._series_id is None:
            return None
        return Series(self._series_id, self._series_start, self._series_end, self._run_len)

    @property
    def watermark(self) -> float:
        return self._watermark

    def finish(self) -> EventScore:
        """Flush everything (watermark = +inf) and return the full score."""
        leftover = self.advance(math.inf)
        if leftover and not self.keep_history:
            logger.debug("finish() dropped %d unread emissions; call advance(math.inf) first", len(leftover))
        counts = self._counts
        movements = tuple(sorted(self._history.values(), key=lambda m: m.onset))
        return EventScore(
            rules=self.rules,
            movements=movements,
            series=tuple(self._series_history),
            lm_count=counts["lm"],
            clm_count=counts["clm"],
            plm_count=counts["plm"],
            series_count=counts["series"],
            long_count=counts["long"],
            short_count=counts["short"],
            periodicity_index=counts["plm"] / counts["clm"] if counts["clm"] else None,
            imis=tuple(self._imis),
        )

    # ------------------------------------------------------------- stage 1
    def _finalize_mono(self, mono: _Mono) -> None:
        if quantize(mono.offset - mono.onset) < self.rules.min_lm_s:
            self._counts["short"] += 1
        else:
            self._ready[mono.side].append(mono)

    def _lower_bound(self, side: str) -> float:
        """Earliest onset a monolateral LM on ``side`` not yet released to stage 2 can have."""
        if self._ready[side]:
            return self._ready[side][0].onset
        pending = self._pending[side]
        if pending is not None:
            return pending.onset
        return max(self._watermark, self._last_onset[side])

    # ------------------------------------------------------------- stage 2
    def _can_join(self, group: _Group, onset: float, side: str) -> bool:
        """Would an LM on ``side`` starting at ``onset`` combine with ``group``? Monotone in ``onset``."""
        if len(group.last_onset) == 1 and side in group.last_onset:
            return False  # a bilateral merge needs both legs; same-leg merging is stage 1's job
        rules = self.rules
        if rules.bilateral == "offset":
            return quantize(onset - group.offset) < rules.bilateral_merge_s
        other_onset = group.last_onset.get(_OTHER_SIDE[side])
        return other_onset is not None and quantize(onset - other_onset) < rules.bilateral_onset_window_s

    def _feed_group(self, mono: _Mono) -> None:
        group = self._group
        if group is not None and self._can_join(group, mono.onset, mono.side):
            group.add(mono)
            return
        if group is not None:
            self._closed_groups.append(group)
        self._group = _Group.start(mono)

    def _release_in_onset_order(self) -> None:
        """Feed stage 2 in global onset order, never before the other leg can no longer undercut it.

        Equal onsets on both legs are released together, the one that joins the open group first
        (else left first). That makes the grouping independent of arrival timing and symmetric
        under swapping the legs.
        """
        left, right = self._ready["left"], self._ready["right"]
        while left or right:
            if left and right and left[0].onset == right[0].onset:
                side = "left"
                group = self._group
                if (
                    group is not None
                    and self._can_join(group, right[0].onset, "right")
                    and not self._can_join(group, left[0].onset, "left")
                ):
                    side = "right"
            else:
                side = "left" if left and (not right or left[0].onset < right[0].onset) else "right"
                # strict: a movement on the other leg with the same onset may still come
                if self._ready[side][0].onset >= self._lower_bound(_OTHER_SIDE[side]):
                    return
            self._feed_group(self._ready[side].popleft())

    # ------------------------------------------------------------- pipeline
    def _pump(self) -> None:
        watermark = self._watermark
        for side in SIDES:
            pending = self._pending[side]
            if pending is not None and quantize(watermark - pending.offset) >= self.rules.same_leg_merge_s:
                self._pending[side] = None
                self._finalize_mono(pending)
        self._release_in_onset_order()
        group = self._group
        if group is not None and not any(self._can_join(group, self._lower_bound(side), side) for side in SIDES):
            self._closed_groups.append(group)
            self._group = None
        # a movement is scored once every gap that could touch it is known (gap.start < offset + merge)
        merge = self.rules.same_leg_merge_s
        while self._closed_groups and self._closed_groups[0].offset + merge <= watermark:
            self._score(self._closed_groups.popleft())
        if self._run_len and (
            watermark == math.inf or quantize(self._next_onset_bound() - self._run_last_onset) > self.rules.max_imi_s
        ):
            self._close_run()

    def _next_onset_bound(self) -> float:
        """Earliest onset any movement not yet scored can have."""
        bounds = [self._lower_bound(side) for side in SIDES]
        if self._group is not None:
            bounds.append(self._group.onset)
        if self._closed_groups:
            bounds.append(self._closed_groups[0].onset)
        return min(bounds)

    # ------------------------------------------------------------- stage 3
    def _touches_gap(self, group: _Group) -> bool:
        """Could a movement unseen in a data gap have merged with this movement's part on the gap's leg
        (a rest < ``same_leg_merge_s`` between them)? Then its extent and its verdict are unknown.

        What a gap hides on one leg is that leg's movements: the other leg's, and whether an unseen
        movement would have combined with them bilaterally, are scored as a one-leg recording scores
        them (docs/scoring.md, choice 8). A leg's part is the span of its parts in the movement."""
        merge = self.rules.same_leg_merge_s
        return any(
            not gap.ends_series
            and gap.side in (None, side)
            and quantize(onset - gap.end) < merge
            and quantize(gap.start - offset) < merge
            for gap in self._gaps
            for side, (onset, offset) in group.spans.items()
        )

    def _interrupted(self, start: float, end: float) -> bool:
        """Is there a known interruption (``Gap.ends_series``) between these two onsets?"""
        return any(gap.ends_series and gap.start < end and gap.end > start for gap in self._gaps)

    def _classify(self, group: _Group) -> tuple[str, str, bool]:
        rules = self.rules
        duration = quantize(group.offset - group.onset)
        if len(group.last_onset) == 2:
            side = "bilateral"
            too_long = duration > rules.max_bilateral_s or (
                rules.max_part_s is not None and group.longest_part_s > rules.max_part_s
            )
        else:
            (side,) = group.last_onset
            too_long = duration > rules.max_mono_s
        kind = "long" if too_long else "lm"
        candidate = not too_long and group.parts <= rules.max_bilateral_parts
        return side, kind, candidate

    def _score(self, group: _Group) -> None:
        rules = self.rules
        side, kind, candidate = self._classify(group)
        self._counts[kind] += 1
        onset = group.onset
        touches_gap = self._touches_gap(group)
        imi: float | None = None
        if (
            candidate
            and self._prev_candidate
            and self._prev_onset is not None
            and not touches_gap
            and not self._prev_touches_gap
            and not self._interrupted(self._prev_onset, onset)
        ):
            imi = quantize(onset - self._prev_onset)
            if self.keep_history:
                self._imis.append(imi)
        self._prev_onset, self._prev_candidate, self._prev_touches_gap = onset, candidate, touches_gap
        # a gap this far before this onset cannot touch, or lie between, any later pair of movements
        self._gaps = [gap for gap in self._gaps if quantize(onset - gap.end) < self.rules.same_leg_merge_s]
        movement = ScoredMovement(
            onset=onset,
            duration=group.offset - onset,
            side=side,
            kind=kind,
            candidate=candidate,
            plm=False,
            parts=group.parts,
            imi=imi,
            series_id=None,
        )
        if not candidate:
            self._close_run()
            self._emit(movement)
            return
        self._counts["clm"] += 1
        if imi is None or not rules.min_imi_s <= imi <= rules.max_imi_s:
            self._close_run()  # this CLM may still start the next series (docs/scoring.md)
        self._run_len += 1
        self._run_last_onset = onset
        self._series_end = movement.offset
        if self._series_id is not None:
            self._counts["plm"] += 1
            self._emit(replace(movement, plm=True, series_id=self._series_id))
        elif self._run_len >= rules.min_series_length:
            series_id = self._series_id = self._counts["series"]
            self._counts["series"] += 1
            self._counts["plm"] += self._run_len
            members = [*self._run_members, movement]
            self._series_start = members[0].onset
            for member in members:
                self._emit(replace(member, plm=True, series_id=series_id))
            self._run_members = []
        else:
            self._run_members.append(movement)
            self._emit(movement)

    def _close_run(self) -> None:
        if self._series_id is not None:
            series = Series(self._series_id, self._series_start, self._series_end, self._run_len)
            self._new_series.append(series)
            if self.keep_history:
                self._series_history.append(series)
        self._series_id = None
        self._run_len = 0
        self._run_members = []

    def _emit(self, movement: ScoredMovement) -> None:
        self._changed[movement.onset] = movement
        if self.keep_history:
            self._history[movement.onset] = movement
