"""A subject's night in the live detector: what is kept per subject (the checkpoint pickles it), the
per-minute activity points, and when a night ends by the local clock.

A night starts with a subject's first batch and ends after ``idle_end_s`` of silence, when every sensor
said a clean goodbye (``offline``), at ``detector.night_end_local``, or when a hole of ``NIGHT_GAP_S`` in the
data begins a new one (the core, detector/live/core.py, applies these rules).

A subject has one night per *anchor* (the local noon before it, detector.storage.diary.night_start_for): the
night summary is one InfluxDB point at the anchor, so a second night on the same anchor would overwrite the
first one's point. So a night that ended is kept as it was just before its end (:class:`EndedNight`), and if
the subject's data comes back on the same anchor -- a sensor out of range for half an hour at 3 a.m., a
collector restarted after its goodbye, the sensor worn on after the configured end -- the night is *reopened*:
the silence becomes a gap in that night and its summary is written again, instead of a fragment replacing it.
A hole of ``NIGHT_GAP_S`` starts a new night only when the data after it belongs to a later anchor.
"""

from __future__ import annotations

import math
import pickle
import zlib
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from detector.live.ingest import SensorInbox
from detector.scoring.epochs import STAT_SCALE
from detector.scoring.scorer import MovementEvent, NightScorer
from detector.storage import schema
from plm import wire

NIGHT_GAP_S = 2 * 3600.0  # a hole this long in a subject's data starts a new night
SUMMARY_EVERY_S = 60.0  # data time between live summary updates
LEG_LOST_AFTER_S = 30.0  # wall time without data from one leg (while the other goes on) before it is a gap
MINUTE_S = 60.0


@dataclass
class MinuteState:
    """Per-minute activity output of one subject's night (bounded: a few minutes of pending counts)."""

    next_minute: int | None = None  # the first minute not yet written
    tilt_ref: dict[str, np.ndarray] = field(default_factory=dict)  # per side: mean gravity of its first minute
    moves: dict[tuple[Any, ...], tuple[str, int]] = field(default_factory=dict)  # movement key -> (side, minute)

    def count(self, events: list[MovementEvent]) -> None:
        for e in events:
            if e.kind == "twitch":
                continue  # twitches are not leg movements; movement_count counts LMs (incl. long)
            minute = math.floor(e.onset / MINUTE_S)
            if self.next_minute is None or minute >= self.next_minute:
                self.moves[e.key] = (e.side, minute)


def minute_lines(
    subject: str, scorer: NightScorer, minutes: range, state: MinuteState, night_start_s: float
) -> list[str]:
    """The ``activity`` points of ``minutes`` (whole minutes, every leg's data has passed them).

    Everything comes from numbers the scorer keeps anyway (its 30-s epoch rows), so the dashboard's
    activity and the night summary's in-bed/sleep estimate have one definition:
    ``activity_g`` = mean activity envelope (dynamic acceleration, gravity removed), ``active_s`` =
    seconds above the movement offset level, ``tilt_deg`` = angle of the minute's mean gravity against
    the leg's first minute of the night, ``posture`` = ``upright``/``lying`` (against the leg's learned
    upright direction, else the in-bed estimate), plus ``in_bed``/``asleep`` -- estimates, not PSG."""
    params = scorer.params
    epoch_s = params.epoch_s
    per_minute = MINUTE_S / epoch_s
    classes = scorer.epoch_classification()
    known = classes.epochs

    def flags_of(keys: range) -> list[tuple[bool, bool]]:
        out = []
        for k in keys:
            i = int(np.searchsorted(known, k))
            if i < known.shape[0] and known[i] == k:
                out.append((bool(classes.in_bed[i]), bool(classes.asleep[i])))
        return out

    counts: dict[tuple[str, int], int] = {}
    for key, (side, minute) in list(state.moves.items()):
        if minute < minutes.stop:
            del state.moves[key]
            for leg in scorer.sides if side == "bilateral" else (side,):
                counts[(leg, minute)] = counts.get((leg, minute), 0) + 1
    lines: list[str] = []
    lying_cos = math.cos(math.radians(params.lying_angle_deg))
    for side in scorer.sides:
        table = scorer.epoch_table(side)
        rate = scorer.leg_rate_hz(side)
        up = classes.upright.get(side)
        for m in minutes:
            lo_s = max(m * MINUTE_S, night_start_s)
            expected = (m + 1) * MINUTE_S - lo_s
            first = math.ceil(m * per_minute - 1e-9)
            keys = range(first, math.ceil((m + 1) * per_minute - 1e-9))
            rows = [table[k] for k in keys if k in table]
            if not rows or not rate:
                lines.append(schema.activity_point(subject, side, m * MINUTE_S, missing_fraction=1.0))
                continue
            total = np.sum(rows, axis=0) if len(rows) > 1 else rows[0]
            n = float(total[0])
            gravity = total[1:4] / (n * STAT_SCALE)
            norm = float(np.linalg.norm(gravity)) or 1.0
            unit = gravity / norm
            ref = state.tilt_ref.setdefault(side, unit)
            tilt = math.degrees(math.acos(max(-1.0, min(1.0, float(unit @ ref)))))
            flags = flags_of(keys)
            in_bed = sum(b for b, _ in flags) * 2 >= len(flags) if flags else None
            asleep = sum(a for _, a in flags) * 2 > len(flags) if flags else None
            posture: str | None
            if up is not None:
                posture = "lying" if float(unit @ up) < lying_cos else "upright"
            else:
                posture = None if in_bed is None else ("lying" if in_bed else "upright")
            lines.append(
                schema.activity_point(
                    subject,
                    side,
                    m * MINUTE_S,
                    activity_g=float(total[5]) / (n * STAT_SCALE),
                    active_s=float(total[4]) / rate,
                    movement_count=counts.get((side, m), 0),
                    posture=posture,
                    tilt_deg=tilt,
                    missing_fraction=min(1.0, max(0.0, 1.0 - n / (rate * expected))) if expected > 0 else 0.0,
                )
            )
            if in_bed is not None:
                fields = {"in_bed": in_bed, "asleep": bool(asleep)}
                tags = {"subject": subject, "side": side}
                lines.append(schema.line(schema.ACTIVITY, tags, fields, schema.to_ms(m * MINUTE_S)))
    state.next_minute = minutes.stop
    return lines


def parse_local_time(text: str | None) -> tuple[int, int] | None:
    """``detector.night_end_local`` ("HH:MM", 24 h) as (hour, minute); a clear error for anything else."""
    if text is None or not str(text).strip():
        return None
    try:
        hour_text, minute_text = str(text).strip().split(":")
        hour, minute = int(hour_text), int(minute_text)
    except ValueError:
        raise ValueError(f"detector.night_end_local {text!r}: expected HH:MM, e.g. 07:30") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"detector.night_end_local {text!r}: hour 0-23 and minute 0-59")
    return hour, minute


def next_local_time(after_s: float, hour: int, minute: int) -> float:
    """The first moment after ``after_s`` (Unix s) when the local clock shows hour:minute."""
    start = datetime.fromtimestamp(after_s).astimezone()
    candidate = start.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() <= after_s:
        candidate = (start + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate.timestamp()


@dataclass(frozen=True)
class EndedNight:
    """A subject's night as it was just before it ended, kept until data of a later anchor arrives or the
    anchor's day is over, so that data coming back on the same anchor reopens it. Pickled and compressed:
    ~250 kB for a severe 8-h two-leg night (560 kB pickled), less than the live night it replaces."""

    anchor: float  # night_start_for(night_start_s)
    reached: float  # data time the night had reached (every leg)
    ended_by_local_time: bool  # ended at detector.night_end_local: once reopened, that end has passed
    emitted: dict[tuple[Any, ...], MovementEvent]  # what the end released, not to be written again when reopened
    state: bytes

    @classmethod
    def of(
        cls, state: SubjectState, anchor: float, *, by_local_time: bool, emitted: dict[tuple[Any, ...], MovementEvent]
    ) -> EndedNight:
        reached = max(state.last_t.values(), default=state.night_start_s or 0.0)
        blob = zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)
        return cls(anchor, reached, by_local_time, emitted, blob)

    def reopen_into(self, current: SubjectState) -> None:
        """Turn ``current`` (the fresh state after the end) back into the ended night, in place (callers hold
        it), keeping what describes the present: the reorder buffers, held batches, sensors and wall clocks."""
        night: SubjectState = pickle.loads(zlib.decompress(self.state))
        keep = {
            "inboxes",
            "held",
            "sensor_of_side",
            "last_wall",
            "last_wall_by_side",
            "run_start_t",
            "nights_finished",
        }
        for f in fields(SubjectState):
            if f.name not in keep:
                setattr(current, f.name, getattr(night, f.name))
        current.offline_sides = set()
        current.summary_written = {}  # the end wrote final versions of them: the reopened night's differ
        current.ended_night = None
        current.local_end_passed = self.ended_by_local_time
        current.emitted_at_end = self.emitted


@dataclass
class SubjectState:
    """Everything the service keeps per subject; picklable for the checkpoint."""

    subject: str
    sides: tuple[str, ...]
    scorer: NightScorer
    night_start_s: float | None = None
    inboxes: dict[str, SensorInbox] = field(default_factory=dict)  # by side
    sensor_of_side: dict[str, str] = field(default_factory=dict)
    last_t: dict[str, float] = field(default_factory=dict)  # data time reached per side
    last_summary_t: float = -math.inf
    last_wall: float = 0.0
    first_wall: float = 0.0  # when the night's first batch arrived (wall clock)
    last_wall_by_side: dict[str, float] = field(default_factory=dict)
    run_start_t: dict[str, float] = field(default_factory=dict)  # per side: data time its run without a hole began
    offline_sides: set[str] = field(default_factory=set)  # sensors that said a clean goodbye
    nights_finished: int = 0
    minutes: MinuteState = field(default_factory=MinuteState)
    held: dict[str, list[wire.SampleBatch]] = field(default_factory=dict)  # released, not yet scored (per side)
    # the night's summary points as last written, by (series key, timestamp): unchanged ones are not rewritten
    summary_written: dict[tuple[str, str], str] = field(default_factory=dict)
    ended_night: EndedNight | None = None  # the previous night, until a later anchor's data arrives
    local_end_passed: bool = False  # a reopened night ended at the local time once: it ends on silence now
    # movements the end of the night wrote before it was reopened: written again only if they changed
    emitted_at_end: dict[tuple[Any, ...], MovementEvent] = field(default_factory=dict)
