"""Ground truth: what a perfect detector would report for a simulated night.

The scored part is the project's own event-level rules (:func:`plm.rules.score_events`) applied to
the true leg movements of the recorded legs, so "truth" and "detector" can only differ in detection,
never in scoring. Times are true wall time (Unix seconds), the same base as the CSV ``t`` column
(which adds only a few ms of collector jitter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plm.rules import AASM, WASM2016, EventScore, Gap, LegMovement, RuleSet, score_events
from simulator.night import EPOCH_S, SCORED_KINDS, Movement, NightPlan
from simulator.sensor import SensorModel

TRUTH_FORMAT = "plm-sim-truth/1"
BED_TRANSITIONS = ("get_up", "lie_down")  # roles of the posture changes between lying and sitting up
SLEEP_STAGES = ("n1", "n2", "n3", "rem")


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping spans joined (a sensor gap while the sensor is off the ankle counts once)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _overlaps(a: float, b: float, spans: list[tuple[float, float]]) -> bool:
    return any(a < e and b > s for s, e in spans)


@dataclass
class Truth:
    plan: NightPlan
    sensors: dict[str, SensorModel]
    rate_hz: float
    options: dict[str, Any]
    scores: dict[str, EventScore] = field(default_factory=dict)

    # -- views
    @property
    def legs(self) -> tuple[str, ...]:
        return tuple(self.sensors)

    @property
    def in_bed(self) -> tuple[float, float]:
        return (self.plan.lights_off, self.plan.lights_on)

    @property
    def movements(self) -> list[Movement]:
        return self.plan.movements

    @property
    def stages(self) -> list[tuple[float, float, str]]:
        return self.plan.stages

    @property
    def sensor_gaps(self) -> list[tuple[float, float]]:
        return sorted({g for s in self.sensors.values() for g in s.gaps})

    @property
    def gaps(self) -> list[Gap]:
        """Spans no perfect detector can score: a recorded leg's sensor was off (missing data on that leg),
        or the subject was out of bed (an interruption: it ends any series, as getting up does)."""
        gaps = [Gap(a, b, side) for side, s in self.sensors.items() for a, b in s.gaps]
        gaps += [Gap(a, b, ends_series=True) for a, b in self.plan.out_of_bed]
        return sorted(gaps, key=lambda g: (g.start, g.end, g.side or ""))

    def recorded(self, m: Movement) -> bool:
        """True when the movement's leg was recorded and its sensor was on, and on the ankle, for all of it."""
        s = self.sensors.get(m.side)
        return s is not None and not _overlaps(m.onset, m.offset, s.gaps + self.nonwear_of(m.side))

    def nonwear_of(self, side: str) -> list[tuple[float, float]]:
        """When the ``side`` sensor was off the ankle (taken off until put back, or to the end)."""
        s = self.sensors.get(side)
        return [(ev["start"], ev["end"]) for ev in s.off] if s is not None else []

    @property
    def nonwear(self) -> list[tuple[float, float]]:
        """When every recorded leg's sensor was off the ankle: no leg is measured (not time in bed)."""
        return self._on_every_leg(self.nonwear_of)

    @property
    def unobserved(self) -> list[tuple[float, float]]:
        """When no recorded leg was measured: every sensor off the ankle or sending nothing (a sensor gap)."""
        return self._on_every_leg(lambda side: self.nonwear_of(side) + list(self.sensors[side].gaps))

    def _on_every_leg(self, spans_of: Callable[[str], list[tuple[float, float]]]) -> list[tuple[float, float]]:
        spans: list[tuple[float, float]] | None = None
        for side in self.legs:
            own = _union(spans_of(side))
            spans = (
                own if spans is None else [(max(a, c), min(b, d)) for a, b in spans for c, d in own if a < d and c < b]
            )
        return sorted(spans or [])

    def worn_hours(self) -> dict[str, float]:
        """:meth:`hours` without the time every sensor was off the ankle (the detector's time in bed leaves
        it out, and a night worn too little is not given an index)."""
        return self._hours_without(self.nonwear)

    def observed_hours(self) -> dict[str, float]:
        """:meth:`hours` without the time no leg was measured: what the indices divide by. The movements of
        that time are not counted (:meth:`recorded`), so its hours cannot be either -- as a sleep lab leaves
        a disconnected electrode's time out of the index, and as the detector's time in bed counts only the
        epochs' seconds with data. Dividing by the whole night read a PLM index 2-3 % low on a night with a
        10-minute sensor gap."""
        return self._hours_without(self.unobserved)

    def _hours_without(self, off: list[tuple[float, float]]) -> dict[str, float]:
        hours = dict(self.plan.hours())
        if not off:
            return hours
        lights_off, lights_on = self.in_bed
        codes = self.plan.epochs
        grid = lights_off + EPOCH_S * np.arange(codes.shape[0])
        worn = np.ones(codes.shape[0])
        for a, b in off:  # fraction of each epoch a leg was measured
            worn -= np.clip(np.minimum(grid + EPOCH_S, b) - np.maximum(grid, a), 0, None) / EPOCH_S
        worn = np.clip(worn, 0, 1)
        in_bed_off = sum(max(0.0, min(b, lights_on) - max(a, lights_off)) for a, b in off)
        hours["in_bed"] -= in_bed_off / 3600
        hours["sleep"] = float(worn[codes > 0].sum()) * EPOCH_S / 3600
        hours["wake_in_bed"] = float(worn[codes == 0].sum()) * EPOCH_S / 3600
        return hours

    def in_bed_at(self, t: float) -> bool:
        """True between lights-off and lights-on and outside every out-of-bed span (compared on the
        millisecond grid the movements are on: the stand-up that opens a span starts exactly at it)."""
        lights_off, lights_on = self.in_bed
        spans = self.plan.out_of_bed
        return round(lights_off, 3) <= t < round(lights_on, 3) and not any(
            round(a, 3) <= t < round(b, 3) for a, b in spans
        )

    def scored(self, m: Movement) -> bool:
        """Scored as a leg movement: see :meth:`leg_movements`."""
        return m.kind in SCORED_KINDS and m.role not in BED_TRANSITIONS and self.recorded(m) and self.in_bed_at(m.onset)

    def leg_movements(self) -> list[LegMovement]:
        """The true LMs a perfect detector sees: kinds lm, long, twitch and posture (turning over) of the
        recorded legs, outside sensor gaps, starting in bed. A sleep lab scores leg movements from
        lights-off to lights-on and not while the subject is up: standing up, sitting down and walking
        (the leg EMG is busy keeping balance and swinging the leg) are not LMs, so the posture changes of
        getting up (stand, sit) and those before lights-off / after lights-on are not scored. Neither are
        the movements between lying and sitting up on the bed's edge (getting up, lying down): they open and
        close the time out of bed, and the same lie-down that precedes lights-off is not scored either."""
        return [LegMovement(m.onset, m.offset - m.onset, m.side) for m in self.plan.movements if self.scored(m)]

    def score(self, rules: RuleSet = WASM2016) -> EventScore:
        if rules.name not in self.scores:
            self.scores[rules.name] = score_events(self.leg_movements(), rules, self.gaps)
        return self.scores[rules.name]

    def hours(self) -> dict[str, float]:
        return self.plan.hours()

    def indices(self, rules: RuleSet = WASM2016) -> dict[str, Any]:
        """PLM index per hour in bed, PLMS index per hour of sleep, PLMW index per hour of wake in bed."""
        score = self.score(rules)
        hours = self.observed_hours()
        stages = [self.plan.stage_at(m.onset) for m in score.movements if m.plm]
        plms = sum(1 for s in stages if s in SLEEP_STAGES)
        plmw = sum(1 for s in stages if s == "wake")
        return {
            "plm_index": score.plm_count / hours["in_bed"] if hours["in_bed"] > 0 else None,
            "plms_index": plms / hours["sleep"] if hours["sleep"] > 0 else None,
            "plmw_index": plmw / hours["wake_in_bed"] if hours["wake_in_bed"] > 0 else None,
            "plms_count": plms,
            "plmw_count": plmw,
        }

    # -- JSON
    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        hours = self.observed_hours()
        scores = {}
        for rules in (WASM2016, AASM):
            doc = self.score(rules).to_dict(hours["in_bed"])
            doc.update(self.indices(rules))
            scores[rules.name] = doc
        return {
            "format": TRUTH_FORMAT,
            "note": "Simulated data. This product measures leg movements; it does not diagnose.",
            "time_base": "true wall time, Unix seconds (the CSV t adds only collector jitter of a few ms)",
            "generator": {
                "profile": plan.profile.name,
                "seed": plan.seed,
                "rate_hz": self.rate_hz,
                "legs": list(self.legs),
                "options": self.options,
            },
            "subject": {
                "profile": plan.profile.name,
                "title": plan.profile.title,
                "age": plan.profile.age,
                "plms_target_per_h": round(plan.plms_target, 2),
            },
            "recording": {"start": plan.start, "end": plan.end},
            "in_bed": {"start": plan.lights_off, "end": plan.lights_on},
            "sleep_onset": plan.sleep_onset,
            "hours": hours,
            "stages": [{"start": round(a, 3), "end": round(b, 3), "stage": s} for a, b, s in plan.stages],
            "out_of_bed": [{"start": round(a, 3), "end": round(b, 3)} for a, b in plan.out_of_bed],
            "nonwear": [{"start": round(a, 3), "end": round(b, 3)} for a, b in self.nonwear],
            "movements": [
                {
                    **m.to_dict(),
                    "recorded": self.recorded(m),
                    "in_bed": self.in_bed_at(m.onset),
                    "scored": self.scored(m),
                }
                for m in plan.movements
            ],
            "gaps": [
                {"start": round(g.start, 3), "end": round(g.end, 3), "side": g.side, "ends_series": g.ends_series}
                for g in self.gaps
            ],
            "partner": [
                {"start": round(p["start"], 3), "end": round(p["end"], 3), "amplitude_mg": round(p["amp_g"] * 1000, 2)}
                for p in plan.partner
            ]
            if any(s.partner for s in self.sensors.values())
            else [],
            "sensors": {
                side: {
                    "rate_hz": s.rate_hz,
                    "clock_ppm": round(s.clock_ppm, 3),
                    "noise_mg": round(s.noise_g * 1000, 3),
                    "bias_mg": [round(v * 1000, 2) for v in s.bias_g],
                    "mount_matrix": [[round(v, 6) for v in row] for row in s.mount],
                    "gaps": [{"start": round(a, 3), "end": round(b, 3)} for a, b in s.gaps],
                    "taken_off": [
                        {"start": round(ev["start"], 3), "end": round(ev["end"], 3), "put_back": ev["put_back"]}
                        for ev in s.off
                    ],
                    "slips": [
                        {
                            "start": round(ev["start"], 3),
                            "end": round(ev["end"], 3),
                            "angle_deg": round(float(np.degrees(np.linalg.norm(ev["rotvec"]))), 2),
                        }
                        for ev in s.slips
                    ],
                    "drops": [{"start": round(a, 3), "end": round(b, 3)} for a, b in s.drops],
                }
                for side, s in self.sensors.items()
            },
            "score": scores,
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path
