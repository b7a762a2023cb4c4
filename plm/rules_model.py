"""Data types and rule sets for event-level leg-movement scoring.

Import these through :mod:`plm.rules`; this module only exists to keep the scoring engine small.
All times are seconds on any time base (unix or relative); only differences matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

SIDES = ("left", "right")
"""The two legs a monolateral movement can come from."""

TIME_RESOLUTION_DECIMALS = 6
"""Intervals and durations are rounded to 1e-6 s before they are compared with a threshold.

Why: onsets are absolute times (often unix seconds, ~1.7e9), so a subtraction such as
``1_700_000_010.0 - 1_700_000_000.0`` is exact but ``0.3 + 10.0 - 0.3`` is not; without rounding an
IMI meant to be exactly 10 s could come out as 9.999999999999998 and fall out of an inclusive range.
One microsecond is far below any sensor's resolution and far above float64 round-off at unix times
(~2.4e-7 s), so thresholds stay exact and inclusive without an ad-hoc epsilon.
"""


def quantize(seconds: float) -> float:
    """Round an interval to the comparison resolution (see :data:`TIME_RESOLUTION_DECIMALS`)."""
    return round(seconds, TIME_RESOLUTION_DECIMALS)


def _require_finite(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class LegMovement:
    """One monolateral movement as detected on one leg (before any scoring rule is applied)."""

    onset: float
    duration: float
    side: str

    def __post_init__(self) -> None:
        _require_finite("onset", self.onset)
        _require_finite("duration", self.duration)
        if self.duration <= 0:
            raise ValueError(f"duration must be > 0 s, got {self.duration!r}")
        if self.side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")

    @property
    def offset(self) -> float:
        return self.onset + self.duration


@dataclass(frozen=True, slots=True)
class Gap:
    """A span with no data on one leg (``side``) or on every leg (``side=None``).

    Missing data is not evidence of a break: a gap breaks the links (IMIs) of each movement on its leg
    that it touches -- overlaps, or comes closer to than a same-leg merge reaches -- because a movement
    unseen in it could have merged with that one, so its extent and CLM verdict are unknown. A gap that
    lies in the rest between two movements leaves their link (docs/scoring.md, choice 8).

    ``ends_series=True`` marks a span that is not missing data but a known interruption of the scoring
    (the subject was out of bed): it ends any series across it, as the non-CLM movements of getting up do.
    """

    start: float
    end: float
    side: str | None = None
    ends_series: bool = False

    def __post_init__(self) -> None:
        _require_finite("gap start", self.start)
        _require_finite("gap end", self.end)
        if self.end <= self.start:
            raise ValueError(f"gap end ({self.end!r}) must be after its start ({self.start!r})")
        if self.side is not None and self.side not in SIDES:
            raise ValueError(f"gap side must be 'left', 'right' or None (every leg), got {self.side!r}")


@dataclass(frozen=True)
class RuleSet:
    """Every threshold of the event-level rules as a named field (seconds unless stated).

    ``bilateral`` selects how movements on the two legs are combined: ``"offset"`` (WASM 2016: the
    other leg's movement starts before the first one's end + ``bilateral_merge_s``) or ``"onset"``
    (AASM: onsets less than ``bilateral_onset_window_s`` apart). ``max_part_s``, when set, makes a
    bilateral movement "long" if any of its monolateral parts is longer (AASM only bounds single-leg
    LMs, so each part must itself be an LM).
    """

    name: str
    same_leg_merge_s: float = 0.5
    min_lm_s: float = 0.5
    max_mono_s: float = 10.0
    max_bilateral_s: float = 15.0
    max_bilateral_parts: int = 4
    bilateral: Literal["offset", "onset"] = "offset"
    bilateral_merge_s: float = 0.5
    bilateral_onset_window_s: float = 5.0
    min_imi_s: float = 10.0
    max_imi_s: float = 90.0
    min_series_length: int = 4
    max_part_s: float | None = None
    title: str = ""

    def __post_init__(self) -> None:
        for name in (
            "same_leg_merge_s",
            "min_lm_s",
            "max_mono_s",
            "max_bilateral_s",
            "bilateral_merge_s",
            "bilateral_onset_window_s",
            "min_imi_s",
            "max_imi_s",
        ):
            value = getattr(self, name)
            _require_finite(name, value)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if self.bilateral not in ("offset", "onset"):
            raise ValueError(f"bilateral must be 'offset' or 'onset', got {self.bilateral!r}")
        if self.min_imi_s > self.max_imi_s:
            raise ValueError("min_imi_s must not exceed max_imi_s")
        if self.max_bilateral_parts < 2 or self.min_series_length < 1:
            raise ValueError("max_bilateral_parts must be >= 2 and min_series_length >= 1")
        if self.max_part_s is not None:
            _require_finite("max_part_s", self.max_part_s)


WASM2016 = RuleSet(name="wasm2016", title="WASM/IRLSSG 2016 (Ferri et al.)")
AASM = RuleSet(
    name="aasm",
    title="AASM Scoring Manual",
    bilateral="onset",
    min_imi_s=5.0,
    max_part_s=10.0,
)
RULESETS: dict[str, RuleSet] = {WASM2016.name: WASM2016, AASM.name: AASM}


@dataclass(frozen=True, slots=True)
class ScoredMovement:
    """A leg movement after same-leg merge, minimum duration and bilateral merge, with its verdict.

    ``kind`` is ``"lm"`` (within the duration limits) or ``"long"`` (longer: never a CLM, ends a
    series). ``candidate`` is the CLM verdict: a bilateral ``"lm"`` with more than
    ``max_bilateral_parts`` parts keeps kind ``"lm"`` but is not a candidate. ``imi`` is the
    onset-to-onset interval from the previous CLM, or None when this is not a CLM, is the first, or
    follows a break (non-CLM movement, or a data gap touching it or its predecessor). The identity of a
    movement is its onset.
    """

    onset: float
    duration: float
    side: str
    kind: str
    candidate: bool
    plm: bool
    parts: int
    imi: float | None
    series_id: int | None

    @property
    def offset(self) -> float:
        return self.onset + self.duration

    def to_dict(self) -> dict[str, Any]:
        return {
            "onset": self.onset,
            "duration": self.duration,
            "side": self.side,
            "kind": self.kind,
            "candidate": self.candidate,
            "plm": self.plm,
            "parts": self.parts,
            "imi": self.imi,
            "series_id": self.series_id,
        }


@dataclass(frozen=True, slots=True)
class Series:
    """A PLM series: ``start`` = onset of its first member, ``end`` = offset of its last member."""

    series_id: int
    start: float
    end: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"series_id": self.series_id, "start": self.start, "end": self.end, "count": self.count}


@dataclass(frozen=True)
class EventScore:
    """The full event-level result of one recording (see docs/scoring.md for every definition).

    ``lm_count`` counts movements of kind ``"lm"`` (CLM or not), ``long_count`` those of kind
    ``"long"``; ``short_count`` counts merged monolateral movements shorter than the minimum LM,
    which are not LMs and are not in ``movements``.
    """

    rules: RuleSet
    movements: tuple[ScoredMovement, ...]
    series: tuple[Series, ...]
    lm_count: int
    clm_count: int
    plm_count: int
    series_count: int
    long_count: int
    short_count: int
    periodicity_index: float | None
    imis: tuple[float, ...] = field(default=())

    def plm_index(self, hours: float) -> float:
        """PLM per hour of ``hours`` (the caller's denominator: time in bed, sleep time, ...)."""
        if not isinstance(hours, int | float) or not math.isfinite(hours) or hours <= 0:
            raise ValueError(f"hours must be a finite number > 0, got {hours!r}")
        return self.plm_count / hours

    def to_dict(self, hours: float | None = None) -> dict[str, Any]:
        """A JSON-ready summary; ``plm_index`` is included only when ``hours`` is given."""
        result: dict[str, Any] = {
            "rules": self.rules.name,
            "lm_count": self.lm_count,
            "clm_count": self.clm_count,
            "plm_count": self.plm_count,
            "series_count": self.series_count,
            "long_count": self.long_count,
            "short_count": self.short_count,
            "periodicity_index": self.periodicity_index,
        }
        if hours is not None:
            result["hours"] = hours
            result["plm_index"] = self.plm_index(hours)
        result["imis"] = list(self.imis)
        result["series"] = [s.to_dict() for s in self.series]
        result["events"] = [m.to_dict() for m in self.movements]
        return result
