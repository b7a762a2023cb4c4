"""A recorded stream for the live detector's effects: two subjects' nights as the broker delivers them (groups,
wall times), with status messages, diary notes, bad input, a leg that goes silent and the nights' ends.

Used by tests/test_detector_core.py to show that the sans-IO core produces exactly (byte for byte) the points
and MQTT results the service produced before it was split out (tests/data/core_effects.json, first recorded
from the service as it was at commit 58fc4ac; re-recorded by ``python -m tests.core_scenario`` only for a
change meant to change numbers, named in its commit -- so far: time in bed capped at the recording's span).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from plm import wire
from simulator import batches as simulator_batches
from simulator import simulate_night

START_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z
GROUP = 40  # messages per group, as the service reads them
FAR_FUTURE_NS = 2**62


@dataclass(frozen=True)
class Step:
    wall_s: float
    messages: list[tuple[str, bytes]]


def _acc(subject: str, side: str, batch: wire.SampleBatch) -> tuple[str, bytes]:
    return wire.acc_topic(subject, f"{side}-ankle"), wire.encode_binary(batch)


def scenario() -> tuple[list[Step], float]:
    """The steps, and the wall time at which every night has been idle long enough to end."""
    alpha = simulator_batches.night_batches(
        simulate_night("rls-severe", seed=11, start_unix_s=START_S, duration_h=0.5, jitter_ms=0, gap=False),
        1.0,
        now_ns=FAR_FUTURE_NS,
    )
    beta = simulator_batches.night_batches(
        simulate_night("rls-moderate", seed=12, start_unix_s=START_S + 7.3, duration_h=0.3, jitter_ms=0, gap=False),
        1.0,
        now_ns=FAR_FUTURE_NS,
    )
    timed: list[tuple[float, tuple[str, bytes]]] = []
    for side, batches in alpha.items():
        timed += [(b.end_ns / 1e9, _acc("alpha", side, b)) for b in batches]
        status = wire.SensorStatus("online", side=side, battery_pct=87, rssi_dbm=-61, rate_hz=52.0, frames_dropped=0,
                                   time_ns=int(START_S * 1e9) + 5 * 10**9)  # fmt: skip
        timed.append((START_S + 5.0, (wire.status_topic("alpha", f"{side}-ankle"), wire.encode_status(status))))
    timed += [(b.end_ns / 1e9, _acc("beta", "left", b)) for b in beta["left"]]
    timed += [(b.end_ns / 1e9, _acc("beta", "right", b)) for b in beta["right"][:100]]  # then silent: a lost leg
    timed.append((START_S + 600.0, (wire.diary_topic("alpha"), b'{"text":"coffee after dinner","tags":["late meal"]}')))
    timed.append((START_S + 900.0, (wire.diary_topic("beta"), b"slept badly")))
    timed.append((START_S + 300.0, (wire.acc_topic("alpha", "left-ankle"), b"\x50\x02garbage")))
    timed.append((START_S + 301.0, ("plm/v1/bad subject/x/acc", b"x")))
    timed.append(
        (START_S + 1000.0, (wire.status_topic("alpha", "left-ankle"), b'{"state":"online","battery_pct":"x"}'))
    )
    timed.sort(key=lambda item: item[0])
    steps = []
    for i in range(0, len(timed), GROUP):
        chunk = timed[i : i + GROUP]
        steps.append(Step(chunk[-1][0] + 0.5, [message for _, message in chunk]))
    last = steps[-1].wall_s
    goodbye = wire.encode_status(wire.SensorStatus("offline", side="left"))
    steps.append(Step(last + 10.0, [(wire.status_topic("alpha", "left-ankle"), goodbye)]))
    return steps, last + 4000.0


def digest(points: list[str], publishes: list[tuple[str, bytes, bool]]) -> dict[str, object]:
    """Order-free fingerprint of the effects (a group's subjects are visited in set order)."""
    lines = sorted(points)
    sent = sorted(
        f"{topic} {'retained' if retain else 'once'} {payload.decode()}" for topic, payload, retain in publishes
    )
    return {
        "points": len(lines),
        "points_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        "publishes": len(sent),
        "publishes_sha256": hashlib.sha256("\n".join(sent).encode()).hexdigest(),
        "movement_points": sum(line.startswith("movement,") for line in lines),
        "night_points": sum(line.startswith("night,") for line in lines),
    }


def dump(result: dict[str, object]) -> str:
    return json.dumps(result, indent=1, sort_keys=True) + "\n"


def record() -> dict[str, object]:
    """The effects of today's core on the scenario (``python -m tests.core_scenario`` rewrites the recording:
    only for a change that is meant to change numbers, named in its commit)."""
    from detector.live.core import DetectorCore
    from plm.config import Settings

    core = DetectorCore(Settings())
    steps, end_wall = scenario()
    points: list[str] = []
    publishes: list[tuple[str, bytes, bool]] = []
    for step in [*steps, None]:
        effects = core.tick(end_wall) if step is None else core.handle(step.messages, step.wall_s)
        points += effects.points
        publishes += [(p.topic, p.payload, p.retain) for p in effects.publishes]
    return digest(points, publishes)


if __name__ == "__main__":
    from pathlib import Path

    (Path(__file__).parent / "data" / "core_effects.json").write_text(dump(record()))
