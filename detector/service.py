"""The live detector: MQTT sample batches in, scored movements and night summaries out.

Data path, and why each step is where it is::

    worker thread: client.loop() reads a group --> journal (commit) --> PUBACK
                                                                 |
                                         decode -> SensorInbox (reorder, dedup) -> NightScorer
                                                                 |
                                         schema points -> InfluxSink (durable outbox) -> InfluxDB
                                                       -> MQTT results (_movement, _night, HA discovery)

* A batch is acknowledged to the broker only after it is committed to the journal (group commit),
  so a crash -- even SIGKILL -- loses nothing that was acknowledged: on start the service loads its
  last checkpoint and replays the journal rows after it through the very same code path.
* Scoring is the offline scorer (:class:`detector.scorer.NightScorer`), fed batch by batch, so live
  and ``plm score`` results cannot disagree.
* Every write goes through the durable outbox; points are idempotent, so replays rewrite, never double.
* Horizontal scale: ``shard=(k, n)`` keeps the subjects whose stable hash falls in slot k; every replica
  subscribes to everything and ignores the rest, which is correct on any broker (see docs/live.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import select
import threading
import time
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from detector import schema
from detector.acks import AckTracker
from detector.diary import DiaryError, DiaryNote, diary_lines, merge_notes, night_start_for, parse_diary_payload
from detector.influx import InfluxSink
from detector.ingest import SensorInbox
from detector.journal import Journal, JournalError
from detector.lm import STAT_SCALE
from detector.night_points import summary_lines
from detector.outbox import OutboxError
from detector.scorer import MovementEvent, NightScorer, NightSummary, warm_up
from plm import wire
from plm.config import Settings, SubjectSettings
from plm.logs import RateLimitedLog
from plm.mqtt import BufferedReadClient, Received, connect, make_client, run_until
from plm.rules import RULESETS

log = logging.getLogger(__name__)

BAD_REASONS = ("topic", "payload", "clock", "samples", "unknown_subject", "unknown_sensor", "diary", "retained")
"""What a message can be refused for (``late`` is counted on its own). ``retained``: a sample batch or diary
note published with the retain flag, which a broker hands to every new subscriber again (ignored, not scored)."""
STORAGE_ERRORS = (JournalError, OutboxError, MemoryError)
"""Failures that are not one message's fault: never dead-lettered (that would drop what was accepted); they
stop the worker, and the process exits non-zero so its service manager restarts it (see _run_worker)."""
STALLED_AFTER_S = 120.0  # the worker has not finished a loop for this long: stuck (a group takes < 2 s at 2000
# sensors, a checkpoint of 1000 subjects ~1-2 s, a night's end well under 10 s)
DIARY_WILDCARD = f"{wire.TOPIC_ROOT}/+/_diary"
NIGHT_GAP_S = 2 * 3600.0  # a hole this long in a subject's data starts a new night
SUMMARY_EVERY_S = 60.0  # data time between live summary updates
ACK_EVERY_S = 5.0  # at most one retained ack per sensor every 5 s: each is a QoS 1 round trip (~0.1 ms of this
# process), which at one a second cost as much as the batch it acknowledged; a sender keeps ~5 more batches
ACK_SCAN_S = 0.2  # how often the worker looks for acks that are due
RECEIVE_MAXIMUM = 16_384  # unacknowledged batches the broker may send ahead (a few groups; bounds memory)
IDLE_S = 0.05  # nothing read for this long: the service has caught up (held chunks are scored now)
GROUP_WAIT_S = 0.1  # the first message of a group waits at most this long for more before the group is processed
BEHIND_AFTER_S = 1.0  # the socket has not run dry for this long: a backlog, score in longer chunks
# a backlog lengthens the chunk at most this often: doubling, and fourfold once it has lasted twice
# BEHIND_AFTER_S (0, 1, 4, 16 s). The policy acts once per group, and at 2000 sensors a group scored in 1-s
# chunks takes over a second, so doubling alone took 4-6 s of a short backlog (half of a 20-s one) to reach
# 16 s; a short spell of full reads in real time (a burst, a pause) takes a doubling or two
DOUBLE_EVERY_S = 0.25
BACKLOG_STEP = 4
BUSY_WINDOW_S = 2.0  # the worker thread's CPU share is measured over windows this long
BUSY_HIGH = 0.7  # above this share of a core the service is about to fall behind: longer chunks (cheaper)
# below it, shorter chunks again (lower latency); in between the chunk stays. The band is narrow because a
# chunk half as long costs less than 1.5 x as much (a scorer call's cost is mostly fixed)
BUSY_LOW = 0.5
BUSY_SHORTER_BELOW = 0.65  # in the band, try the half chunk below this share, unless it was measured above
BUSY_MEMORY_S = 60.0  # how long the CPU share measured at a chunk length is trusted for going back to it
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 30.0
LEG_LOST_AFTER_S = 30.0  # wall time without data from one leg (while the other goes on) before it is a gap
MINUTE_S = 60.0
CHECKPOINT_MAX_SHARE = 0.02  # checkpoints take at most this share of the worker's time (see _work)


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
        up = scorer.upright_direction(side)
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


def _socket_dry(client: mqtt.Client) -> bool:
    """Nothing more to read right now (a loop() call that read no message may have read an ack instead)."""
    sock = client.socket()
    if sock is None:
        return True
    pending = getattr(sock, "pending", None)  # TLS: bytes decrypted but not read yet
    if pending is not None and pending() > 0:
        return False
    try:
        return not select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return True


@functools.cache
def state_format() -> str:
    """Fingerprint of the code whose objects a checkpoint pickles (the detector package and the event
    rules): a checkpoint is restored only into the code that wrote it. A detector upgraded mid-night
    would otherwise unpickle scorer objects of the old classes and fail on a renamed attribute later."""
    root = Path(__file__).resolve().parent
    files = sorted(root.glob("*.py")) + sorted((root.parent / "plm").glob("rules*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def shard_of(subject: str, shards: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``), so replicas agree."""
    return zlib.crc32(subject.encode()) % shards


def side_from_sensor_id(sensor: str) -> str | None:
    lowered = sensor.lower()
    if lowered.startswith(("left", "l-", "l_")) or lowered in ("l",) or "left" in lowered:
        return "left"
    if lowered.startswith(("right", "r-", "r_")) or lowered in ("r",) or "right" in lowered:
        return "right"
    return None


@dataclass(frozen=True, slots=True)
class Route:
    """What a topic means to this replica, worked out once per topic (not per message)."""

    owned: bool  # in this replica's shard
    parsed: wire.SensorTopic | None  # None: not a sensor topic (diary, our own status, or bad)
    side: str | None  # the leg of a sensor topic (None: cannot tell)


ROUTES_KEPT = 100_000  # distinct topics remembered; a flood of junk topics only empties the cache


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
    offline_sides: set[str] = field(default_factory=set)  # sensors that said a clean goodbye
    nights_finished: int = 0
    minutes: MinuteState = field(default_factory=MinuteState)
    held: dict[str, list[wire.SampleBatch]] = field(default_factory=dict)  # released, not yet scored (per side)


@dataclass
class Stats:
    received: int = 0
    ignored_other_shard: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    movements: int = 0
    nights_finished: int = 0
    checkpoints_discarded: int = 0  # written by another version of the detector (see _restore)


class LiveDetector:
    """One detector process (or one shard of several)."""

    def __init__(
        self,
        settings: Settings,
        *,
        shard: tuple[int, int] = (0, 1),
        instance: str | None = None,
        idle_end_s: float = 1800.0,
        checkpoint_every_s: float = 30.0,
        status_every_s: float = 10.0,
        publish_results: bool = True,
        leg_lost_after_s: float = LEG_LOST_AFTER_S,
        max_chunk_s: float = 16.0,
    ) -> None:
        self.settings = settings
        self.shard = shard
        self.instance = wire.validate_id(instance or settings.detector.instance, "detector instance")
        self.rules = RULESETS[settings.detector.rules]
        self.idle_end_s = idle_end_s
        self.night_end_local = parse_local_time(settings.detector.night_end_local)
        self.checkpoint_every_s = checkpoint_every_s
        self._checkpoint_cost_s = 0.0  # how long the last checkpoint took (nothing is read meanwhile)
        self.status_every_s = status_every_s
        self.publish_results = publish_results
        self.leg_lost_after_s = leg_lost_after_s
        # data time a leg's released batches are held before scoring: 0 while the service keeps up
        # (lowest latency), doubled while a backlog builds, up to max_chunk_s (see _adapt_chunk)
        self.chunk_s = 0.0
        self.max_chunk_s = max_chunk_s
        self._sensors = 0
        self._routes: dict[str, Route] = {}
        self._out: list[str] = []  # points of the current group, written to the outbox in one transaction
        self._touched: set[str] = set()  # subjects scored in this group: minutes and summary are due
        self._holding = False  # some leg holds released batches not yet scored (see _score_idle_holds)
        self._last_ack_scan = 0.0
        state_dir = Path(settings.detector.state_dir)
        self.journal = Journal(state_dir / f"{self.instance}-journal.sqlite")
        self.sink = InfluxSink(settings.influx, state_dir / f"{self.instance}-outbox.sqlite")
        self.stats = Stats()
        self.subjects: dict[str, SubjectState] = {}
        self.diary: dict[tuple[str, float], DiaryNote] = {}  # latest merged note per (subject, night)
        self._applied_id = 0
        self.acks = AckTracker()
        self._received: deque[Received] = deque()  # read from the socket, not yet journaled
        self._last_dry = time.monotonic()  # when the socket last had nothing more to read
        self._busy_share = 0.0  # the worker thread's CPU share (of one core) over the last full BUSY_WINDOW_S
        self._busy_mark: tuple[float, float] | None = None  # (wall, worker CPU) at the current window's start
        # (wall, worker CPU) spent checkpointing in the current window: not scoring load (see _measure_busy)
        self._busy_excluded = (0.0, 0.0)
        self._share_at_chunk: dict[float, tuple[float, float]] = {}  # chunk_s -> (CPU share, when measured)
        self._last_doubled = -math.inf
        self._reconnect_delay_s = RECONNECT_MIN_S
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._limited = RateLimitedLog(log)
        self._client: BufferedReadClient | None = None
        self._discovery_sent: set[str] = set()
        self._subscribed = threading.Event()
        self._resend_acks = False
        self._failure: BaseException | None = None  # what ended the worker thread (see _run_worker)
        self._heartbeat = time.monotonic()  # the worker's last finished loop (see stalled_for)
        self._dead_letter_seen: set[str] = set()  # error kinds already logged with their traceback
        self._restore()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect (persistent session, QoS 1, manual acks) and start the worker thread."""
        # load (or on a new machine compile) the scorer's numba loops before the first message: otherwise a
        # fresh process spends its first seconds of traffic doing it, and its first movements come late
        warm_up()
        client_id = f"plm-detector-{self.instance}"
        status = wire.detector_status_topic(self.instance)
        self._client = make_client(
            self.settings.mqtt,
            client_id,
            will=(status, json.dumps({"state": "lost"}).encode()),
            on_connect=self._subscribe,
            manual_ack=True,
            protocol=self.settings.detector.mqtt_protocol,
            persistent=True,
            # the service acknowledges a batch only after its journal commit, so the broker's limit on unacknowledged
            # QoS 1 messages in flight to us is the whole pipeline's window: without this mosquitto uses its
            # max_inflight_messages (20), the worker sees groups of a few dozen messages -- one fsync and one
            # scorer call per leg each -- and a backlog never shows as one (3.1.1: the broker's setting decides)
            receive_maximum=RECEIVE_MAXIMUM,
        )
        self._client.on_received = self._received.append  # inside client.loop(), on the worker thread
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        # one thread reads the socket *and* does the work (see _work): paho's own network thread would fight
        # the worker for the GIL on every packet. So no paho thread at all, even for the handshake
        connect(self._client, self.settings.mqtt, persistent=True, network_thread=False)
        if not run_until(self._client, self._subscribed.is_set, 10.0):
            self._client.disconnect()
            raise ConnectionError("the MQTT broker did not confirm the subscriptions within 10 s")
        self._heartbeat = time.monotonic()
        self._worker = threading.Thread(target=self._run_worker, name="detector-worker", daemon=True)
        self._worker.start()
        log.info(
            "detector %s running: rules %s, shard %d/%d", self.instance, self.rules.name, self.shard[0], self.shard[1]
        )

    def stop(self, finish_nights: bool = False) -> None:
        """Stop cleanly: process what was received, checkpoint, flush the outbox as far as possible.

        After a worker failure (:attr:`failure`) nothing more is scored or checkpointed: the state may be
        half-updated, and the journal still holds every row since the last checkpoint, so the next start
        replays them. The retained status stays the ``failed`` one the worker published."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=60)
        if self._failure is None:
            if finish_nights:
                for state in list(self.subjects.values()):
                    self._end_night(state)
            self._checkpoint()  # writes the points still buffered first
        if self._client is not None:
            if self._failure is None:
                self._publish_status("offline")
            self._finish_sending(timeout_s=5.0)
            self._client.disconnect()
        self.sink.close(flush_timeout_s=5.0)
        self.journal.close()

    @property
    def failure(self) -> BaseException | None:
        """What stopped the worker thread, or None while it runs (or after a clean stop)."""
        return self._failure

    def stalled_for(self) -> float:
        """Seconds since the worker last finished a loop while it should be running (0 when stopped)."""
        if self._worker is None or not self._worker.is_alive() or self._stop.is_set():
            return 0.0
        return max(0.0, time.monotonic() - self._heartbeat)

    def _run_worker(self) -> None:
        """The worker thread's body: :meth:`_work`, and if it ever raises, fail loudly instead of leaving a
        process that looks alive and scores nothing. One message cannot get here (apply dead-letters what
        raises); what does is a storage failure (disk full, a read-only or corrupt state file) or a bug in
        the loop itself. The retained status says ``failed`` with the error, then :attr:`failure` is set, and
        ``plm detect`` exits non-zero so systemd or compose restarts it (the journal replays what was
        acknowledged, so nothing accepted is lost)."""
        try:
            self._work()
        except BaseException as exc:
            self._failure = exc
            log.critical("the detector's worker stopped: %s: %s", type(exc).__name__, exc, exc_info=True)
            with contextlib.suppress(Exception):  # best effort: the broker may be the thing that is gone
                self._publish_status("failed", error=f"{type(exc).__name__}: {exc}"[:500])
                self._finish_sending(timeout_s=2.0)

    def _finish_sending(self, timeout_s: float) -> None:
        """The worker ran the network loop and has stopped: run it here until the broker has acknowledged every
        outgoing QoS 1 message. Results, the night summary and Home Assistant's retained configs wait behind
        paho's in-flight limit (20) for the acks of those before them; disconnecting with them queued lost them
        (seen as a missing discovery config after a stop)."""
        client = self._client
        assert client is not None
        # stops early if the broker is gone: what is queued is lost either way
        run_until(client, lambda: not client.unacknowledged(), timeout_s)

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    # ------------------------------------------------------------------ MQTT side

    def _subscribe(self, client: mqtt.Client) -> None:
        if self.settings.detector.mqtt_protocol == "5":
            # retained sample batches and diary notes have no meaning (each is one moment, scored once): MQTT 5
            # lets the broker keep them from us. Status is retained by design. 3.1.1: see _handle_messages
            no_retained = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            client.subscribe(
                [(wire.SAMPLES_WILDCARD, no_retained), (wire.STATUS_WILDCARD, 1), (DIARY_WILDCARD, no_retained)]
            )
        else:
            client.subscribe([(wire.SAMPLES_WILDCARD, 1), (wire.STATUS_WILDCARD, 1), (DIARY_WILDCARD, 1)])
        self._publish_status("online")
        self._resend_acks = True  # the broker may have lost the retained acks (read by the worker)
        self._reconnect_delay_s = RECONNECT_MIN_S

    def backlog(self) -> int:
        """Messages read from the broker and not yet journaled (at most one group)."""
        return len(self._received)

    def _route(self, topic: str) -> Route:
        """Shard, topic parse and leg of a topic; cached, since a sensor sends thousands of batches to one
        topic. Everything it depends on is fixed for a topic (configuration, the sensor id's name)."""
        route = self._routes.get(topic)
        if route is not None:
            return route
        parts = topic.split("/")
        owned = len(parts) < 4 or self.shard[1] == 1 or shard_of(parts[2], self.shard[1]) == self.shard[0]
        parsed: wire.SensorTopic | None = None
        side: str | None = None
        if owned and not topic.endswith("/_diary"):
            try:
                parsed = wire.parse_sensor_topic(topic)
            except wire.WireFormatError:
                return Route(owned, None, None)  # not cached: the caller counts it as bad, each time
            side = self._side_of(parsed.subject, parsed.sensor)
        if len(self._routes) >= ROUTES_KEPT:
            self._routes.clear()
        route = self._routes[topic] = Route(owned, parsed, side)
        return route

    def _work(self) -> None:
        """The service's one working thread: it runs the MQTT network loop itself and, between reads, the
        groups. Why not paho's network thread plus a worker: paho reads a packet with three or four small
        ``recv`` calls, each of which gives up the GIL -- and with a busy worker thread each takes up to the
        interpreter's switch interval (5 ms) to get it back, so reading, not scoring, capped the service at
        a few hundred messages a second. One thread pays no hand-offs; while it works on a group, the
        kernel and the broker hold what comes next (QoS 1, not acknowledged yet)."""
        last_checkpoint = last_status = last_idle_check = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            group = self._read_group(self._group_limit()) if not stopping else self._take(len(self._received))
            if group:
                self._handle_messages(group)
                self._adapt_chunk()
            elif not stopping:
                self._score_idle_holds()
            now = time.monotonic()
            self._publish_acks(now)
            if now - last_idle_check >= 1.0:
                self._end_idle_nights(time.time())
                self._flush_out()
                self._sensors = sum(len(s.inboxes) for s in self.subjects.values())
                last_idle_check = now
            if now - last_checkpoint >= self._checkpoint_interval_s():
                cpu_before = time.thread_time()
                self._checkpoint()
                last_checkpoint = time.monotonic()
                self._checkpoint_cost_s = last_checkpoint - now
                wall_x, cpu_x = self._busy_excluded
                self._busy_excluded = (wall_x + self._checkpoint_cost_s, cpu_x + time.thread_time() - cpu_before)
                # what arrived meanwhile fills the next reads: the service's own pause, not a backlog
                self._last_dry = max(self._last_dry, last_checkpoint)
            if now - last_status >= self.status_every_s:
                self._publish_status("online")
                last_status = now
            self._heartbeat = now
            if stopping:
                break

    def _read_group(self, limit: int) -> list[Received]:
        """Run the network loop until ``limit`` messages are in or the first of them has waited
        ``GROUP_WAIT_S`` (latency bound); return nothing after an idle wait. Notes whether the socket ran
        dry, which is how the service tells that it keeps up (see _adapt_chunk)."""
        client = self._client
        assert client is not None
        received = self._received
        first_at = time.monotonic() if received else None
        while len(received) < limit and not self._stop.is_set():
            now = time.monotonic()
            if first_at is None and received:
                first_at = now
            if first_at is not None and now - first_at >= GROUP_WAIT_S:
                break
            wait = (first_at + GROUP_WAIT_S - now) if first_at is not None else (IDLE_S if self._holding else 0.2)
            before = len(received)
            rc = client.loop(timeout=wait)  # reads one packet (or waits up to `wait` for one)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._reconnect(rc)
                break
            if len(received) > before and client.socket_drained:
                # the read took all the socket held: what arrives is read as it comes (with a steady stream
                # of sensors out of step the socket is never found empty, yet the service keeps up)
                self._last_dry = time.monotonic()
            elif len(received) == before and _socket_dry(client):
                self._last_dry = time.monotonic()
                if first_at is None:
                    return []  # idle: nothing arrived within the wait
        return self._take(limit)

    def _take(self, count: int) -> list[Received]:
        received = self._received
        return [received.popleft() for _ in range(min(count, len(received)))]

    def _reconnect(self, rc: Any) -> None:
        """The connection broke: wait (1 s doubling to 30 s) and reconnect; the persistent session makes
        the broker redeliver what was not acknowledged. paho's loop_forever would do this for its thread."""
        if self._stop.is_set():
            return
        delay = self._reconnect_delay_s
        self._reconnect_delay_s = min(RECONNECT_MAX_S, 2 * delay)
        self._limited.warning("mqtt", f"lost the MQTT broker ({rc}); reconnecting in {delay:.0f} s")
        if self._stop.wait(delay):
            return
        try:
            assert self._client is not None
            self._client.reconnect()
        except Exception as exc:  # OSError mostly; whatever it is, the worker thread must live on and retry
            self._limited.warning("mqtt", f"cannot reach the MQTT broker: {exc}")

    def _group_limit(self) -> int:
        """Messages taken as one group at most: a few seconds of every sensor (one journal commit, one
        outbox commit, one PUBACK burst); under load groups are shorter, closed by GROUP_WAIT_S."""
        return max(2000, 4 * self._sensors)

    def _measure_busy(self, now: float) -> bool:
        """Update the worker thread's CPU share when a ``BUSY_WINDOW_S`` window has passed; True if it did."""
        if self._busy_mark is None:
            self._busy_mark = (now, time.thread_time())
        started, cpu_then = self._busy_mark
        if now - started < BUSY_WINDOW_S:
            return False
        # the worker thread's own CPU (called on it only): waiting for the socket or the GIL does not count,
        # nor do other threads of the process (a test's or an embedding application's). Nor checkpoints: one
        # pickles every subject at once, whatever the chunk (a 1-s pause at 1000 subjects), so counted it
        # made every window with one look busy and doubled a chunk that scoring alone did not need
        cpu_now = time.thread_time()
        wall_x, cpu_x = self._busy_excluded
        self._busy_excluded = (0.0, 0.0)
        self._busy_mark = (now, cpu_now)
        span = now - started - wall_x
        if span < BUSY_WINDOW_S / 2:
            return False  # mostly checkpoint: too little scoring time in this window to judge by
        self._busy_share = min(1.0, max(0.0, (cpu_now - cpu_then - cpu_x) / span))
        self._share_at_chunk[self.chunk_s] = (self._busy_share, now)
        return True

    def _adapt_chunk(self) -> None:
        """Latency while the service keeps up, throughput when it falls behind.

        A scorer call costs about the same for 1 s of a leg as for 4 s, so under load the service holds
        each leg's batches for ``chunk_s`` of data (1, 2, 4, ... ``max_chunk_s``) before scoring them. It
        doubles the chunk at most every ``DOUBLE_EVERY_S`` while the socket has not run dry for
        ``BEHIND_AFTER_S`` (a backlog at the broker; fourfold once that has lasted twice as long), and
        doubles it once per ``BUSY_WINDOW_S`` in which the worker thread used more than ``BUSY_HIGH`` of a
        core (a load that comes in bursts -- sensors in step, each second -- lets the socket run dry between
        bursts even when the service is about to fall behind). It halves the chunk (once per window) when
        the worker used less than ``BUSY_LOW``, or less than ``BUSY_SHORTER_BELOW`` unless the half chunk was
        measured at or above that within ``BUSY_MEMORY_S``: the cost curve is flat at long chunks, so the
        share alone would keep 16 s where 4 s would do, and a half that proves too dear doubles back in the
        next window and is not tried again for a minute. Checkpoints count neither as load nor as backlog."""
        now = time.monotonic()
        measured = self._measure_busy(now)
        behind = now - self._last_dry > BEHIND_AFTER_S and now - self._last_doubled >= DOUBLE_EVERY_S
        if behind or (measured and self._busy_share > BUSY_HIGH):
            step = BACKLOG_STEP if behind and now - self._last_dry > 2 * BEHIND_AFTER_S else 2
            self.chunk_s = min(self.max_chunk_s, max(1.0, step * self.chunk_s))
            self._last_doubled = now
            return
        if not measured or now - self._last_dry > BEHIND_AFTER_S or self.chunk_s == 0:
            return  # one step per measured window (a share measured at a longer chunk says little about
            # a shorter one), and never shorter during a backlog
        half = 0.0 if self.chunk_s <= 1.0 else self.chunk_s / 2
        known = self._share_at_chunk.get(half)
        half_fits = known is None or now - known[1] > BUSY_MEMORY_S or known[0] < BUSY_SHORTER_BELOW
        if self._busy_share < BUSY_LOW or (self._busy_share < BUSY_SHORTER_BELOW and half_fits):
            self.chunk_s = half

    def _handle_messages(self, messages: list[Received]) -> None:
        owned: list[tuple[str, bytes]] = []
        route = self._route
        for m in messages:
            topic = m.topic
            r = route(topic)
            if not r.owned:
                self.stats.ignored_other_shard += 1
            elif m.retain and (topic.endswith("/_diary") or (r.parsed is not None and r.parsed.kind == "acc")):
                # a retained batch or note comes again with every new subscription: never scored twice (it was
                # scored live, when the broker passed it on without the flag). Not journaled: replay has no flag
                self._bad("retained", f"ignoring a retained message on {topic!r}: samples and notes are not retained")
            else:
                owned.append((topic, m.payload))
        ids = self.journal.append(owned)
        if self._client is not None:  # only now: what is acknowledged is on disk
            # one write for the group's PUBACKs; every subscription is QoS 1, so there is nothing else to settle
            self._client.ack_many([m.mid for m in messages if m.qos == 1])
        self.apply_many(owned, ids=ids)
        if ids:
            self._applied_id = ids[-1]

    def _publish_acks(self, now: float) -> None:
        """Retained ``.../ack`` per sensor: called only after the journal commit that covers the marks."""
        if self._client is None:
            return
        if now - self._last_ack_scan < ACK_SCAN_S and not self._resend_acks:
            return  # each mark is published at most once a second anyway; scanning them all per group is waste
        self._last_ack_scan = now
        if self._resend_acks:
            self._resend_acks = False
            self.acks.resend_all()
        # QoS 0: the mark is cumulative and refreshed every ACK_EVERY_S (all of them after a reconnect), so a
        # lost one only makes a sender keep its batches a little longer. QoS 1 cost a PUBACK round trip and
        # paho's in-flight bookkeeping per ack (~12 % of the worker at 2000 sensors, with the results); and
        # paho's publish one lock and two system calls per ack: they go out as one write
        due = self.acks.due(now, ACK_EVERY_S)
        self._client.publish_many(
            [(wire.ack_topic(subject, sensor), wire.encode_ack(until_ns)) for subject, sensor, until_ns in due],
            retain=True,
        )

    # ------------------------------------------------------------------ the pure-ish core

    def apply(self, topic: str, payload: bytes, wall_s: float | None = None) -> None:
        """Process one message (live or replayed). Never raises on bad input: counts it."""
        self.apply_many([(topic, payload)], wall_s)

    def apply_many(
        self, messages: list[tuple[str, bytes]], wall_s: float | None = None, ids: Sequence[int] = ()
    ) -> None:
        """Process messages in order. Samples released by the reorder buffers are collected per leg
        and scored as one chunk per leg at the end (or before a status message of that subject):
        the scorer gives the same result for any chunking, and one call per leg per group instead
        of one per batch is what lets a single process keep up with thousands of sensors.

        Never raises for a message: what the wire format refuses is counted (``bad_<reason>``); what still
        raises while being applied -- a bug the validation missed -- is moved to the dead-letter table with
        its error (:meth:`_dead_letter`; ``ids`` are the messages' journal rows, so a replay does not file it
        twice) and the rest goes on. Only storage failures propagate (``STORAGE_ERRORS``)."""
        wall = time.time() if wall_s is None else wall_s
        pending: dict[tuple[str, str], list[wire.SampleBatch]] = {}
        stats = self.stats
        route_of = self._route
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
                else:
                    status = wire.decode_status(payload)
                    self._score_pending(pending, parsed.subject, wall)
                    self._apply_status(parsed, status, wall)
            except wire.WireFormatError as exc:
                text = str(exc)
                kind = "clock" if "start time" in text or "time_ns" in text or "status time" in text else "payload"
                self._bad(kind, f"bad payload on {topic!r}: {exc}")
            except STORAGE_ERRORS:
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

    def _score_idle_holds(self) -> None:
        """Nothing has arrived for ``IDLE_S``: the service has caught up, so whatever legs still hold
        (batches kept for a longer chunk while it was behind) is scored now rather than when the leg's
        next batch comes -- latency is free when there is nothing else to do. Not while the worker is busy
        (``BUSY_LOW`` or more of a core): then the quiet moments are the gaps between bursts of a load
        that comes in step, and scoring the holds in them would undo the longer chunks it needs to keep up."""
        if not self._holding:
            return
        self._measure_busy(time.monotonic())  # an idle spell brings the share down within one window
        if self._busy_share >= BUSY_LOW:
            return
        self._holding = False
        for state in list(self.subjects.values()):
            if state.held and any(state.held.values()):
                with self._contained(state.subject, "held batches"):
                    self._score_held(state, force=True)
        self._write_outputs()

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
        self._flush_out()

    def _put(self, lines: list[str]) -> None:
        self._out.extend(lines)

    def _flush_out(self) -> None:
        if self._out:
            lines, self._out = self._out, []
            self.sink.put(lines)

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
                self._holding = True

    def _release_lagging_legs(self, state: SubjectState, wall: float) -> None:
        """A leg whose sensor has sent nothing for ``leg_lost_after_s`` of wall time while the other leg
        goes on is lost for now: it becomes a gap up to the other leg's time, so the working leg's
        movements are not held back all night. Wall time, not data time: a replay at 1000x must not
        declare a leg lost because its batches came a few milliseconds after the other's."""
        if len(state.sides) < 2 or not state.last_t:
            return
        lead = max(state.last_t.values())
        events: list[MovementEvent] = []
        for side in state.sides:
            reached = state.last_t.get(side, state.night_start_s)
            heard = state.last_wall_by_side.get(side, state.first_wall)
            if reached is not None and reached < lead and wall - heard > self.leg_lost_after_s:
                self._score_held(state, force=True, side=side)
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
        except STORAGE_ERRORS:
            raise
        except Exception as exc:
            self._dead_letter(
                f"{wire.TOPIC_ROOT}/{subject}", b"", exc, key=f"{subject} {stage} {exc!r}"[:300], stage=stage
            )

    def _dead_letter(
        self, topic: str, payload: bytes, exc: Exception, *, key: str | None = None, stage: str = "message"
    ) -> None:
        """Set aside what raised while being applied, with its error, and go on (see docs/reliability.md).

        Stored in the journal's ``dead_letter`` table (bounded; ``plm detect --dead-letters`` lists it) and
        counted in ``messages_dead_lettered`` of ``detector_health``. The first error of each kind is logged
        with its traceback, later ones rate-limited. ``key`` (a journal row, a batch's start) keeps a replay
        from filing the same thing twice."""
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        self.journal.dead_letter(topic, payload, error, trace, stage=stage, key=key)
        kind = f"{stage}:{type(exc).__name__}"
        if kind not in self._dead_letter_seen:
            self._dead_letter_seen.add(kind)
            log.error("dead-lettered (%s) on %r: %s -- processing goes on\n%s", stage, topic, error, trace)
        else:
            self._limited.warning("dead_letter", f"dead-lettered ({stage}) on {topic!r}: {error}")

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
            inbox = state.inboxes[side] = SensorInbox(self.settings.detector.reorder_window_s)
        state.sensor_of_side.setdefault(side, parsed.sensor)
        counts = inbox.counts
        late_before = counts["late"]
        released = inbox.add(batch)
        if counts["late"] > late_before:
            self._bad("late", f"batch from {parsed.subject}/{parsed.sensor} arrived after its reorder window")
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
            first_new = next((i for i, b in enumerate(batches) if b.start_ns / 1e9 - reached > NIGHT_GAP_S), None)
            if first_new is not None:
                self._score(state, side, batches[:first_new], may_end_night=False)
                state = self._end_night(state)
                batches = batches[first_new:]
        if state.night_start_s is None:
            state.night_start_s = batches[0].start_ns / 1e9
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
        except STORAGE_ERRORS:
            raise
        except Exception as exc:  # a scorer bug: set these batches aside, keep scoring everyone else
            topic = wire.acc_topic(state.subject, state.sensor_of_side.get(side, side))
            for b in fresh:
                self._dead_letter(topic, wire.encode_binary(b), exc, key=f"{topic} {b.start_ns}", stage="scoring")
            return
        state.last_t[side] = float(t[-1])
        self._touched.add(state.subject)  # minutes and summary: once per group (_write_outputs)
        with self._contained(state.subject, "movements"):
            self._emit(state, events)

    def _flush_inboxes(self, state: SubjectState) -> None:
        self._score_held(state, force=True)
        for side, inbox in state.inboxes.items():
            self._score(state, side, inbox.flush(), may_end_night=False)

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
        merged = merge_notes(self.diary.get(key), note)
        self.diary[key] = merged
        for old in [k for k in self.diary if k[1] < anchor - 3 * 86400]:
            del self.diary[old]  # keep a few nights, not the whole history
        self._put(diary_lines(subject, merged, wall))

    # ------------------------------------------------------------------ outputs

    def _emit(self, state: SubjectState, events: list[MovementEvent]) -> None:
        if not events:
            return
        state.minutes.count(events)
        lines: list[str] = []
        for e in events:
            lines.append(schema.movement_from(state.subject, e))
            lines += schema.leg_state_points(state.subject, e.onset, e.duration, e.side, e.kind, e.plm)
        self._put(lines)
        self.stats.movements += len(events)
        if self.publish_results and self._client is not None:
            topic = wire.movement_topic(state.subject)
            for e in events:
                self._client.publish(topic, json.dumps(e.to_dict()), qos=1)

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
        self._put(lines)
        if self.publish_results and self._client is not None:
            doc = {k: v for k, v in fields.items() if k not in ("series", "imis", "per_hour", "gaps")}
            doc["night_start"] = start
            self._client.publish(wire.night_topic(state.subject), json.dumps(doc), qos=1, retain=True)
            self._send_discovery(state.subject)

    def _end_night(self, state: SubjectState) -> SubjectState:
        """Score what is held, finalise the night, write it; return the subject's fresh state."""
        self._flush_inboxes(state)
        if state.night_start_s is not None:
            before = {e.key: e for e in state.scorer.summary().events}
            summary = state.scorer.finish()
            self._emit(state, [e for e in summary.events if before.get(e.key) != e])
            self._rewrite_minutes(state, summary)
            self._write_summary(state, summary)
            self.stats.nights_finished += 1
            log.info(
                "night of %s finished: PLM index %s, %d PLMs",
                state.subject,
                summary.fields.get("plm_index"),
                summary.fields.get("plm_count", 0),
            )
        self._flush_out()  # a finished night is in the outbox when this returns (rare: one commit a night)
        fresh = SubjectState(state.subject, state.sides, NightScorer(self.rules, sides=state.sides))
        fresh.sensor_of_side = dict(state.sensor_of_side)
        fresh.nights_finished = state.nights_finished + 1
        fresh.last_wall = state.last_wall
        self.subjects[state.subject] = fresh
        return fresh

    def _end_idle_nights(self, wall: float) -> None:
        """End nights after ``idle_end_s`` of silence, or at ``detector.night_end_local`` once data has been
        flowing for more than an hour (the local clock passing HH:MM after the night's first data)."""
        for state in list(self.subjects.values()):
            if state.night_start_s is None:
                continue
            with self._contained(state.subject, "night end"):
                if wall - state.last_wall > self.idle_end_s:
                    self._end_night(state)
                elif self._past_local_end(state, wall):
                    log.info("night of %s ends at the configured local time", state.subject)
                    self._end_night(state)

    def _past_local_end(self, state: SubjectState, wall: float) -> bool:
        if self.night_end_local is None or not state.first_wall or wall - state.first_wall <= 3600:
            return False
        return wall >= next_local_time(state.first_wall, *self.night_end_local)

    def _send_discovery(self, subject: str) -> None:
        """Home Assistant MQTT discovery: last night's PLM index and PLM count appear as sensors."""
        if subject in self._discovery_sent or self._client is None:
            return
        device = {"identifiers": [f"plm_{subject}"], "name": f"Leg movements {subject}", "manufacturer": "plm-monitor"}
        for key, name, unit in (
            ("plm_index", "PLM index", "/h"),
            ("plm_count", "PLMs", None),
            ("lm_count", "Leg movements", None),
        ):
            config = {
                "name": name,
                "unique_id": f"plm_{subject}_{key}",
                "state_topic": wire.night_topic(subject),
                "value_template": f"{{{{ value_json.{key} | round(1) if value_json.{key} is not none else none }}}}",
                "state_class": "measurement",
                "device": device,
            }
            if unit:
                config["unit_of_measurement"] = unit
            self._client.publish(
                f"homeassistant/sensor/plm_{subject}/{key}/config", json.dumps(config), qos=1, retain=True
            )
        self._discovery_sent.add(subject)

    def _publish_status(self, state: str, error: str | None = None) -> None:
        """The retained ``plm/v1/_detector/<instance>`` status (and, while online, a ``detector_health`` point).

        Published by the worker thread only, every ``status_every_s``: its ``time_ns`` is the worker's
        heartbeat, so ``plm stack healthcheck-detector`` sees a stuck worker as a status that stops being
        refreshed. ``failed`` (with ``error``) is the worker's last word when it stops on an exception."""
        metrics = self.sink.metrics()
        doc: dict[str, Any] = {
            "state": state,
            "instance": self.instance,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "received": self.stats.received,
            "bad": dict(self.stats.bad),
            "dead_lettered": self.journal.dead_letter_total,
            "movements": self.stats.movements,
            "subjects": len(self.subjects),
            "checkpoints_discarded": self.stats.checkpoints_discarded,
            "outbox_depth": metrics.depth,
            "time_ns": time.time_ns(),
            "status_every_s": self.status_every_s,
        }
        if error is not None:
            doc["error"] = error
        else:
            doc["journal_depth"] = self.journal.depth()  # not after a failure: the journal may be what failed
        if self._client is not None:
            self._client.publish(wire.detector_status_topic(self.instance), json.dumps(doc), qos=1, retain=True)
        if state == "online":
            self.sink.put(
                [
                    schema.detector_health_point(
                        self.instance,
                        time.time(),
                        outbox_depth=metrics.depth,
                        late_batches=self.stats.bad.get("late", 0),
                        # every known reason, zeros included, so a dashboard shows "0" rather than "no data"
                        bad_payloads={
                            **dict.fromkeys(BAD_REASONS, 0),
                            **{k: v for k, v in self.stats.bad.items() if k != "late"},
                        },
                        dead_letters=metrics.dead_letters,
                        messages_dead_lettered=self.journal.dead_letter_total,
                        sent_points=metrics.sent,
                        write_retries=metrics.retries,
                    )
                ]
            )

    # ------------------------------------------------------------------ durability

    def _checkpoint_interval_s(self) -> float:
        """``checkpoint_every_s``, stretched so that checkpoints take at most ``CHECKPOINT_MAX_SHARE`` of the
        time: one pickles every subject (~1 ms each) and nothing is read meanwhile -- at 1000 subjects a ~1-2 s
        pause every 30 s, which held back the movements of 5 % of the time (their latency p95) and pushed a
        loaded detector behind. The price is a longer journal replay after a crash (rows since the last one)."""
        return max(self.checkpoint_every_s, self._checkpoint_cost_s / CHECKPOINT_MAX_SHARE)

    def _checkpoint(self) -> None:
        # the checkpoint covers every applied row: their points must be in the outbox before it
        self._flush_out()
        self.journal.checkpoint(
            self._applied_id,
            {
                "format": state_format(),
                "subjects": self.subjects,
                "stats": self.stats,
                "diary": self.diary,
                "acks": self.acks,
            },
        )

    def _restore(self) -> None:
        saved = self.journal.load_checkpoint()
        if saved is not None and (saved[1] is None or saved[1].get("format") != state_format()):
            # pickled scorer objects of other code would load with missing or renamed attributes and fail
            # later, in the middle of the stream: start the nights in progress again instead
            log.warning(
                "the checkpoint in %s was written by another version of the detector (or is unreadable): "
                "nights in progress start again from the data after it; what is already stored is kept",
                self.journal.path,
            )
            self.stats.checkpoints_discarded += 1
            saved = (saved[0], None)
        if saved is not None and saved[1] is not None:
            self._applied_id, state = saved
            self.subjects = state["subjects"]
            self.stats = state["stats"]
            self.diary = state["diary"]
            self.acks = state["acks"]
            self.acks.last_publish.clear()  # monotonic times of the previous process
            self.acks.resend_all()
            # a leg is lost after leg_lost_after_s of *this* process hearing nothing from it: the journal rows
            # replayed below (and the backlog after them) are applied at today's wall clock, so the checkpoint's
            # times would count the detector's own downtime as every leg's silence -- and declare the leg that
            # is behind lost up to the other, refusing its next seconds as already scored
            now = time.time()
            for subject in self.subjects.values():
                subject.last_wall_by_side = dict.fromkeys(subject.sides, now)
        elif saved is not None:
            self._applied_id = saved[0]  # the rows up to it are gone with the checkpoint that covered them
        replayed = 0
        for row_id, topic, payload in self.journal.replay(self._applied_id):
            # the live path's apply: a row that raises is dead-lettered (once, by its id), so no journal can block
            # a start
            self.apply_many([(topic, payload)], ids=(row_id,))
            self._applied_id = row_id
            replayed += 1
        if saved is not None or replayed:
            log.info("restored %d subjects from checkpoint, replayed %d journal rows", len(self.subjects), replayed)
