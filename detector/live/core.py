"""The live detector's core, sans I/O: messages and clock ticks in, effects out.

In the spirit of h11: :class:`DetectorCore` takes ``(topic, payload)`` messages with the wall time they are
applied at, and clock ticks, and returns :class:`Effects` -- InfluxDB points to write, MQTT results to
publish, dead letters to file. It holds no client, socket, clock or database; its state is the checkpoint
(:meth:`DetectorCore.snapshot`). The service around it (detector/live/service.py) reads the broker, journals,
acknowledges, writes the effects and checkpoints; journal replay, ``plm demo``, the soak and the tests feed
the same core, so they cannot disagree with the live path.

Data path inside: route the topic (detector/live/routing.py) -> decode and validate (plm/wire.py) -> the
leg's reorder buffer (detector/live/ingest.py) -> hold for the chunk the service chose
(detector/live/chunk_policy.py) -> the offline scorer (detector/scoring/scorer.py, fed batch by batch, so live and
``plm score`` results cannot disagree) -> schema points (detector/storage/schema.py) and MQTT results
(detector/live/outputs.py). A subject's night (detector/live/night.py) ends on silence, a goodbye, a hole
or the local clock. Acknowledgement marks are detector/live/acks.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detector.live.acks import AckTracker
from detector.live.ingest import SensorInbox
from detector.live.night import (
    LEG_LOST_AFTER_S,
    MINUTE_S,
    NIGHT_GAP_S,
    SUMMARY_EVERY_S,
    EndedNight,
    MinuteState,
    SubjectState,
    minute_lines,
    next_local_time,
    parse_local_time,
)
from detector.live.outputs import discovery_configs, movement_payload, night_payload
from detector.live.routing import Router, side_from_sensor_id
from detector.scoring.scorer import MovementEvent, NightScorer, NightSummary
from detector.storage import schema
from detector.storage.diary import DiaryError, DiaryNote, diary_lines, merge_notes, night_start_for, parse_diary_payload
from detector.storage.night_points import summary_lines
from plm import wire
from plm.config import Settings, SubjectSettings
from plm.logs import RateLimitedLog
from plm.rules import RULESETS

log = logging.getLogger(__name__)

BAD_REASONS = ("topic", "payload", "clock", "samples", "unknown_subject", "unknown_sensor", "diary", "retained")
"""What a message can be refused for (``late`` is counted on its own). ``retained``: a sample batch or diary
note published with the retain flag, which a broker hands to every new subscriber again (ignored, not scored)."""
FATAL = (MemoryError,)
"""Never dead-lettered: not one message's fault (the service's storage failures never reach the core)."""
ANCHOR_DAY_S = 86400.0  # an ended night can be reopened until the next anchor (local noon; 23-25 h across DST)
DIARY_NIGHTS_KEPT = 3  # a subject's merged diary notes are kept for the nights this recent


@dataclass
class Stats:
    received: int = 0
    ignored_other_shard: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    movements: int = 0
    nights_finished: int = 0
    nights_reopened: int = 0  # data came back on an ended night's anchor (detector/live/night.py)
    checkpoints_discarded: int = 0  # written by another version of the detector (see the service's _restore)
    holes_given_up: int = 0  # seq holes waited for in vain (detector/live/ingest.py): a gap where data was sent


@dataclass(frozen=True, slots=True)
class Publish:
    """An MQTT result to publish (QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Something that raised while being applied, set aside (the service files it in its journal)."""

    topic: str
    payload: bytes
    error: str
    traceback: str
    stage: str  # "message", or the subject's step ("scoring", "night end", ...)
    key: str | None  # a journal row or a batch's start: the same thing is filed once


@dataclass
class Effects:
    """What one call of the core asks the world to do, in order."""

    points: list[str] = field(default_factory=list)  # InfluxDB line protocol, idempotent
    publishes: list[Publish] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.points or self.publishes or self.dead_letters)


def _timestamps_s(batches: list[wire.SampleBatch]) -> np.ndarray:
    """The sample times of consecutive batches, as ``SampleBatch.timestamps_s`` gives them (same floats), in
    one numpy expression when they share rate and length (always, from one sensor) instead of one per batch."""
    first = batches[0]
    if len(batches) == 1:
        return first.timestamps_s()
    rate, count = first.rate_hz, first.count
    if any(b.rate_hz != rate or b.count != count for b in batches):
        return np.concatenate([b.timestamps_s() for b in batches])
    starts = np.array([b.start_ns for b in batches], dtype=np.int64) / 1e9
    return (starts[:, None] + np.arange(count) / rate).ravel()


class DetectorCore:
    """Every subject's night of one detector process (or one shard of several), without I/O.

    ``chunk_s`` is set by the service's chunk policy before each call (0: score every batch on arrival);
    ``holding`` says that some leg holds released batches not yet scored (:meth:`flush_holds`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        shard: tuple[int, int] = (0, 1),
        idle_end_s: float = 1800.0,
        publish_results: bool = True,
        leg_lost_after_s: float = LEG_LOST_AFTER_S,
    ) -> None:
        self.settings = settings
        self.rules = RULESETS[settings.detector.rules]
        self.idle_end_s = idle_end_s
        self.night_end_local = parse_local_time(settings.detector.night_end_local)
        self.publish_results = publish_results
        self.leg_lost_after_s = leg_lost_after_s
        self.chunk_s = 0.0
        self.holding = False
        self.route = Router(shard, self._side_of)
        self.stats = Stats()
        self.subjects: dict[str, SubjectState] = {}
        self.diary: dict[tuple[str, float], DiaryNote] = {}  # latest merged note per (subject, night)
        self.acks = AckTracker()
        self._touched: set[str] = set()  # subjects scored in this call: minutes and summary are due
        self._discovery_sent: set[str] = set()
        self._effects = Effects()
        self._limited = RateLimitedLog(log)

    # ------------------------------------------------------------------ the API

    def handle(self, messages: Sequence[tuple[str, bytes]], wall_s: float, ids: Sequence[int] = ()) -> Effects:
        """Apply messages in order, as received at wall time ``wall_s`` (live, or replayed from the journal)."""
        self._effects = Effects()
        self._apply_many(messages, wall_s, ids)
        return self._effects

    def tick(self, wall_s: float) -> Effects:
        """The clock moved on: end the nights that are idle or past the configured local end."""
        self._effects = Effects()
        self._end_nights_due(wall_s)
        return self._effects

    def end_all_nights(self) -> Effects:
        """Finish every night now (a stop that was asked to finish them)."""
        self._effects = Effects()
        for state in list(self.subjects.values()):
            with self._contained(state.subject, "night end"):
                self._end_night(state)
        return self._effects

    def filter_received(self, messages: Sequence[Any]) -> list[tuple[str, bytes]]:
        """The messages (with ``topic``, ``payload``, ``retain``) this replica journals and applies: its own
        shard's, without retained sample batches and notes -- a retained one comes again with every new
        subscription and was scored live already, when the broker passed it on without the flag. Not
        journaled, because a replayed row has no flag."""
        owned: list[tuple[str, bytes]] = []
        route = self.route
        for m in messages:
            topic = m.topic
            r = route(topic)
            if not r.owned:
                self.stats.ignored_other_shard += 1
            elif m.retain and (topic.endswith("/_diary") or (r.parsed is not None and r.parsed.kind == "acc")):
                self._bad("retained", f"ignoring a retained message on {topic!r}: samples and notes are not retained")
            else:
                owned.append((topic, m.payload))
        return owned

    def sensor_count(self) -> int:
        return sum(len(s.inboxes) for s in self.subjects.values())

    def snapshot(self) -> dict[str, Any]:
        """The state a checkpoint keeps (pickled by the service with its journal position)."""
        return {"subjects": self.subjects, "stats": self.stats, "diary": self.diary, "acks": self.acks}

    def restore(self, state: dict[str, Any], wall_s: float) -> None:
        """Load a :meth:`snapshot`. A leg is lost after ``leg_lost_after_s`` of *this* process hearing nothing
        from it: the journal rows replayed next (and the backlog after them) are applied at today's wall clock,
        so the checkpoint's times would count the detector's own downtime as every leg's silence -- and
        declare the leg that is behind lost up to the other, refusing its next seconds as already scored."""
        self.subjects = state["subjects"]
        self.stats = state["stats"]
        self.diary = state["diary"]
        self.acks = state["acks"]
        self.acks.last_publish.clear()  # monotonic times of the previous process
        self.acks.resend_all()
        for subject in self.subjects.values():
            subject.last_wall_by_side = dict.fromkeys(subject.sides, wall_s)

    # ------------------------------------------------------------------ applying messages

    def _apply_many(self, messages: Sequence[tuple[str, bytes]], wall: float, ids: Sequence[int] = ()) -> None:
        """Process messages in order. Samples released by the reorder buffers are collected per leg
        and scored as one chunk per leg at the end (or before a status message of that subject):
        the scorer gives the same result for any chunking, and one call per leg per group instead
        of one per batch is what lets a single process keep up with thousands of sensors.

        Never raises for a message: what the wire format refuses is counted (``bad_<reason>``); what still
        raises while being applied -- a bug the validation missed -- becomes a :class:`DeadLetter` effect with
        its error (``ids`` are the messages' journal rows, so a replay does not file it twice) and the rest
        goes on."""
        pending: dict[tuple[str, str], list[wire.SampleBatch]] = {}
        stats = self.stats
        route_of = self.route
        decode = wire.decode
        add_ack = self.acks.add
        accept = self._accept_batch
        for index, (topic, payload) in enumerate(messages):
            stats.received += 1
            try:
                route = route_of(topic)
                parsed = route.parsed
                if parsed is None:
                    self._apply_other(topic, payload, wall)
                elif parsed.kind == "acc":
                    decoded = decode(payload)
                    # journaled (this runs after the commit, or in replay of committed rows): may be acked
                    add_ack(parsed.subject, parsed.sensor, decoded)
                    released = accept(parsed, decoded, wall, route.side)
                    if released:
                        key, due = released
                        held = pending.get(key)
                        if held is None:
                            pending[key] = due
                        else:
                            held.extend(due)
                elif not payload:
                    continue  # a retained status being cleared (an empty retained message): nothing to apply
                else:
                    status = wire.decode_status(payload)
                    self._score_pending(pending, parsed.subject, wall)
                    self._apply_status(parsed, status, wall)
            except wire.WireFormatError as exc:
                text = str(exc)
                kind = "clock" if "start time" in text or "time_ns" in text or "status time" in text else "payload"
                self._bad(kind, f"bad payload on {topic!r}: {exc}")
            except FATAL:
                raise
            except Exception as exc:
                self._dead_letter(topic, payload, exc, key=f"row {ids[index]}" if ids else None)
        self._score_pending(pending, None, wall)
        self._write_outputs()

    def _apply_other(self, topic: str, payload: bytes, wall: float) -> None:
        """A message on a topic that is not a sensor's: a diary note, our own status, or a bad topic."""
        try:
            if topic.endswith("/_diary"):
                self._apply_diary(topic, payload, wall)
                return
            wire.parse_sensor_topic(topic)  # raises: say what is wrong with it
        except wire.WireFormatError as exc:
            if topic.startswith(f"{wire.TOPIC_ROOT}/_"):
                return  # our own detector status (it matches the status wildcard)
            self._bad("topic", f"ignoring message on {topic!r}: {exc}")

    def _score_pending(
        self,
        pending: dict[tuple[str, str], list[wire.SampleBatch]],
        subject: str | None,
        wall: float,
    ) -> None:
        """Hand released batches to their leg's hold and score every leg whose hold spans ``chunk_s``.
        ``subject`` given (a status message of that subject comes next): score all it holds, now."""
        touched = set()
        for key in [k for k in pending if subject is None or k[0] == subject]:
            batches = pending.pop(key)
            state = self.subjects.get(key[0])
            if state is not None:
                held = state.held
                leg = held.get(key[1])
                if leg:
                    leg.extend(batches)
                else:
                    held[key[1]] = batches
                touched.add(key[0])
        for name in touched | ({subject} if subject is not None else set()):
            state = self.subjects.get(name)
            if state is not None:
                with self._contained(name, "held batches"):
                    self._score_held(state, force=subject is not None)
        for name in touched:
            with self._contained(name, "lost-leg check"):
                self._release_lagging_legs(self.subjects[name], wall)

    def flush_holds(self) -> Effects:
        """Score whatever legs still hold (batches kept for a longer chunk while the service was behind): the
        service calls this in a real lull, when latency is free (``ChunkPolicy.lull``)."""
        self._effects = Effects()
        self.holding = False
        for state in list(self.subjects.values()):
            if state.held and any(state.held.values()):
                with self._contained(state.subject, "held batches"):
                    self._score_held(state, force=True)
        self._write_outputs()
        return self._effects

    def _write_outputs(self) -> None:
        """Once per group, not per leg: the activity minutes and live summaries of the subjects scored in
        it, then every point of the group to the outbox in one transaction (one fsync, not dozens)."""
        touched, self._touched = self._touched, set()
        for name in touched:
            state = self.subjects.get(name)
            if state is None or state.night_start_s is None:
                continue
            with self._contained(name, "minutes and summary"):
                self._write_minutes(state)
                reached = max(state.last_t.values(), default=-math.inf)
                if reached - state.last_summary_t >= SUMMARY_EVERY_S:
                    state.last_summary_t = reached  # first: a summary that fails is not retried every group
                    self._write_summary(state, state.scorer.summary())

    def _put(self, lines: list[str]) -> None:
        self._effects.points.extend(lines)

    def _score_held(self, state: SubjectState, force: bool = False, side: str | None = None) -> None:
        """Score held batches as one chunk per leg. The scorer's cost per call is mostly fixed (filter
        calls), so under load longer chunks (``chunk_s`` grows with the backlog) keep one process up
        with thousands of sensors; results are the same for any chunking, only the latency changes."""
        held = state.held
        if not held:
            return
        chunk_ns = self.chunk_s * 1e9
        for leg in [side] if side is not None else list(held):
            batches = held.get(leg)
            if not batches:
                continue
            if force or batches[-1].end_ns - batches[0].start_ns >= chunk_ns:
                held[leg] = []
                self._score(state, leg, batches)
            else:
                self.holding = True

    def _release_lagging_legs(self, state: SubjectState, wall: float) -> None:
        """A leg whose sensor has sent nothing for ``leg_lost_after_s`` of wall time while the other leg
        goes on is lost for now: it becomes a gap up to the other leg's time, so the working leg's
        movements are not held back all night. Wall time, not data time: a replay at 1000x must not
        declare a leg lost because its batches came a few milliseconds after the other's. "Goes on": the
        leading leg's data has run on without a hole for ``leg_lost_after_s`` too -- after a silence of both
        (the collector or the broker away), the leg whose batch comes back first must not declare the other
        lost. Data time for that run, so that groups applied minutes apart (a backlog) do not restart it."""
        if len(state.sides) < 2 or not state.last_t:
            return
        lead = max(state.last_t.values())
        leaders = [side for side, t in state.last_t.items() if t == lead]
        if all(lead - state.run_start_t.get(side, -math.inf) <= self.leg_lost_after_s for side in leaders):
            return
        events: list[MovementEvent] = []
        for side in state.sides:
            reached = state.last_t.get(side, state.night_start_s)
            heard = state.last_wall_by_side.get(side, state.first_wall)
            if reached is not None and reached < lead and wall - heard > self.leg_lost_after_s:
                self._score_held(state, force=True, side=side)
                if (inbox := state.inboxes.get(side)) is not None:  # silent: nothing newer will release these
                    self._score(state, side, inbox.flush(), may_end_night=False)
                reached = state.last_t.get(side, state.night_start_s)
                if reached is not None and reached >= lead:
                    continue
                events += state.scorer.mark_gap(side, lead, since=state.night_start_s)
                state.last_t[side] = lead
                self._touched.add(state.subject)
        self._emit(state, events)

    @contextlib.contextmanager
    def _contained(self, subject: str, stage: str) -> Iterator[None]:
        """One subject's step of the group: if it raises (a bug -- input is validated at the wire), the step is
        dead-lettered under the subject's name and every other subject is scored on. A night end that fails
        is tried again a second later (the subject's state is unchanged), and dead-lettered once (same key)."""
        try:
            yield
        except FATAL:
            raise
        except Exception as exc:
            self._dead_letter(
                f"{wire.TOPIC_ROOT}/{subject}", b"", exc, key=f"{subject} {stage} {exc!r}"[:300], stage=stage
            )

    def _dead_letter(
        self, topic: str, payload: bytes, exc: Exception, *, key: str | None = None, stage: str = "message"
    ) -> None:
        """Set aside what raised while being applied, with its error: the service files it in the journal's
        dead-letter table (docs/reliability.md). ``key`` (a journal row, a batch's start) keeps a replay from
        filing the same thing twice."""
        trace = "".join(traceback.format_exception(exc))
        self._effects.dead_letters.append(
            DeadLetter(topic, bytes(payload), f"{type(exc).__name__}: {exc}", trace, stage, key)
        )

    def _hole_given_up(self, subject: str, sensor: str, count: int) -> None:
        self.stats.holes_given_up += count
        self._limited.warning(
            "hole",
            f"{subject}/{sensor}: batches missing by seq did not come within detector.hole_wait_s; scored as a gap",
        )

    def _bad(self, kind: str, message: str) -> None:
        self.stats.bad[kind] += 1
        self._limited.warning(kind, message)

    def _subject_config(self, subject: str) -> SubjectSettings | None:
        return self.settings.subject(subject)

    def _state(self, subject: str, side: str, sensor: str) -> SubjectState | None:
        state = self.subjects.get(subject)
        if state is not None:
            return state
        config = self._subject_config(subject)
        if self.settings.subjects and config is None:
            self._bad("unknown_subject", f"samples for unknown subject {subject!r} ignored (not in configuration)")
            return None
        sides = tuple(sorted({s.side for s in config.sensors})) if config and config.sensors else ("left", "right")
        state = SubjectState(subject, sides, NightScorer(self.rules, sides=sides))
        self.subjects[subject] = state
        return state

    def _side_of(self, subject: str, sensor: str) -> str | None:
        config = self._subject_config(subject)
        if config is not None:
            for s in config.sensors:
                if s.id == sensor:
                    return s.side
        state = self.subjects.get(subject)
        if state is not None:
            for side, known in state.sensor_of_side.items():
                if known == sensor:
                    return side
        return side_from_sensor_id(sensor)

    def _accept_batch(
        self, parsed: wire.SensorTopic, batch: wire.SampleBatch, wall: float, side: str | None = None
    ) -> tuple[tuple[str, str], list[wire.SampleBatch]] | None:
        """Route a batch to its leg's reorder buffer; return what the buffer releases."""
        if side is None:
            side = self._side_of(parsed.subject, parsed.sensor)
        if side is None:
            self._bad("unknown_sensor", f"cannot tell the side of sensor {parsed.subject}/{parsed.sensor}")
            return None
        state = self.subjects.get(parsed.subject) or self._state(parsed.subject, side, parsed.sensor)
        if state is None:
            return None
        inbox = state.inboxes.get(side)
        if inbox is None:
            if side not in state.sides:
                self._bad("unknown_sensor", f"{parsed.subject} has no {side} leg configured")
                return None
            detector = self.settings.detector
            inbox = state.inboxes[side] = SensorInbox(detector.reorder_window_s, detector.hole_wait_s)
        state.sensor_of_side.setdefault(side, parsed.sensor)
        counts = inbox.counts
        late_before, holes_before = counts["late"], counts["holes_given_up"]
        released = inbox.add(batch)
        if counts["late"] > late_before:
            self._bad("late", f"batch from {parsed.subject}/{parsed.sensor} arrived after its reorder window")
        if counts["holes_given_up"] > holes_before:
            self._hole_given_up(parsed.subject, parsed.sensor, counts["holes_given_up"] - holes_before)
        state.last_wall = wall
        state.last_wall_by_side[side] = wall
        if not state.first_wall:
            state.first_wall = wall
        return (parsed.subject, side), released

    def _score(
        self, state: SubjectState, side: str, batches: list[wire.SampleBatch], *, may_end_night: bool = True
    ) -> None:
        """Score consecutive batches of one leg as one chunk (split where a new night begins)."""
        if not batches:
            return
        if may_end_night and state.night_start_s is not None:
            reached = max(state.last_t.values(), default=state.night_start_s)
            anchor = night_start_for(state.night_start_s)
            first_new = next(
                (
                    i
                    for i, b in enumerate(batches)
                    if b.start_ns / 1e9 - reached > NIGHT_GAP_S and night_start_for(b.start_ns / 1e9) != anchor
                ),
                None,
            )
            if first_new is not None:
                self._score(state, side, batches[:first_new], may_end_night=False)
                state = self._end_night(state)
                batches = batches[first_new:]
        if state.night_start_s is None:
            self._start_or_reopen(state, batches[0].start_ns / 1e9)
        done = state.last_t.get(side, -math.inf)
        fresh = [b for b in batches if b.start_ns / 1e9 > done]
        if len(fresh) < len(batches):
            self._bad("samples", f"{state.subject} {side}: batch overlaps data already scored")
        if not fresh:
            return
        t = _timestamps_s(fresh)
        xyz = np.concatenate([b.xyz for b in fresh]) if len(fresh) > 1 else fresh[0].xyz
        state.offline_sides.discard(side)
        try:
            events = state.scorer.feed(side, t, xyz)
        except ValueError as exc:  # samples the scorer refuses (e.g. time going backwards)
            self._bad("samples", f"samples of {state.subject} {side} refused: {exc}")
            return
        except FATAL:
            raise
        except Exception as exc:  # a scorer bug: set these batches aside, keep scoring everyone else
            topic = wire.acc_topic(state.subject, state.sensor_of_side.get(side, side))
            for b in fresh:
                self._dead_letter(topic, wire.encode_binary(b), exc, key=f"{topic} {b.start_ns}", stage="scoring")
            return
        if t[0] - state.last_t.get(side, -math.inf) > self.leg_lost_after_s:
            state.run_start_t[side] = float(t[0])  # the leg's data begins, or resumes after a hole
        state.last_t[side] = float(t[-1])
        self._touched.add(state.subject)  # minutes and summary: once per group (_write_outputs)
        with self._contained(state.subject, "movements"):
            self._emit(state, events)

    def _flush_inboxes(self, state: SubjectState) -> None:
        self._score_held(state, force=True)
        for side, inbox in state.inboxes.items():
            holes_before = inbox.counts["holes_given_up"]
            released = inbox.flush()
            if inbox.counts["holes_given_up"] > holes_before:
                sensor = state.sensor_of_side.get(side, side)
                self._hole_given_up(state.subject, sensor, inbox.counts["holes_given_up"] - holes_before)
            self._score(state, side, released, may_end_night=False)

    def _apply_status(self, parsed: wire.SensorTopic, status: wire.SensorStatus, wall: float) -> None:
        side = status.side or self._side_of(parsed.subject, parsed.sensor)
        if side is not None:
            self._put(
                [
                    schema.sensor_status_point(
                        parsed.subject,
                        side,
                        (status.time_ns / 1e9) if status.time_ns else wall,
                        state=status.state,
                        sensor_id=parsed.sensor,
                        battery_pct=status.battery_pct,
                        rssi_dbm=status.rssi_dbm,
                        rate_hz=status.rate_hz,
                        dropped_samples=status.frames_dropped,
                    )
                ]
            )
        state = self.subjects.get(parsed.subject)
        if status.state == "offline" and state is not None and side in state.sensor_of_side:
            # a clean goodbye: once every sensor of the subject has said it, the night is over
            state.offline_sides.add(side)
            if set(state.sensor_of_side) <= state.offline_sides:
                self._end_night(state)

    def _apply_diary(self, topic: str, payload: bytes, wall: float) -> None:
        parts = topic.split("/")
        if len(parts) != 4:
            raise wire.WireFormatError(f"not a diary topic: {topic!r}")
        subject = wire.validate_id(parts[2], "subject")
        try:
            note = parse_diary_payload(payload)
        except DiaryError as exc:
            self._bad("diary", f"bad diary note for {subject}: {exc}")
            return
        anchor = night_start_for(note.time_s if note.time_s is not None else wall)
        # a night has one diary point: a second note is merged into the first, not written over it
        key = (subject, anchor)
        previous = self.diary.get(key)
        merged = merge_notes(previous, note)
        if merged == previous:  # a QoS 1 redelivery, or a note the night has already: nothing new to write
            return
        self.diary[key] = merged
        for old in [k for k in self.diary if k[1] < anchor - 3 * 86400]:
            del self.diary[old]  # keep a few nights, not the whole history
        self._put(diary_lines(subject, merged, wall))

    # ------------------------------------------------------------------ outputs

    def _emit(self, state: SubjectState, events: list[MovementEvent]) -> None:
        if state.emitted_at_end:  # a reopened night: what its end wrote already is not written twice
            events = [e for e in events if state.emitted_at_end.get(e.key) != e]
        if not events:
            return
        state.minutes.count(events)
        lines: list[str] = []
        for e in events:
            lines.append(schema.movement_from(state.subject, e))
            lines += schema.leg_state_points(state.subject, e.onset, e.duration, e.side, e.kind, e.plm)
        self._put(lines)
        self.stats.movements += len(events)
        if self.publish_results:
            topic = wire.movement_topic(state.subject)
            self._effects.publishes += [Publish(topic, movement_payload(e)) for e in events]

    def _write_minutes(self, state: SubjectState) -> None:
        """Write the ``activity`` points of the minutes every leg has passed (and, for the sleep estimate,
        one epoch beyond, since wake spreads to neighbouring epochs); the night's end writes them all again
        (:meth:`_rewrite_minutes`)."""
        if state.night_start_s is None:
            return
        minutes = state.minutes
        if minutes.next_minute is None:
            minutes.next_minute = math.floor(state.night_start_s / MINUTE_S)
        watermark = state.scorer.watermark
        if not math.isfinite(watermark):
            return  # a leg without data yet: nothing is complete
        stop = math.floor((watermark - state.scorer.params.epoch_s) / MINUTE_S)
        if stop <= minutes.next_minute:
            return
        self._put(
            minute_lines(state.subject, state.scorer, range(minutes.next_minute, stop), minutes, state.night_start_s)
        )

    def _rewrite_minutes(self, state: SubjectState, summary: NightSummary) -> None:
        """At the night's end, every minute of it again, from the final night.

        Minutes written live are classified with what was known then: the leg's upright direction is
        learned from walking, and before any walk a restless night's most vigorous epochs are kicking in
        bed, so early minutes can say "upright" that the whole night shows were lying. The points are
        idempotent (same series, same time), so writing them again replaces posture, in bed and asleep
        with the final estimate -- the one the night summary's time in bed uses -- and the movement counts
        with the final movements."""
        if state.night_start_s is None:
            return
        reached = max(state.last_t.values(), default=state.night_start_s)
        first = math.floor(state.night_start_s / MINUTE_S)
        final = MinuteState(next_minute=first)
        final.count(list(summary.events))
        minutes = range(first, math.floor(reached / MINUTE_S) + 1)
        self._put(minute_lines(state.subject, state.scorer, minutes, final, state.night_start_s))

    def _write_summary(self, state: SubjectState, summary: NightSummary) -> None:
        fields = summary.fields
        start = state.night_start_s if state.night_start_s is not None else fields.get("start")
        if start is None:
            return
        events = [e.to_dict() for e in summary.events]
        lines = summary_lines(state.subject, fields, events, final=bool(fields.get("final")))
        # every minute the summary is rebuilt whole; a point that did not change since it was last written (a
        # finished hour, a closed series) is not written again: 5-7x fewer writes, the same points stored
        written = state.summary_written
        changed = [line for line in lines if written.get(schema.point_key(line)) != line]
        written.update((schema.point_key(line), line) for line in changed)
        self._put(changed)
        if self.publish_results:
            self._effects.publishes.append(Publish(wire.night_topic(state.subject), night_payload(fields, start), True))
            self._send_discovery(state.subject)

    def _start_or_reopen(self, state: SubjectState, t0: float) -> None:
        """A subject's data starts (again) at ``t0``: reopen the night that ended on the same anchor, if any
        (detector/live/night.py: one night per anchor), else begin a new night there."""
        ended, state.ended_night = state.ended_night, None
        if ended is not None and night_start_for(t0) == ended.anchor:
            ended.reopen_into(state)
            self.stats.nights_reopened += 1
            log.info("night of %s reopened: its data came back %.0f min after it ended", state.subject,
                     max(0.0, t0 - ended.reached) / 60)  # fmt: skip
            return
        state.night_start_s = t0

    def _end_night(self, state: SubjectState, *, by_local_time: bool = False) -> SubjectState:
        """Score what is held, finalise the night, write it; return the subject's fresh state (which keeps the
        night as it was before its end, to reopen it if data of the same anchor comes back)."""
        self._flush_inboxes(state)
        ended = None
        if state.night_start_s is not None:
            before = {e.key: e for e in state.scorer.summary().events}
            anchor = night_start_for(state.night_start_s)
            kept = EndedNight.of(state, anchor, by_local_time=by_local_time, emitted=state.emitted_at_end)
            summary = state.scorer.finish()
            released = [e for e in summary.events if before.get(e.key) != e]
            self._emit(state, released)
            ended = replace(kept, emitted={**kept.emitted, **{e.key: e for e in released}})
            self._rewrite_minutes(state, summary)
            self._write_summary(state, summary)
            self.stats.nights_finished += 1
            log.info(
                "night of %s finished: PLM index %.1f/h, %d PLMs",
                state.subject,
                summary.fields.get("plm_index") or 0.0,
                summary.fields.get("plm_count", 0),
            )
        fresh = SubjectState(state.subject, state.sides, NightScorer(self.rules, sides=state.sides))
        fresh.sensor_of_side = dict(state.sensor_of_side)
        fresh.nights_finished = state.nights_finished + 1
        fresh.last_wall = state.last_wall
        fresh.ended_night = ended if ended is not None else state.ended_night
        self.subjects[state.subject] = fresh
        return fresh

    def _end_nights_due(self, wall: float) -> None:
        """End nights after ``idle_end_s`` of silence, or at ``detector.night_end_local`` once data has been
        flowing for more than an hour (the local clock passing HH:MM after the night's first data)."""
        for state in list(self.subjects.values()):
            if state.night_start_s is None:
                if state.ended_night is not None and wall >= state.ended_night.anchor + ANCHOR_DAY_S:
                    state.ended_night = None  # its day is over: no data can reopen it
                continue
            with self._contained(state.subject, "night end"):
                if wall - state.last_wall > self.idle_end_s:
                    self._end_night(state)
                elif self._past_local_end(state, wall):
                    log.info("night of %s ends at the configured local time", state.subject)
                    self._end_night(state, by_local_time=True)

    def _past_local_end(self, state: SubjectState, wall: float) -> bool:
        if (
            self.night_end_local is None
            or state.local_end_passed
            or not state.first_wall
            or wall - state.first_wall <= 3600
        ):
            return False
        return wall >= next_local_time(state.first_wall, *self.night_end_local)

    def _send_discovery(self, subject: str) -> None:
        """Home Assistant MQTT discovery, once per subject and process (retained by the broker)."""
        if subject in self._discovery_sent:
            return
        self._effects.publishes += [Publish(topic, payload, True) for topic, payload in discovery_configs(subject)]
        self._discovery_sent.add(subject)
