"""The live detector's sans-IO core (detector/live/core.py): messages in, effects out, no broker or database.

The first test replays a recorded stream and compares the effects with the recording
(tests/data/core_effects.json): byte for byte. First recorded from the service before the core was split out
of it (commit 58fc4ac), so the split changed no number, no point and no MQTT result; any later change of a
number must re-record it on purpose (tests/core_scenario.py)."""

from __future__ import annotations

import json
from pathlib import Path

from detector.live.core import DetectorCore, Publish
from detector.scoring.scorer import score_arrays
from plm import wire
from plm.config import Settings
from plm.mqtt import Received
from tests.core_scenario import digest, scenario
from tests.live_helpers import batches_as_arrays, interleave, night_batches

RECORDED = Path(__file__).parent / "data" / "core_effects.json"


def _run(core: DetectorCore) -> tuple[list[str], list[tuple[str, bytes, bool]]]:
    steps, end_wall = scenario()
    points: list[str] = []
    publishes: list[Publish] = []
    for step in steps:
        effects = core.handle(step.messages, step.wall_s)
        points += effects.points
        publishes += effects.publishes
        assert not effects.dead_letters, effects.dead_letters
    effects = core.tick(end_wall)
    return points + effects.points, [(p.topic, p.payload, p.retain) for p in publishes + effects.publishes]


def test_the_core_gives_the_recorded_effects_byte_for_byte() -> None:
    points, publishes = _run(DetectorCore(Settings()))
    assert digest(points, publishes) == json.loads(RECORDED.read_text())


def test_a_night_through_the_core_equals_offline_scoring() -> None:
    from simulator import simulate_night

    batches = night_batches(simulate_night("rls-severe", seed=21, duration_h=0.5, jitter_ms=0, gap=False))
    offline = score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"]))
    core = DetectorCore(Settings(), publish_results=True)
    messages = [(wire.acc_topic("eq", f"{side}-ankle"), wire.encode_binary(b)) for side, b in interleave(batches)]
    effects = [core.handle(messages[i : i + 37], 1_700_000_000.0) for i in range(0, len(messages), 37)]
    effects.append(core.end_all_nights())
    points = [p for e in effects for p in e.points]
    published = [p for e in effects for p in e.publishes]
    stored = {(line.split(" ")[-1], "kind=" + line.split("kind=")[1].split(",")[0].split(" ")[0]) for line in points
              if line.startswith("movement,")}  # fmt: skip
    expected = {(str(round(e.onset * 1000)), f"kind={e.kind}") for e in offline.events}
    assert stored == expected
    night = [json.loads(p.payload) for p in published if p.topic == wire.night_topic("eq")][-1]
    assert night["plm_count"] == offline.fields["plm_count"] and night["final"] is True
    assert {p.topic for p in published if p.topic.startswith("homeassistant/")} == {
        f"homeassistant/sensor/plm_eq/{key}/config" for key in ("plm_index", "plm_count", "lm_count")
    }
    assert all(p.retain for p in published if not p.topic.endswith("/_movement"))


def test_status_and_diary_become_points() -> None:
    core = DetectorCore(Settings())
    status = wire.encode_status(wire.SensorStatus("online", side="left", battery_pct=80, time_ns=1_700_000_000 * 10**9))
    effects = core.handle([(wire.status_topic("s1", "left-ankle"), status), (wire.diary_topic("s1"), b"coffee")], 1.7e9)
    assert any(p.startswith("sensor_status,side=left,subject=s1 ") and "battery_pct=80.0" in p for p in effects.points)
    assert any(p.startswith("diary,subject=s1 ") and "diary_caffeine=true" in p for p in effects.points)
    assert not effects.publishes and not effects.dead_letters


def test_what_is_journaled_excludes_other_shards_and_retained_input() -> None:
    core = DetectorCore(Settings(), shard=(0, 2))
    mine = next(s for s in (f"s{i}" for i in range(20)) if core.route(wire.acc_topic(s, "left")).owned)
    theirs = next(s for s in (f"s{i}" for i in range(20)) if not core.route(wire.acc_topic(s, "left")).owned)
    received = [
        Received(wire.acc_topic(mine, "left"), b"a", 1, 1, False),
        Received(wire.acc_topic(theirs, "left"), b"b", 2, 1, False),
        Received(wire.acc_topic(mine, "left"), b"c", 3, 1, True),  # retained batch: scored live already
        Received(wire.diary_topic(mine), b"d", 4, 1, True),
        Received(wire.status_topic(mine, "left"), b"e", 5, 1, True),  # status is retained by design
    ]
    assert core.filter_received(received) == [
        (wire.acc_topic(mine, "left"), b"a"),
        (wire.status_topic(mine, "left"), b"e"),
    ]
    assert core.stats.ignored_other_shard == 1 and core.stats.bad["retained"] == 2


def test_a_snapshot_restores_into_a_new_core() -> None:
    """The core's state is its checkpoint: a new core restored from a snapshot goes on exactly as the old one."""
    import pickle

    steps, end_wall = scenario()
    half = len(steps) // 2
    whole = DetectorCore(Settings())
    first = DetectorCore(Settings())
    for step in steps[:half]:
        whole.handle(step.messages, step.wall_s)
        first.handle(step.messages, step.wall_s)
    second = DetectorCore(Settings())
    second.restore(pickle.loads(pickle.dumps(first.snapshot())), steps[half].wall_s)
    tail_whole, tail_second = [], []
    for step in steps[half:]:
        tail_whole += whole.handle(step.messages, step.wall_s).points
        tail_second += second.handle(step.messages, step.wall_s).points
    tail_whole += whole.tick(end_wall).points
    tail_second += second.tick(end_wall).points
    # beta's silent leg is the exception by design: a restored core starts each leg's silence anew (its own
    # downtime is not the leg's), so that leg is declared lost 30 s later and its missing share differs
    alpha = [p for p in tail_whole if "subject=alpha" in p]
    assert alpha and sorted(p for p in tail_second if "subject=alpha" in p) == sorted(alpha)
    assert len(tail_second) == len(tail_whole)


def test_a_cleared_retained_status_is_not_a_bad_payload() -> None:
    """Clearing a retained status (an empty retained message, e.g. a sensor retired) reaches every subscriber
    as an empty payload: nothing to apply, nothing wrong."""
    core = DetectorCore(Settings())
    effects = core.handle([(wire.status_topic("s1", "left-ankle"), b"")], 1.7e9)
    assert not effects and sum(core.stats.bad.values()) == 0 and core.stats.received == 1
    core.handle([(wire.status_topic("s1", "left-ankle"), b"{")], 1.7e9)
    assert core.stats.bad["payload"] == 1  # a non-empty broken one still is
