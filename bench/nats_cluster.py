"""Nights through a three-node NATS cluster while a broker node and a detector replica are killed (issue 22, item 2).

    SensorPublishers (the collector's class: durable queue, kept until the detector's ack), spread over the nodes
        --MQTT 3.1.1--> NATS n0 / n1 / n2 (JetStream: sessions, retained messages, QoS 1 messages, 3 replicas)
        --> `plm detect --shard 0/2` (via n0) and `plm detect --shard 1/2` (via n1), child processes --> influxd 1.x

Every client reaches the cluster through a small TCP proxy standing for the address a deployment puts in front of
the nodes (a Kubernetes Service, a load balancer, a DNS name): a connection goes to the client's home node, or to
the next one when the home node does not answer. The product's clients have one broker URL each
(``mqtt.url``), so that address is how they fail over (docs/deploy-scale.md).

Faults, while the nights stream at high speed:

* node n1 SIGKILLed (replica 1 and the publishers on n1 reconnect through their proxy to n2, and resume their
  sessions there), restarted ``node_down_s`` later as an orchestrator would, on the same ports and store;
* replica 0 SIGKILLed and restarted (it resumes from checkpoint + journal; its subjects wait meanwhile, their
  collectors keep the batches not acknowledged).

Recovery time of a fault: from the kill until every affected subject (node kill: all; replica kill: the replica's) has
a movement in InfluxDB whose onset lies after the data being published at the kill -- new data flowing through
again, not a replay. Its resolution is the spacing of the subjects' movements (a few data seconds in a severe night,
divided by the speed-up).

The stream runs ``speedup`` times faster than real time, so every wait the detector measures in data time is
scaled by it: ``detector.hole_wait_s`` = speed-up x ``HOLE_WAIT_WALL_S`` (what 60 s of data are in real time:
longer than the broker's redelivery and the collector's resend after a stalled ack, detector/live/ingest.py).

At the end every sensor says a retained ``offline`` goodbye, and each subject's movements and night summary are
read back from influxd and compared with offline scoring of the same batches: equality on (onset ms, side, kind,
plm) and on the summary fields (as bench/soak.py).

    python -m bench.nats_cluster                                   # the bench run: 8 subjects x 60 min
    python -m bench.nats_cluster --subjects 4 --minutes 12 --json r.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.soak import DetectorProcess, _wait, compare_with_offline
from collector.publisher import SensorPublisher
from detector.live.routing import shard_of
from detector.scoring.scorer import score_arrays
from plm import wire
from plm.config import MqttSettings
from plm.mqtt import connect, make_client
from plm.ops.localservices import Influxd1, NatsCluster
from simulator.batches import batches_as_arrays, night_batches

log = logging.getLogger(__name__)

PASSWORD = "nats-mqtt-password-3b9e"
HOLE_WAIT_WALL_S = (
    30.0  # wall seconds a seq hole is waited for: > the collector's ACK_STALL_S (20 s) + ack cadence (5 s)
)


@dataclass
class ClusterNightConfig:
    subjects: int = 8
    minutes: float = 60.0  # night length (data time)
    seed: int = 1
    batches_per_s: float = 400.0  # publishing speed, all sensors together, wall time
    hole_wait_s: float | None = None  # detector.hole_wait_s (data s); None: speed-up x HOLE_WAIT_WALL_S
    replicas: int = 2
    node_kill: bool = True  # n1 SIGKILLed at a third of the stream
    node_down_s: float = 3.0  # then restarted
    replica_kill: bool = True  # replica 0 SIGKILLed at two thirds of the stream
    # the cluster's `mqtt {}` options (NatsServer.mqtt_options): consumer_replicas 1 because NATS 2.9 refuses
    # (SUBACK 0x80) QoS 1 subscriptions that come faster than it creates replicated consumers (docs/deploy-scale.md)
    # ack_wait 1s: a QoS 1 message delivered on a connection that broke is sent again after ack_wait (default 30 s),
    # behind newer ones; the detector waits for it at the seq hole, so a short ack_wait shortens that wait (the
    # default is lossless too: --ack-wait '', and the CI tests use it; docs/deploy-scale.md)
    mqtt_options: dict[str, Any] = field(default_factory=lambda: {"consumer_replicas": 1, "ack_wait": "1s"})
    profile: str = "rls-severe"
    drain_s: float = 300.0  # after the stream: this long for every batch to be acknowledged, else a failure
    workdir: Path | None = None
    keep: bool = False


@dataclass
class Fault:
    kind: str
    at_s: float  # wall seconds after the stream began
    online_s: float | None  # from the kill until every affected replica was online again (a fresh status)
    recovery_s: float | None = None  # from the kill until new movements of every affected subject are in InfluxDB
    # of which the data itself: from the kill until the batch that ends those movements was published (without
    # a fault they could not be stored earlier); recovery_s - data_s is what the fault cost
    data_s: float | None = None


@dataclass
class ClusterNightReport:
    config: dict[str, Any]
    subjects_per_replica: dict[int, list[str]] = field(default_factory=dict)
    batches_published: int = 0
    movements_expected: int = 0
    movements_stored: int = 0
    movements_lost: int = 0
    movements_extra: int = 0
    movements_duplicated: int = 0
    summary_mismatches: list[str] = field(default_factory=list)
    final_nights: dict[str, int] = field(default_factory=dict)  # final `_night` results seen per subject
    replica_status: dict[int, dict[str, Any]] = field(default_factory=dict)  # each replica's last status
    failovers: int = 0  # proxied connections that went to a node other than their home node
    faults: list[Fault] = field(default_factory=list)
    publisher_dropped: int = 0
    publisher_resent: int = 0  # batches sent again by the collectors because the detector's ack stalled
    publisher_subscribe_refused: int = 0  # ack subscriptions the cluster refused, each asked for again
    speedup: float = 0.0
    hole_wait_s: float = 0.0
    wall_s: float = 0.0
    stream_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.movements_lost == 0
            and self.movements_extra == 0
            and self.movements_duplicated == 0
            and not self.summary_mismatches
            and self.publisher_dropped == 0
            and all(n >= 1 for n in self.final_nights.values())
        )


class FailoverProxy:
    """A TCP proxy on a loopback port: each connection goes to the first of ``backends`` (ports) that accepts.

    It stands for the one address a deployment puts in front of a broker cluster. When the node behind a connection
    dies, the client's side is closed too, and its reconnect lands on the next node that answers."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.failovers = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for i, port in enumerate(self.backends):
            with contextlib.suppress(OSError):
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                upstream.settimeout(None)
                if i:
                    self.failovers += 1
                break
        if upstream is None:
            client.close()
            return
        with self._lock:
            self._conns |= {client, upstream}
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # one side gone: the other goes too, so the client reconnects
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with self._lock:
            self._conns -= {src, dst}

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Watcher:
    """The replicas' retained statuses and the nights' results, read on node n2."""

    def __init__(self, settings: MqttSettings, replicas: int) -> None:
        self.lock = threading.Lock()
        self.status: dict[int, dict[str, Any]] = {}
        self.online_seen = dict.fromkeys(range(replicas), 0)
        self.finals: dict[str, int] = {}
        self.client = make_client(
            settings, "nats-cluster-watcher",
            on_connect=lambda c: c.subscribe(
                [(f"{wire.TOPIC_ROOT}/_detector/+", 1), (f"{wire.TOPIC_ROOT}/+/_night", 1)]
            ),
        )  # fmt: skip
        self.client.on_message = self._on_message
        connect(self.client, settings)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            doc = json.loads(msg.payload)
            with self.lock:
                if msg.topic.endswith("/_night"):
                    if doc.get("final"):
                        subject = msg.topic.split("/")[2]
                        self.finals[subject] = self.finals.get(subject, 0) + 1
                    return
                k = int(str(doc.get("shard", "0/1")).split("/")[0])
                self.status[k] = doc
                if doc.get("state") == "online" and not msg.retain:
                    self.online_seen[k] = self.online_seen.get(k, 0) + 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _log_tail(path: Path, lines: int = 6) -> str:
    """The last warnings of a replica's log, for a failure message."""
    with contextlib.suppress(OSError):
        kept = [
            line for line in path.read_text(errors="replace").splitlines() if " WARNING " in line or " ERROR " in line
        ]
        return " | ".join(kept[-lines:]) or "no warnings"
    return "no log"


def pick_subjects(count: int, replicas: int) -> list[str]:
    """``count`` subject ids spread evenly over the replicas' shards (crc32 decides; names are tried in order)."""
    per: dict[int, list[str]] = {k: [] for k in range(replicas)}
    i = 0
    while sum(map(len, per.values())) < count:
        name = f"nats{i:03d}"
        k = shard_of(name, replicas)
        if len(per[k]) < -(-count // replicas):
            per[k].append(name)
        i += 1
    return sorted(s for names in per.values() for s in names)


def run_cluster_night(
    cfg: ClusterNightConfig, services: tuple[NatsCluster, Influxd1] | None = None
) -> ClusterNightReport:
    """The night with its faults. ``services``: a running cluster (users ``{"plm": PASSWORD}``, ``cfg.mqtt_options``)
    and influxd to use (the tests' fixtures start and stop them); without, they are started here."""
    from simulator import simulate_night

    report = ClusterNightReport(config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
    tmp = Path(cfg.workdir or tempfile.mkdtemp(prefix="plm-nats-"))
    tmp.mkdir(parents=True, exist_ok=True)
    duration_s = cfg.minutes * 60
    start_unix = time.time() - duration_s - 3600  # the whole night in the past, as a replayed one
    subjects = pick_subjects(cfg.subjects, cfg.replicas)
    for s in subjects:
        report.subjects_per_replica.setdefault(shard_of(s, cfg.replicas), []).append(s)
    per_subject: dict[str, dict[str, list[wire.SampleBatch]]] = {}
    items: list[tuple[str, str, wire.SampleBatch]] = []
    for k, subject in enumerate(subjects):
        night = simulate_night(
            cfg.profile, seed=cfg.seed * 100 + k, duration_h=cfg.minutes / 60, start_unix_s=start_unix,
            jitter_ms=0, gap=False,
        )  # fmt: skip
        per_subject[subject] = night_batches(night)
        items += [(subject, side, b) for side, bs in per_subject[subject].items() for b in bs]
    items.sort(key=lambda x: x[2].start_ns)
    offlines = {
        s: score_arrays(batches_as_arrays(per_subject[s]["left"]), batches_as_arrays(per_subject[s]["right"]))
        for s in subjects
    }
    batch_s = items[0][2].count / items[0][2].rate_hz
    report.speedup = round(cfg.batches_per_s * batch_s / (2 * len(subjects)), 1)
    report.hole_wait_s = min(3600.0, cfg.hole_wait_s or report.speedup * HOLE_WAIT_WALL_S)

    own_services = services is None
    if services is None:
        services = (
            NatsCluster(workdir=tmp / "cluster", users={"plm": PASSWORD}, mqtt_options=cfg.mqtt_options),
            Influxd1(workdir=tmp / "influxd"),
        )
    cluster, influxd = services
    proxies: list[FailoverProxy] = []
    replicas: list[DetectorProcess] = []
    publishers: dict[tuple[str, str], SensorPublisher] = {}
    watcher: Watcher | None = None
    t0 = time.monotonic()
    try:
        if own_services:
            cluster.start()
            influxd.start()
        ports = [node.mqtt_port for node in cluster.nodes]
        # proxy i: home node i, else the next one
        proxies = [FailoverProxy([ports[i], ports[(i + 1) % len(ports)]]) for i in range(len(ports))]

        def mqtt_settings(url: str) -> MqttSettings:
            return MqttSettings(url=url, username="plm", password=PASSWORD, protocol="3.1.1", keepalive_s=5)

        watcher = Watcher(mqtt_settings(cluster.nodes[2].url), cfg.replicas)
        replicas = [
            DetectorProcess(
                proxies[k % len(proxies)].url,
                influxd,
                tmp / f"state{k}",
                tmp / f"replica{k}.log",
                instance=f"replica{k}",
                shard=(k, cfg.replicas),
                env={
                    "PLM_MQTT__PROTOCOL": "3.1.1",  # NATS 2.9: no MQTT 5
                    "PLM_MQTT__PASSWORD": PASSWORD,
                    "PLM_DETECTOR__MQTT_PROTOCOL": "3.1.1",
                    "PLM_DETECTOR__HOLE_WAIT_S": str(report.hole_wait_s),
                },
            )
            for k in range(cfg.replicas)
        ]
        for r in replicas:
            r.start()
        if _wait(lambda: all(watcher.online_seen[k] for k in range(cfg.replicas)), 60) is None:
            raise RuntimeError(f"a replica did not come online: see {tmp}/replica*.log")
        # publishers on every node, not on their replica's: the batches cross the cluster
        for j, subject in enumerate(subjects):
            for side in ("left", "right"):
                publishers[(subject, side)] = SensorPublisher(
                    mqtt_settings(proxies[(j + 1) % len(proxies)].url), subject, f"{side}-ankle", side,
                    tmp / "queues", 10_000_000, client_id=f"natspub-{subject}-{side}", ack_mode="detector",
                )  # fmt: skip
        for pub in publishers.values():
            pub.start()
        if _wait(lambda: all(p.connected for p in publishers.values()), 30) is None:
            raise RuntimeError("the publishers did not connect")

        faults: list[tuple[int, str]] = []
        if cfg.node_kill:
            faults.append((len(items) // 3, "node_kill"))
        if cfg.replica_kill:
            faults.append((2 * len(items) // 3, "replica_kill"))
        threads: list[threading.Thread] = []
        started = time.monotonic()
        interval = 1.0 / cfg.batches_per_s

        def data_wait(affected: list[str], after_ns: int, killed: float) -> float:
            """Seconds from ``killed`` until the data ending each affected subject's first movement after
            ``after_ns`` was published (the stream's schedule: item i at ``started + i * interval``)."""
            ends = []
            for subject in affected:
                onsets = [e.onset + e.duration for e in offlines[subject].events if e.onset * 1e9 > after_ns]
                if onsets:
                    ends.append((subject, min(onsets) * 1e9))
            last = 0.0
            for subject, end_ns in ends:
                i = next((i for i, (s, _, b) in enumerate(items) if s == subject and b.end_ns >= end_ns), len(items))
                last = max(last, started + i * interval - killed)
            return round(last, 2)

        def flowing_again(affected: list[str], after_ns: int, killed: float, timeout_s: float = 180) -> float | None:
            """Seconds from ``killed`` until each affected subject has a movement with onset after ``after_ns``."""
            waiting = set(affected)

            def check() -> bool:
                for subject in list(waiting):
                    q = f"SELECT count(duration_s) FROM movement WHERE subject = '{subject}' AND time > {after_ns}"
                    with contextlib.suppress(Exception):
                        if influxd.query(q, database=influxd.database)["results"][0].get("series"):
                            waiting.discard(subject)
                return not waiting

            return None if _wait(check, timeout_s, 0.1) is None else round(time.monotonic() - killed, 2)

        def node_kill(data_ns: int) -> None:
            at = time.monotonic() - started
            seen = dict(watcher.online_seen)
            node = cluster.nodes[1]
            node.kill()  # replica 1 (home n1) and the publishers on n1 fail over to n2
            killed = time.monotonic()
            flowing: list[float | None] = []
            th = threading.Thread(target=lambda: flowing.append(flowing_again(subjects, data_ns, killed)), daemon=True)
            th.start()
            time.sleep(cfg.node_down_s)
            # restarted as an orchestrator would: with consumer_replicas 1, a session whose consumers lived on the
            # dead node cannot be resumed elsewhere until it is back (docs/deploy-scale.md)
            node.start()
            affected = [k for k in range(cfg.replicas) if k % len(proxies) == 1]
            rec = _wait(lambda: all(watcher.online_seen[k] > seen[k] for k in affected), 120)
            back = None if rec is None else round(time.monotonic() - killed, 2)
            th.join(200)
            report.faults.append(
                Fault(
                    "node_kill",
                    round(at, 2),
                    back,
                    flowing[0] if flowing else None,
                    data_wait(subjects, data_ns, killed),
                )
            )

        def replica_kill(data_ns: int) -> None:
            at = time.monotonic() - started
            seen = dict(watcher.online_seen)
            replicas[0].kill()
            killed = time.monotonic()
            flowing: list[float | None] = []
            mine = report.subjects_per_replica[0]
            th = threading.Thread(target=lambda: flowing.append(flowing_again(mine, data_ns, killed)), daemon=True)
            th.start()
            time.sleep(0.5)
            replicas[0].start()  # as an orchestrator would
            rec = _wait(lambda: watcher.online_seen[0] > seen[0], 120)
            th.join(200)
            online = None if rec is None else round(rec + 0.5, 2)
            report.faults.append(
                Fault(
                    "replica_kill",
                    round(at, 2),
                    online,
                    flowing[0] if flowing else None,
                    data_wait(mine, data_ns, killed),
                )
            )

        for i, (subject, side, batch) in enumerate(items):
            while faults and faults[0][0] <= i:
                kind = faults.pop(0)[1]
                target = node_kill if kind == "node_kill" else replica_kill
                th = threading.Thread(target=target, args=(batch.start_ns,), daemon=True)
                th.start()
                threads.append(th)
            publishers[(subject, side)].submit([batch])
            report.batches_published += 1
            delay = started + (i + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for th in threads:
            th.join(300)
        report.stream_s = round(time.monotonic() - started, 1)
        # every batch in a replica's journal (the acks emptied every queue), then the goodbyes
        if _wait(lambda: all(p.queue_depth == 0 for p in publishers.values()), cfg.drain_s, 0.2) is None:
            waiting = {
                f"{k[0]}/{k[1]}": f"{p.queue_depth} queued, connected {p.connected}, refused {p.subscribe_refused}"
                for k, p in publishers.items()
                if p.queue_depth
            }
            tails = "; ".join(f"replica {k}: {_log_tail(tmp / f'replica{k}.log')}" for k in range(cfg.replicas))
            raise RuntimeError(f"batches never acknowledged by a replica: {waiting}; {tails}")
        report.publisher_dropped = sum(p.dropped for p in publishers.values())
        report.publisher_resent = sum(p.resent for p in publishers.values())
        report.publisher_subscribe_refused = sum(p.subscribe_refused for p in publishers.values())
        for (_subject, side), pub in publishers.items():
            pub.stop(wire.SensorStatus(state="offline", side=side))
        if _wait(lambda: set(subjects) <= set(watcher.finals), 120) is None:
            log.warning("not every night was finalised: %s", sorted(set(subjects) - set(watcher.finals)))
        time.sleep(1.0)  # the last outbox writes
        for r in replicas:
            r.stop()  # a clean stop flushes the outbox
        report.replica_status = {k: dict(v) for k, v in watcher.status.items()}
        report.final_nights = {s: watcher.finals.get(s, 0) for s in subjects}
        report.failovers = sum(p.failovers for p in proxies)
        report.wall_s = round(time.monotonic() - t0, 1)

        for subject in subjects:
            compare_with_offline(report, influxd, subject, offlines[subject])
    finally:
        for pub in publishers.values():
            with contextlib.suppress(Exception):
                pub.stop(flush_timeout_s=0.1)
        if watcher is not None:
            watcher.close()
        for r in replicas:
            r.stop()
        for p in proxies:
            p.close()
        if own_services:
            influxd.stop()
            cluster.stop()
        if not cfg.keep and cfg.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def format_report(r: ClusterNightReport) -> str:
    c = r.config
    lines = [
        f"nats cluster: 3 nodes, {c['replicas']} replicas, {c['subjects']} subjects x {c['minutes']:g} min nights, "
        f"seed {c['seed']}; stream {r.stream_s:.0f} s ({r.speedup:g}x real time), {r.wall_s:.0f} s wall; "
        f"hole wait {r.hole_wait_s:g} s of data, NATS mqtt {c['mqtt_options']}",
        "  subjects per replica: " + ", ".join(f"{k}: {len(v)}" for k, v in sorted(r.subjects_per_replica.items())),
        f"  batches published {r.batches_published}, publisher drops {r.publisher_dropped}, "
        f"proxied connections failed over {r.failovers}, batches resent on a stalled ack {r.publisher_resent}, "
        f"ack subscriptions refused (and asked again) {r.publisher_subscribe_refused}",
        f"  movements expected {r.movements_expected}, stored {r.movements_stored}, lost {r.movements_lost}, "
        f"extra {r.movements_extra}, duplicated {r.movements_duplicated}",
        f"  night summaries equal to offline scoring: {not r.summary_mismatches} {r.summary_mismatches[:4]}",
        f"  final night results per subject: {r.final_nights}",
    ]
    for f in r.faults:
        lines.append(
            f"  fault {f.kind} at {f.at_s:.1f} s: replicas online again after {f.online_s} s, new movements of the "
            f"affected subjects in InfluxDB after {f.recovery_s} s (their data was published after {f.data_s} s)"
        )
    for k, s in sorted(r.replica_status.items()):
        lines.append(
            f"  replica {k}: received {s.get('received')}, subjects {s.get('subjects')}, bad {s.get('bad')}, "
            f"holes given up {s.get('holes_given_up')}, movements {s.get('movements')}"
        )
    lines.append("  OK" if r.ok else "  FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="nights through a 3-node NATS cluster with a node and a replica killed"
    )
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batches-per-s", type=float, default=400.0)
    parser.add_argument("--hole-wait-s", type=float, help="detector.hole_wait_s (default: speed-up x 30 s)")
    parser.add_argument("--node-down-s", type=float, default=3.0)
    parser.add_argument("--no-node-kill", action="store_true")
    parser.add_argument("--no-replica-kill", action="store_true")
    parser.add_argument(
        "--consumer-replicas", type=int, default=1, help="the cluster's mqtt.consumer_replicas (0: the default)"
    )
    parser.add_argument(
        "--ack-wait", default="1s", help="the cluster's mqtt.ack_wait, e.g. 1s (empty: the default, 30 s)"
    )
    parser.add_argument("--keep", type=Path, help="keep logs and data in this directory")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run_cluster_night(
        ClusterNightConfig(
            subjects=args.subjects, minutes=args.minutes, seed=args.seed, batches_per_s=args.batches_per_s,
            hole_wait_s=args.hole_wait_s,
            node_kill=not args.no_node_kill, node_down_s=args.node_down_s, replica_kill=not args.no_replica_kill,
            workdir=args.keep,
            mqtt_options={**({"consumer_replicas": args.consumer_replicas} if args.consumer_replicas else {}), **({"ack_wait": args.ack_wait} if args.ack_wait else {})},
        )
    )  # fmt: skip
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=1, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
