"""Event-level scoring rules for leg movements (LM) and periodic limb movement (PLM) series.

This is the project's "spec kernel": the WASM/IRLSSG 2016 rules (default) and the AASM rules (option)
applied to leg-movement *events* (onset, duration, side), independent of how they were detected.
The detector (live and offline), the simulator's ground truth and researchers all score through it.
Every rule, its source, and every choice the standards leave open are in docs/scoring.md.

    >>> score = score_events([LegMovement(0.0, 2.0, "left"), LegMovement(20.0, 2.0, "left")])
    >>> score.clm_count, score.plm_count
    (2, 0)

There is one implementation, :class:`EventScorer` (incremental, bounded state);
:func:`score_events` is a thin wrapper over it, so streaming and offline results cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from plm.rules_model import (
    AASM,
    RULESETS,
    SIDES,
    TIME_RESOLUTION_DECIMALS,
    WASM2016,
    EventScore,
    Gap,
    LegMovement,
    RuleSet,
    ScoredMovement,
    Series,
    quantize,
)
from plm.rules_scorer import EventScorer

__all__ = [
    "AASM",
    "RULESETS",
    "SIDES",
    "TIME_RESOLUTION_DECIMALS",
    "WASM2016",
    "EventScore",
    "EventScorer",
    "Gap",
    "LegMovement",
    "RuleSet",
    "ScoredMovement",
    "Series",
    "get_ruleset",
    "quantize",
    "score_events",
]


def get_ruleset(name: str) -> RuleSet:
    """Look a rule set up by name (case-insensitive); ValueError lists the known names."""
    try:
        return RULESETS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown rule set {name!r}; choose one of {', '.join(RULESETS)}") from None


def score_events(
    movements: Iterable[LegMovement],
    rules: RuleSet = WASM2016,
    gaps: Iterable[Gap] = (),
) -> EventScore:
    """Score a whole recording: movements in any order, optional data gaps.

    Applies same-leg merge, minimum duration, bilateral merge, CLM limits and PLM series detection.
    """
    scorer = EventScorer(rules, keep_history=True)
    for gap in gaps:
        scorer.add_gap(gap)
    for movement in sorted(movements, key=lambda m: (m.onset, m.side)):
        scorer.add(movement)
    return scorer.finish()
