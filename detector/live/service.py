"""The live detector service: the MQTT transport and the durable storage around the sans-IO core.

Data path, and why each step is where it is::

    worker thread: client.loop() reads a group --> journal (commit) --> PUBACK
                                                                 |
                                  DetectorCore.handle(messages, wall) --> Effects
                                                                 |
                         points -> InfluxSink (durable outbox) -> InfluxDB
                         publishes -> MQTT results (_movement, _night, HA discovery)
                         dead letters -> the journal's dead-letter table

* A batch is acknowledged to the broker only after it is committed to the journal (group commit),
  so a crash -- even SIGKILL -- loses nothing that was acknowledged: :meth:`LiveDetector.recover` loads the
  last checkpoint and replays the journal rows after it through the very same core.
* Every write goes through the durable outbox; points are idempotent, so replays rewrite, never double.
* How much of each leg is held before scoring is the chunk policy's (detector/live/chunk_policy.py), from
  the clocks this loop reads; the core never reads a clock.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import select
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from detector.live.chunk_policy import ChunkPolicy
from detector.live.core import BAD_REASONS, DetectorCore, Effects, Stats
from detector.live.night import LEG_LOST_AFTER_S, SubjectState
from detector.scoring.scorer import warm_up
from detector.storage import schema
from detector.storage.influx import InfluxSink
from detector.storage.journal import Journal
from plm import wire
from plm.config import Settings
from plm.logs import RateLimitedLog
from plm.mqtt import BufferedReadClient, Received, connect, make_client, run_until, suback_refused

log = logging.getLogger(__name__)

STALLED_AFTER_S = 120.0  # the worker has not finished a loop for this long: stuck (a group takes < 2 s at 2000
# sensors, a checkpoint of 1000 subjects ~1-2 s, a night's end well under 10 s)
DIARY_WILDCARD = f"{wire.TOPIC_ROOT}/+/_diary"
ACK_EVERY_S = 5.0  # at most one retained ack per sensor every 5 s: each is a QoS 1 round trip (~0.1 ms of this
# process), which at one a second cost as much as the batch it acknowledged; a sender keeps ~5 more batches
ACK_SCAN_S = 0.2  # how often the worker looks for acks that are due
RECEIVE_MAXIMUM = 16_384  # unacknowledged batches the broker may send ahead (a few groups; bounds memory)
IDLE_S = 0.05  # nothing read for this long: the service has caught up (held chunks are scored now)
GROUP_WAIT_S = 0.1  # the first message of a group waits at most this long for more before the group is processed
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 30.0
RESUBSCRIBE_S = 5.0  # a refused subscription (SUBACK >= 0x80) is asked for again this long after
REPLAY_GROUP = 2000  # journal rows applied per core call on recovery (the size of a live group at 500 sensors)
CHECKPOINT_MAX_SHARE = 0.02  # checkpoints take at most this share of the worker's time (see _work)


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
    root = Path(__file__).resolve().parents[1]
    files = sorted(root.rglob("*.py")) + sorted((root.parent / "plm").glob("rules*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class LiveDetector:
    """One detector process (or one shard of several): a short loop that wires the transport, the storage,
    the chunk policy and the :class:`DetectorCore`."""

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
        self.core = DetectorCore(
            settings,
            shard=shard,
            idle_end_s=idle_end_s,
            publish_results=publish_results,
            leg_lost_after_s=leg_lost_after_s,
        )
        self.policy = ChunkPolicy(time.monotonic(), max_chunk_s)
        self.checkpoint_every_s = checkpoint_every_s
        self._checkpoint_cost_s = 0.0  # how long the last checkpoint took (nothing is read meanwhile)
        self.status_every_s = status_every_s
        state_dir = Path(settings.detector.state_dir)
        self.journal = Journal(state_dir / f"{self.instance}-journal.sqlite")
        self.sink = InfluxSink(settings.influx, state_dir / f"{self.instance}-outbox.sqlite")
        self._applied_id = 0
        self._recovered = False
        self._received: deque[Received] = deque()  # read from the socket, not yet journaled
        self._last_ack_scan = 0.0
        self._reconnect_delay_s = RECONNECT_MIN_S
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._limited = RateLimitedLog(log)
        self._client: BufferedReadClient | None = None
        self._subscribed = threading.Event()
        # replicas (shard N > 1) subscribe to the sample topics of their own subjects only: with N replicas each
        # receives about 1/N of the traffic instead of all of it (docs/deploy-scale.md). One detector keeps the
        # wildcard. Either way it announces, retained, each subject it receives (plm/v1/<s>/_owner)
        self.own_subscriptions = shard[1] > 1
        self._subjects_subscribed: set[str] = set()  # owned subjects whose sample topics are subscribed
        self._refused_subjects: set[str] = set()  # refused by the broker: asked for again at _resubscribe_at
        self._resubscribe_at = 0.0
        self._announced: set[str] = set()  # subjects whose _owner this process has published
        self._announce_on_suback: dict[int, list[str]] = {}  # SUBSCRIBE packet id -> the subjects it covers
        self._resend_acks = False
        self._failure: BaseException | None = None  # what ended the worker thread (see _run_worker)
        self._heartbeat = time.monotonic()  # the worker's last finished loop (see stalled_for)
        self._dead_letter_seen: set[str] = set()  # error kinds already logged with their traceback

    # ------------------------------------------------------------------ the core's state, for readers

    @property
    def subjects(self) -> dict[str, SubjectState]:
        return self.core.subjects

    @property
    def stats(self) -> Stats:
        return self.core.stats

    @property
    def chunk_s(self) -> float:
        return self.policy.chunk_s

    @chunk_s.setter
    def chunk_s(self, value: float) -> None:
        self.policy.chunk_s = value

    # ------------------------------------------------------------------ lifecycle

    def recover(self) -> None:
        """Load the last checkpoint and replay the journal rows after it, through the live path's core (a row
        that raises is dead-lettered, once, by its id: no journal can block a start). Once per process;
        :meth:`start` calls it."""
        if self._recovered:
            return
        self._recovered = True
        saved = self.journal.load_checkpoint()
        discarded = saved is not None and (saved[1] is None or saved[1].get("format") != state_format())
        if discarded:
            # pickled scorer objects of other code would load with missing or renamed attributes and fail
            # later, in the middle of the stream: start the nights in progress again instead
            log.warning(
                "the checkpoint in %s was written by another version of the detector (or is unreadable): "
                "nights in progress start again from the data after it; what is already stored is kept",
                self.journal.path,
            )
            self.stats.checkpoints_discarded += 1
        if saved is not None:
            self._applied_id = saved[0]  # without the state, the rows up to it are gone with their checkpoint
            if not discarded:
                self.core.restore(saved[1], time.time())
        replayed = 0
        began = time.monotonic()
        # in groups, as the live path applied them (the scorer gives the same result for any chunking): one core
        # call and one outbox commit per group instead of per row made a replica's restart after a busy half
        # minute take seconds (4,820 rows: ~7 s), and its subjects waited that long (bench/nats_cluster.py)
        group: list[tuple[int, str, bytes]] = []
        for row in self.journal.replay(self._applied_id):
            group.append(row)
            if len(group) >= REPLAY_GROUP:
                replayed += self._replay_group(group)
                group = []
        replayed += self._replay_group(group)
        if saved is not None or replayed:
            log.info(
                "restored %d subjects from checkpoint, replayed %d journal rows in %.1f s",
                len(self.subjects),
                replayed,
                time.monotonic() - began,
            )

    def _replay_group(self, rows: list[tuple[int, str, bytes]]) -> int:
        if rows:
            self.apply_many([(topic, payload) for _, topic, payload in rows], ids=[row_id for row_id, _, _ in rows])
            self._applied_id = rows[-1][0]
        return len(rows)

    def start(self) -> None:
        """Recover, connect (persistent session, QoS 1, manual acks) and start the worker thread."""
        self.recover()
        # load (or on a new machine compile) the scorer's numba loops before the first message: otherwise a
        # fresh process spends its first seconds of traffic doing it, and its first movements come late
        warm_up()
        status = wire.detector_status_topic(self.instance)
        self._client = make_client(
            self.settings.mqtt,
            f"plm-detector-{self.instance}",
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
        self._client.on_subscribe = self._on_subscribe
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
            "detector %s running: rules %s, shard %d/%d",
            self.instance,
            self.core.rules.name,
            self.shard[0],
            self.shard[1],
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
                self._write(self.core.end_all_nights())
            self._checkpoint()
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

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def _run_worker(self) -> None:
        """The worker thread's body: :meth:`_work`, and if it ever raises, fail loudly instead of leaving a
        process that looks alive and scores nothing. One message cannot get here (the core dead-letters what
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

    # ------------------------------------------------------------------ applying: the core and its effects

    def apply(self, topic: str, payload: bytes, wall_s: float | None = None) -> None:
        """Process one message (live or replayed). Never raises on bad input: counts it."""
        self.apply_many([(topic, payload)], wall_s)

    def apply_many(
        self, messages: Sequence[tuple[str, bytes]], wall_s: float | None = None, ids: Sequence[int] = ()
    ) -> None:
        """Apply messages through the core (at ``wall_s``, default now) and carry out its effects."""
        self.core.chunk_s = self.policy.chunk_s
        self._write(self.core.handle(messages, time.time() if wall_s is None else wall_s, ids))

    def _write(self, effects: Effects) -> None:
        """Carry out what the core asked for: points to the durable outbox (one transaction), results to the
        broker, dead letters to the journal. A storage failure raises here and ends the worker."""
        if effects.points:
            self.sink.put(effects.points)
        if effects.publishes and self._client is not None:
            for p in effects.publishes:
                self._client.publish(p.topic, p.payload, qos=1, retain=p.retain)
        for letter in effects.dead_letters:
            self.journal.dead_letter(
                letter.topic, letter.payload, letter.error, letter.traceback, stage=letter.stage, key=letter.key
            )
            kind = f"{letter.stage}:{letter.error.partition(':')[0]}"
            if kind not in self._dead_letter_seen:  # the first of each kind with its traceback, later ones briefly
                self._dead_letter_seen.add(kind)
                log.error(
                    "dead-lettered (%s) on %r: %s -- processing goes on\n%s",
                    letter.stage,
                    letter.topic,
                    letter.error,
                    letter.traceback,
                )
            else:
                self._limited.warning(
                    "dead_letter", f"dead-lettered ({letter.stage}) on {letter.topic!r}: {letter.error}"
                )

    # ------------------------------------------------------------------ MQTT side

    def _subscribe(self, client: mqtt.Client) -> None:
        if self.own_subscriptions:
            # the statuses (small, retained) say which subjects exist; a subject's samples are subscribed when
            # its first status arrives (_follow_subjects), and after a reconnect again, with those known already
            client.subscribe([(wire.STATUS_WILDCARD, 1), (DIARY_WILDCARD, self._no_retained(1))])  # both small
            known = set(self._subjects_subscribed) | {s.id for s in self.settings.subjects} | set(self.subjects)
            self._subjects_subscribed.clear()
            self._subscribe_subjects(client, sorted(known))
        elif self.settings.detector.mqtt_protocol == "5":
            # retained sample batches and diary notes have no meaning (each is one moment, scored once): MQTT 5
            # lets the broker keep them from us. Status is retained by design. 3.1.1: see DetectorCore.filter_received
            no_retained = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            client.subscribe(
                [
                    (wire.SAMPLES_WILDCARD, no_retained),
                    (wire.STATUS_WILDCARD, SubscribeOptions(qos=1)),
                    (DIARY_WILDCARD, no_retained),
                ]
            )
        else:
            client.subscribe([(wire.SAMPLES_WILDCARD, 1), (wire.STATUS_WILDCARD, 1), (DIARY_WILDCARD, 1)])
        self._publish_status("online")
        self._resend_acks = True  # the broker may have lost the retained acks (read by the worker)
        self._reconnect_delay_s = RECONNECT_MIN_S

    def _no_retained(self, qos: int) -> Any:
        """MQTT 5: the broker keeps retained messages from us (sample batches and notes are one moment each)."""
        if self.settings.detector.mqtt_protocol == "5":
            return SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        return qos

    def _subscribe_subjects(self, client: mqtt.Client, subjects: Sequence[str]) -> None:
        """Subscribe to the samples of these subjects (those of this replica's shard); each is
        announced as owned once the broker confirms (SUBACK): from then on it keeps their batches for us."""
        mine = [s for s in subjects if s not in self._subjects_subscribed and self.core.route.owns(s)]
        for start in range(0, len(mine), 100):  # a SUBSCRIBE of 200 filters stays far below any packet limit
            part = mine[start : start + 100]
            result, mid = client.subscribe([(f"{wire.TOPIC_ROOT}/{s}/+/acc", self._no_retained(1)) for s in part])
            if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._subjects_subscribed.update(part)
                self._announce_on_suback[mid] = part

    def _on_subscribe(self, client: mqtt.Client, _userdata: Any, mid: int, reason_codes: Any = (), *_rest: Any) -> None:
        """A SUBACK. Only a subscription the broker granted is announced: a refused one (an ACL, a cluster
        broker out of consumers: NATS refuses fast QoS 1 subscriptions with 0x80) would tell collectors to send
        batches nobody receives. A refused subject is asked for again ``RESUBSCRIBE_S`` later (and on its next
        status): a cluster refuses while a node is down and grants once it is back."""
        self._subscribed.set()
        subjects = self._announce_on_suback.pop(mid, None)
        if not subjects:
            return
        codes = list(reason_codes) if isinstance(reason_codes, list | tuple) else []
        granted = [s for s, code in zip(subjects, codes, strict=False) if not suback_refused(code)]
        refused = [s for s, code in zip(subjects, codes, strict=False) if suback_refused(code)]
        refused += subjects[len(codes) :]  # no code at all: not granted either
        if refused:
            self._subjects_subscribed.difference_update(refused)
            self._refused_subjects.update(refused)
            self._resubscribe_at = time.monotonic() + RESUBSCRIBE_S
            self.stats.bad["subscribe_refused"] += len(refused)
            self._limited.warning(
                "subscribe",
                f"the broker refused the sample subscription of {len(refused)} subject(s), e.g. {refused[0]}",
            )
        if granted:
            self._announce(client, granted)

    def _resubscribe_refused(self, now: float) -> None:
        if self._refused_subjects and self._client is not None and now >= self._resubscribe_at:
            subjects, self._refused_subjects = sorted(self._refused_subjects), set()
            self._subscribe_subjects(self._client, subjects)

    def _announce(self, client: mqtt.Client, subjects: Sequence[str]) -> None:
        """Retained ``plm/v1/<subject>/_owner``: a collector sends a subject's batches once it has seen one (the
        broker drops what nobody has subscribed to), and sends again what is not acknowledged when a newer one
        comes. Once per subject and process."""
        now = time.time_ns()
        for subject in subjects:
            if subject not in self._announced:
                self._announced.add(subject)
                payload = wire.encode_owner(self.instance, self.shard, now)
                client.publish(wire.owner_topic(subject), payload, qos=1, retain=True)

    def _follow_subjects(self, owned: Sequence[tuple[str, bytes]]) -> None:
        """A group's statuses name the subjects that exist (a collector says "online" before its first batch):
        a replica subscribes to its new ones; one detector, subscribed to everything, announces them."""
        client = self._client
        if client is None:
            return
        named = {topic.split("/")[2] for topic, _ in owned if topic.endswith("/status")}
        if self.own_subscriptions:
            self._subscribe_subjects(client, sorted(named - self._subjects_subscribed))
        elif named - self._announced:
            self._announce(client, sorted(named - self._announced))

    def backlog(self) -> int:
        """Messages read from the broker and not yet journaled (at most one group)."""
        return len(self._received)

    def _work(self) -> None:
        """The service's one working thread: it runs the MQTT network loop itself and, between reads, the
        groups. Why not paho's network thread plus a worker: paho reads a packet with three or four small
        ``recv`` calls, each of which gives up the GIL -- and with a busy worker thread each takes up to the
        interpreter's switch interval (5 ms) to get it back, so reading, not scoring, capped the service at
        a few hundred messages a second. One thread pays no hand-offs; while it works on a group, the
        kernel and the broker hold what comes next (QoS 1, not acknowledged yet)."""
        last_checkpoint = last_status = last_tick = time.monotonic()
        sensors = self.core.sensor_count()
        while True:
            stopping = self._stop.is_set()
            group = self._read_group(max(2000, 4 * sensors)) if not stopping else self._take(len(self._received))
            if group:
                self._handle_messages(group)
                self.policy.adapt(time.monotonic(), time.thread_time())
            elif not stopping and self.core.holding and self.policy.lull(time.monotonic(), time.thread_time()):
                self._write(self.core.flush_holds())
            now = time.monotonic()
            self._publish_acks(now)
            if now - last_tick >= 1.0:
                self._write(self.core.tick(time.time()))
                self._resubscribe_refused(now)
                sensors = self.core.sensor_count()
                last_tick = now
            if now - last_checkpoint >= self._checkpoint_interval_s():
                cpu_before = time.thread_time()
                self._checkpoint()
                last_checkpoint = time.monotonic()
                self._checkpoint_cost_s = last_checkpoint - now
                self.policy.paused(self._checkpoint_cost_s, time.thread_time() - cpu_before, last_checkpoint)
            if now - last_status >= self.status_every_s:
                self._publish_status("online")
                last_status = now
            self._heartbeat = now
            if stopping:
                break

    def _read_group(self, limit: int) -> list[Received]:
        """Run the network loop until ``limit`` messages are in (a few seconds of every sensor: one journal
        commit, one outbox commit, one PUBACK burst) or the first of them has waited ``GROUP_WAIT_S`` (latency
        bound); return nothing after an idle wait. Tells the chunk policy when the socket ran dry, which is how
        the service tells that it keeps up."""
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
            wait = (first_at + GROUP_WAIT_S - now) if first_at is not None else (IDLE_S if self.core.holding else 0.2)
            before = len(received)
            rc = client.loop(timeout=wait)  # reads one packet (or waits up to `wait` for one)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._reconnect(rc)
                break
            if len(received) > before and client.socket_drained:
                # the read took all the socket held: what arrives is read as it comes (with a steady stream
                # of sensors out of step the socket is never found empty, yet the service keeps up)
                self.policy.socket_dry(time.monotonic())
            elif len(received) == before and _socket_dry(client):
                self.policy.socket_dry(time.monotonic())
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

    def _handle_messages(self, messages: list[Received]) -> None:
        owned = self.core.filter_received(messages)
        self._follow_subjects(owned)
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
        acks = self.core.acks
        if self._resend_acks:
            self._resend_acks = False
            acks.resend_all()
        # QoS 0: the mark is cumulative and refreshed every ACK_EVERY_S (all of them after a reconnect), so a
        # lost one only makes a sender keep its batches a little longer. QoS 1 cost a PUBACK round trip and
        # paho's in-flight bookkeeping per ack (~12 % of the worker at 2000 sensors, with the results); and
        # paho's publish one lock and two system calls per ack: they go out as one write
        due = acks.due(now, ACK_EVERY_S)
        self._client.publish_many(
            [(wire.ack_topic(subject, sensor), wire.encode_ack(until_ns)) for subject, sensor, until_ns in due],
            retain=True,
        )

    def _publish_status(self, state: str, error: str | None = None) -> None:
        """The retained ``plm/v1/_detector/<instance>`` status (and, while online, a ``detector_health`` point).

        Published by the worker thread only, every ``status_every_s``: its ``time_ns`` is the worker's
        heartbeat, so ``plm stack healthcheck-detector`` sees a stuck worker as a status that stops being
        refreshed. ``failed`` (with ``error``) is the worker's last word when it stops on an exception."""
        metrics = self.sink.metrics()
        stats = self.stats
        doc: dict[str, Any] = {
            "state": state,
            "instance": self.instance,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "received": stats.received,
            "bad": dict(stats.bad),
            "dead_lettered": self.journal.dead_letter_total,
            "movements": stats.movements,
            "subjects": len(self.subjects),
            "checkpoints_discarded": stats.checkpoints_discarded,
            "holes_given_up": stats.holes_given_up,
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
                        late_batches=stats.bad.get("late", 0),
                        # every known reason, zeros included, so a dashboard shows "0" rather than "no data"
                        bad_payloads={
                            **dict.fromkeys(BAD_REASONS, 0),
                            **{k: v for k, v in stats.bad.items() if k != "late"},
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
        """The core's state with the last journal row it has applied (every row's points are in the outbox:
        effects are written as each call returns)."""
        self.journal.checkpoint(self._applied_id, {"format": state_format(), **self.core.snapshot()})
