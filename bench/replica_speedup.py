"""Sensors sustained in real time by 2 detector replicas vs 1 on this machine (issue #22, item 3).

For each replica count of ``--replicas`` and each sensor count of its ladder (ascending; stops after the first
that is not kept up): a fresh local mosquitto, the detector replicas (``LiveDetector(shard=(k, N))`` each in its
own process, what ``plm detect --shard k/N`` runs; bench/live_throughput.py's detector process), the sensors
announced (retained "online" status, then each subject's ``_owner`` awaited, as the collector does) and sent
live by publisher processes for ``--seconds`` (bench/live_throughput.py's load: severe-RLS nights, one 1-s batch
per sensor per second, each sensor in its own phase of the second). Kept up = bench/live_throughput.py's
``judge_realtime`` for every replica (lag of its most behind leg bounded and not growing, every batch of its
subjects in).

Pinning: with N replicas on a machine of C cores, replica k runs on core k alone. When N < C the load
(mosquitto, influxd, publishers, this process) gets the other cores; when N = C (2 replicas on a 2-core box)
the load has no core of its own and takes CPU from the replicas -- the *direct* figure then measures the box,
not the detector. So three figures are printed:

* **direct**: the largest sensor count every replica kept up with;
* **CPU-based**: each replica's process CPU per message received (= CPU per sensor-second, one batch per sensor
  per second) at the largest load kept up, and ``N cores / that`` = sensors N cores would sustain if the load
  ran elsewhere (as it does in a deployment: broker, collectors and database are other machines). Process CPU
  time counts only what the detector itself used, so another process on its core does not inflate it (much:
  caches are shared), which is why it is the robust figure on a 2-core box;
* **CPU-based, chunk fixed** (first, ``--cpu-sensors`` per replica): the same at equal load per replica
  (1 x S, 2 x 2S) with the replicas' chunk fixed at 0 (``max_chunk_s=0``), because the service lengthens its
  chunk when its process is starved of CPU and a longer chunk costs less per message: with the default policy
  the CPU per message on a busy machine measures the contention as much as the detector (``fixed_chunk_cpu``).

Speed-up = figure with 2 replicas / figure with 1 (target >= 1.7). Before replicas subscribed to their own
subjects only (#22 item 1), each replica received and decoded every subject's batches.

    python -m bench.replica_speedup                       # the full figure (~10-20 min)
    python -m bench.replica_speedup --skip-ladders        # only the fixed-chunk CPU figure (~3 min)
    python -m bench.replica_speedup --seconds 30 --ladder-1 500 --ladder-2 1000   # a quick check

Measures the software; it does not diagnose anyone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

from bench.live_throughput import (
    WARMUP_S,
    _detector_process,
    _live_publisher,
    _settings,
    _topics,
    cpu_figures,
    judge_realtime,
)
from detector.live.routing import shard_of
from plm import wire
from plm.config import MqttSettings
from plm.mqtt import connect, make_client
from plm.ops.localservices import Influxd1, Mosquitto

SENSORS_PER_PUBLISHER = 1000  # one publisher process renders and sends this many sensors in time (live_throughput)
WINDOW_S = 5.0  # the default reorder window (detector.reorder_window_s)


def _subjects(sensors: int) -> list[str]:
    """The two-legged subjects of bench/live_throughput.py's load of ``sensors`` sensors."""
    return sorted({wire.parse_sensor_topic(topic).subject for topic, _key in _topics(sensors)})


def _process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; 0 once it is gone (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin_plan(replicas: int, cores: list[int]) -> tuple[list[set[int]], set[int]]:
    """Cores per replica (one each, its own) and the cores of everything else: the cores no replica has, or all
    of them when the replicas take every core (then the load competes; see the module docstring)."""
    if replicas > len(cores):
        raise ValueError(
            f"{replicas} replicas need {replicas} cores to be pinned one per core; this machine has {len(cores)}"
        )
    own = [{cores[k]} for k in range(replicas)]
    rest = set(cores[replicas:]) or set(cores)
    return own, rest


def _announce(url: str, subjects: list[str], timeout_s: float) -> int:
    """Each sensor's retained "online" status (what tells a replica about a subject), then wait until a detector
    has announced every subject (``_owner``): batches sent before that could reach no subscription. Returns
    how many subjects were announced."""
    settings = MqttSettings(url=url, username="plm", password="plm-test-password")
    owners: set[str] = set()
    client = make_client(settings, f"speedup-announce-{time.time_ns()}")
    client.on_message = lambda _c, _u, m: owners.add(m.topic.split("/")[2])
    connect(client, settings)
    client.subscribe(f"{wire.TOPIC_ROOT}/+/_owner", qos=1)
    infos = [
        client.publish(
            wire.status_topic(s, f"{side}-ankle"),
            wire.encode_status(wire.SensorStatus("online", side=side)),
            qos=1,
            retain=True,
        )
        for s in subjects
        for side in ("left", "right")
    ]
    for info in infos:
        info.wait_for_publish(60)
    wanted = set(subjects)
    deadline = time.monotonic() + timeout_s
    while len(owners & wanted) < len(wanted) and time.monotonic() < deadline:
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()
    return len(owners & wanted)


def rung(
    influxd: Influxd1,
    replicas: int,
    sensors: int,
    seconds: int,
    work: Path,
    pin: bool = True,
    max_chunk_s: float = 16.0,
) -> dict:
    """One run: ``replicas`` replicas, ``sensors`` live sensors for ``seconds``. Per replica: kept up, lag, CPU.
    ``max_chunk_s``: the replicas' longest chunk (the service's default 16 s; 0 fixes it at 0)."""
    tag = f"n{replicas}s{sensors}c{max_chunk_s:g}"
    mosq = Mosquitto(workdir=work / f"mosquitto-{tag}")  # fresh: no session or retained status of an earlier run
    mosq.start()
    reports: mp.Queue = mp.Queue()
    stop = mp.Event()
    detectors: list[mp.Process] = []
    publishers: list[mp.Process] = []
    cores = sorted(os.sched_getaffinity(0))
    own, rest = pin_plan(replicas, cores) if pin else ([set(cores)] * replicas, set(cores))
    everyone_else = [mosq.proc.pid, influxd.proc.pid, os.getpid()]  # type: ignore[union-attr]
    try:
        for k in range(replicas):
            settings = _settings(
                mosq, influxd, work / tag / f"r{k}", instance=f"speed{tag}r{k}", reorder_window_s=WINDOW_S
            )
            p = mp.Process(target=_detector_process, args=(settings, reports, stop, (k, replicas), max_chunk_s))
            p.start()
            os.sched_setaffinity(p.pid, own[k])  # type: ignore[arg-type]
            detectors.append(p)
        for pid in everyone_else:
            os.sched_setaffinity(pid, rest)
        started = 0
        while started < replicas:
            if reports.get(timeout=60)["kind"] == "started":
                started += 1
        subjects = _subjects(sensors)
        announced = _announce(mosq.url, subjects, timeout_s=30 + len(subjects) / 50)
        ready = mp.Semaphore(0)
        t0_queues = []
        for offset in range(0, sensors, SENSORS_PER_PUBLISHER):
            q: mp.Queue = mp.Queue()
            count = min(SENSORS_PER_PUBLISHER, sensors - offset)
            p = mp.Process(target=_live_publisher, args=(mosq.url, sensors, offset, count, seconds, ready, q))
            p.start()
            os.sched_setaffinity(p.pid, rest)  # type: ignore[arg-type]
            publishers.append(p)
            t0_queues.append(q)
        for _ in publishers:
            ready.acquire(timeout=180)
        t0 = float(int(time.time()) + 3)
        for q in t0_queues:
            q.put(t0)
        load_before = os.getloadavg()
        lags: dict[int, list[float]] = {k: [] for k in range(replicas)}
        chunks: dict[int, list[float]] = {k: [] for k in range(replicas)}
        marks: dict[int, list[tuple[float, int, float]]] = {k: [] for k in range(replicas)}
        received = dict.fromkeys(range(replicas), 0)
        ignored = dict.fromkeys(range(replicas), 0)
        # the load's own CPU (publishers, mosquitto, influxd) over the measured span: what a 2-core box must
        # give it besides the replicas
        load_pids = [p.pid for p in publishers] + [mosq.proc.pid, influxd.proc.pid]  # type: ignore[union-attr]
        load_marks: list[tuple[float, float]] = []
        while time.time() < t0 + seconds + 8:
            now = time.time()
            if (not load_marks and now > t0 + WARMUP_S) or (len(load_marks) == 1 and now > t0 + seconds - 1):
                load_marks.append((now, sum(_process_cpu_s(pid) for pid in load_pids)))
            try:
                r = reports.get(timeout=2.0)
            except queue.Empty:  # every replica too busy to report; its lag shows in the next one
                continue
            k = r["shard"][0]
            received[k], ignored[k] = r["received"], r["ignored"]
            if r["reached"] is not None and t0 + WARMUP_S < r["now"] < t0 + seconds:
                lags[k].append(r["now"] - r["reached"])
                chunks[k].append(r["chunk_s"])
                marks[k].append((r["now"], r["received"], r["cpu_s"]))
        for p in publishers:
            p.join(60)
        stop.set()
        stopped = 0
        while stopped < replicas:
            r = reports.get(timeout=120)
            k = r["shard"][0]
            received[k] = max(received[k], r["received"])
            ignored[k] = max(ignored[k], r["ignored"])
            stopped += r["kind"] == "stopped"
        per_replica = []
        for k in range(replicas):
            mine = [s for s in subjects if shard_of(s, replicas) == k]
            expected = 2 * len(mine) * seconds
            per_replica.append(
                {
                    "shard": f"{k}/{replicas}",
                    "cores": sorted(own[k]),
                    "subjects": len(mine),
                    "messages_expected": expected,
                    "messages_received": received[k],  # its own subjects' batches and statuses
                    "other_shards_messages_received": ignored[k],  # statuses only: no other subject's batches
                    **judge_realtime(lags[k], chunks[k], received[k], expected, WINDOW_S),
                    **cpu_figures(marks[k]),
                }
            )
        us = [r["detector_cpu_us_per_message"] for r in per_replica]
        return {
            "replicas": replicas,
            "sensors": sensors,
            "seconds": seconds,
            "max_chunk_s": max_chunk_s,
            "kept_up": all(r["kept_up"] for r in per_replica) and announced == len(subjects),
            "subjects_announced": f"{announced}/{len(subjects)}",
            "load_cores": sorted(rest),
            "load_cpu_cores_used": round(
                (load_marks[1][1] - load_marks[0][1]) / (load_marks[1][0] - load_marks[0][0]), 2
            )
            if len(load_marks) == 2
            else None,
            "machine_load_1_5_15_min": [round(x, 2) for x in load_before],
            # sensors the replicas' cores would sustain at this cost: each replica's core / its CPU per
            # sensor-second, summed (each replica serves its own share of the subjects)
            "cpu_sustainable_sensors": round(sum(1e6 / u for u in us)) if all(us) else None,
            "per_replica": per_replica,
        }
    finally:
        stop.set()
        for p in publishers + detectors:
            p.join(30)
            if p.is_alive():
                p.kill()
        with contextlib.suppress(OSError):
            os.sched_setaffinity(os.getpid(), set(cores))
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(influxd.proc.pid, set(cores))  # type: ignore[union-attr]
        mosq.stop()


def ladder(influxd: Influxd1, replicas: int, counts: list[int], seconds: int, work: Path, pin: bool) -> list[dict]:
    runs = []
    for sensors in counts:
        print(f"{replicas} replica(s), {sensors} sensors for {seconds} s", flush=True)
        r = rung(influxd, replicas, sensors, seconds, work, pin)
        print(json.dumps(r), flush=True)
        runs.append(r)
        if not r["kept_up"]:
            break
    return runs


def summary(runs: dict[int, list[dict]]) -> dict[str, object]:
    """Direct figure (largest count kept up) and CPU-based figure per replica count, and the 2-replica figures
    over the 1-replica ones.

    The CPU per message falls as the load rises (the service scores in longer chunks when busy: docs/live.md),
    so the CPU-based ratio compares equal load *per replica*: 1 replica at S sensors against 2 at 2S, the
    largest S where both kept up (``cpu_compared_at``); without such a pair, the best of each (marked)."""
    out: dict[str, object] = {}
    best: dict[int, dict | None] = {}
    for n, rs in runs.items():
        kept = [r for r in rs if r["kept_up"]]
        best[n] = max(kept, key=lambda r: r["sensors"]) if kept else None
        out[f"sustained_direct_{n}"] = best[n]["sensors"] if best[n] else 0  # type: ignore[index]
        out[f"sustained_cpu_{n}"] = best[n]["cpu_sustainable_sensors"] if best[n] else None  # type: ignore[index]
        out[f"not_kept_up_first_{n}"] = next((r["sensors"] for r in rs if not r["kept_up"]), None)
    if 1 in runs and 2 in runs:
        d1, d2 = out["sustained_direct_1"], out["sustained_direct_2"]
        out["speedup_direct"] = round(d2 / d1, 2) if d1 else None  # type: ignore[operator]
        one = {r["sensors"]: r for r in runs[1] if r["kept_up"]}
        two = {r["sensors"]: r for r in runs[2] if r["kept_up"]}
        matched = [s for s in one if 2 * s in two]
        if matched:
            s1 = max(matched)
            c1, c2 = one[s1]["cpu_sustainable_sensors"], two[2 * s1]["cpu_sustainable_sensors"]
            out["cpu_compared_at"] = f"1 replica x {s1} sensors vs 2 replicas x {2 * s1}"
        else:
            c1, c2 = out["sustained_cpu_1"], out["sustained_cpu_2"]
            out["cpu_compared_at"] = "best of each (no 2S rung kept up for an S kept up: unequal loads per replica)"
        out["speedup_cpu"] = round(c2 / c1, 2) if c1 and c2 else None
    return out


def fixed_chunk_cpu(influxd: Influxd1, per_replica: int, seconds: int, work: Path, pin: bool) -> dict[str, object]:
    """The CPU-based figure with the chunk fixed at 0 (every batch scored on arrival): 1 replica x
    ``per_replica`` sensors, then 2 replicas x ``2 * per_replica``. The service's chunk policy lengthens the
    chunk when its process is starved of CPU (a backlog builds), and a longer chunk costs less per message, so on
    a machine other work loads the CPU per message of the default policy measures the contention as much as the
    detector. With the chunk fixed it measures the detector's work at equal load per replica, whether or not the
    starved process keeps up; 0 is its costliest mode (used below ~1000 sensors per core), so the sensors it
    extrapolates to are a lower bound."""
    out: dict[str, object] = {"per_replica_sensors": per_replica}
    for n in (1, 2):
        print(f"CPU, chunk fixed at 0: {n} replica(s) x {per_replica} sensors each for {seconds} s", flush=True)
        r = rung(influxd, n, n * per_replica, seconds, work, pin, max_chunk_s=0.0)
        print(json.dumps(r), flush=True)
        out[f"run_{n}"] = r
        out[f"cpu_sustainable_{n}"] = r["cpu_sustainable_sensors"]
    c1, c2 = out["cpu_sustainable_1"], out["cpu_sustainable_2"]
    out["speedup_cpu_fixed_chunk"] = round(c2 / c1, 2) if c1 and c2 else None  # type: ignore[operator]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2", help="replica counts of the ladders (at most the machine's cores)")
    parser.add_argument("--ladder-1", default="500,1000,1500,2000,2500,3000", help="sensor counts, 1 replica")
    parser.add_argument("--ladder-2", default="1000,2000,3000,4000,5000,6000", help="sensor counts, 2 replicas")
    parser.add_argument("--seconds", type=int, default=45, help="length of each live run")
    parser.add_argument(
        "--cpu-sensors", type=int, default=500, help="sensors per replica for the fixed-chunk CPU figure (0: skip it)"
    )
    parser.add_argument("--skip-ladders", action="store_true", help="only the fixed-chunk CPU figure")
    parser.add_argument("--no-pin", action="store_true", help="do not pin (for a machine without sched_setaffinity)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}", flush=True)
    runs: dict[int, list[dict]] = {}
    fixed: dict[str, object] = {}
    with (
        tempfile.TemporaryDirectory(prefix="plm-replica-speedup-") as tmp,
        Influxd1(workdir=Path(tmp) / "influxd") as influxd,
    ):
        if args.cpu_sensors:
            fixed = fixed_chunk_cpu(influxd, args.cpu_sensors, args.seconds, Path(tmp), not args.no_pin)
        if not args.skip_ladders:
            for n in (int(x) for x in args.replicas.split(",")):
                default = getattr(args, f"ladder_{n}", None) or ",".join(str(n * c) for c in (1000, 1500, 2000, 2500))
                counts = [int(c) for c in default.split(",")]
                runs[n] = ladder(influxd, n, counts, args.seconds, Path(tmp), not args.no_pin)
    result = summary(runs) if runs else {}
    if fixed:
        result.update({k: v for k, v in fixed.items() if not k.startswith("run_")})
    print(json.dumps(result), flush=True)
    print(f"machine load average at the end: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
