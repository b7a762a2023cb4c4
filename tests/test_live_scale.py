"""Short versions of the live detector's load checks (bench/live_throughput.py has the long ones):
an accelerated multi-sensor stream through a real mosquitto, memory per subject over a stretch,
per-minute activity points, and Home Assistant discovery configs."""

from __future__ import annotations

import gc
import json
import math
import threading
import time
import tracemalloc

import numpy as np
import pytest

from detector.live import chunk_policy as policy_rules
from detector.live.chunk_policy import ChunkPolicy
from detector.live.core import DetectorCore
from detector.live.service import LiveDetector
from plm import wire
from plm.config import Settings
from plm.mqtt import connect, make_client
from simulator import simulate_night
from simulator.stream import NightStreamer, StreamConfig
from tests.live_helpers import interleave, night_batches, settings_for, wait_for


class CountingDetector(LiveDetector):
    """The real service, counting the sample batches that reach the reorder buffers."""

    def __init__(self, *args, **kwargs) -> None:
        self.batches_seen = 0
        super().__init__(*args, **kwargs)
        accept = self.core._accept_batch

        def counting(parsed, batch, wall, side=None):
            self.batches_seen += 1
            return accept(parsed, batch, wall, side)

        self.core._accept_batch = counting


def _core(**settings) -> DetectorCore:
    return DetectorCore(Settings(detector=settings), publish_results=False)


def _feed(core: DetectorCore, messages, group: int, wall_s: float = 1_700_000_000.0) -> list[str]:
    """The messages in groups, as the service applies them; the points the core asks to write."""
    points: list[str] = []
    for i in range(0, len(messages), group):
        points += core.handle(messages[i : i + group], wall_s).points
    return points


@pytest.mark.services
def test_accelerated_stream_of_50_sensors_is_received_whole_and_kept_up_with(mosquitto, influxd, tmp_path):
    detector = CountingDetector(settings_for(mosquitto, influxd, tmp_path, instance="scale50"), publish_results=False)
    detector.start()
    config = StreamConfig(subjects=25, speed=20.0, duration_h=0.25, prefix="scale", seed=3, max_clients=8)
    streamer = NightStreamer(detector.settings.mqtt, config).start()
    backlog: list[int] = []
    try:
        assert streamer.wait_ready(30)
        deadline = time.monotonic() + 12.0  # 240 s of data per sensor at 20x
        while time.monotonic() < deadline:
            backlog.append(detector.backlog())
            time.sleep(0.2)
        stats = streamer.stop()
        ended = time.monotonic()
        assert stats is not None and stats.batches >= 50 * 100  # the publisher may lag on a busy machine
        assert wait_for(lambda: detector.batches_seen >= stats.batches, 10), (detector.batches_seen, stats.batches)
        caught_up_s = time.monotonic() - ended
    finally:
        streamer.stop()
        detector.stop()
    assert detector.batches_seen == stats.batches  # every batch, none twice
    assert not {k: v for k, v in detector.stats.bad.items() if k != "late"}
    assert detector.stats.bad.get("late", 0) == 0
    assert caught_up_s < 5.0, f"the detector needed {caught_up_s:.1f} s to catch up after the stream ended"
    # read but not yet journaled: never more than a group (the rest waits at the broker, unacknowledged)
    assert max(backlog) < 50 * 20 * 5, max(backlog)
    assert len(detector.subjects) == 25


def test_memory_per_subject_stays_flat_over_a_stretch(tmp_path):
    """tracemalloc per subject after 1/2 and after all of a 15-min stretch: far below 1 MB, little growth."""
    night = simulate_night("rls-severe", seed=11, duration_h=0.25, jitter_ms=0, gap=False)
    legs = {side: leg.xyz for side, leg in night.legs.items()}
    subjects, seconds, per = 4, 900, 52
    core = _core()
    topics = [(wire.acc_topic(f"mem{k}", f"{side}-ankle"), side) for k in range(subjects) for side in legs]
    t0 = 1_700_000_000.0
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    marks = {}
    group = []
    try:
        for s in range(seconds):
            for topic, side in topics:
                a = (s * per) % (len(legs[side]) - per)
                batch = wire.make_batch(round((t0 + s) * 1e9), 52.0, legs[side][a : a + per], s, now_ns=2**62)
                group.append((topic, wire.encode_binary(batch)))
            if (s + 1) % 20 == 0:
                core.handle(group, t0 + s)
                group = []
            if s + 1 in (seconds // 2, seconds):
                gc.collect()
                marks[s + 1] = (tracemalloc.get_traced_memory()[0] - base) / subjects
    finally:
        tracemalloc.stop()
    half, end = marks[seconds // 2], marks[seconds]
    assert end < 1_000_000, f"{end / 1e3:.0f} kB per subject"
    # what grows is the per-epoch table the in-bed estimate needs (a few hundred bytes per 30 s per leg)
    assert end - half < 0.25 * half + 50_000, f"grew from {half / 1e3:.0f} to {end / 1e3:.0f} kB per subject"


def test_activity_minutes_are_written_for_each_leg_with_the_scorers_numbers(tmp_path):
    night = simulate_night("rls-severe", seed=4242, duration_h=0.25, jitter_ms=0, gap=False)
    batches = night_batches(night)
    core = _core()
    messages = [(wire.acc_topic("act", f"{side}-ankle"), wire.encode_binary(b)) for side, b in interleave(batches)]
    written = _feed(core, messages, 120)
    live = [line for line in written if line.startswith("activity,") and "activity_g=" in line]
    assert live, "no activity minute while the night is going on"
    written += core.end_all_nights().points
    points = {}
    for line in written:
        if not line.startswith("activity,"):
            continue
        head, body, stamp = line.split(" ")
        side = "left" if "side=left" in head else "right"
        fields = dict(kv.split("=", 1) for kv in body.split(","))
        points.setdefault((side, int(stamp)), {}).update(fields)
    start = min(b.start_ns for bs in batches.values() for b in bs) / 1e9
    end = max(b.end_ns for bs in batches.values() for b in bs) / 1e9
    minutes = range(math.floor(start / 60), math.floor(end / 60) + 1)
    for side in ("left", "right"):
        stamps = sorted(t for s, t in points if s == side)
        assert stamps == [m * 60_000 for m in minutes], "one point per minute of the night, none missing"
    # movement counts add up to the scored movements (a bilateral one counts on both legs)
    events = [e for e in _scored_events(batches) if e.kind != "twitch"]
    expected = sum(2 if e.side == "bilateral" else 1 for e in events)
    assert sum(int(p["movement_count"].rstrip("i")) for p in points.values() if "movement_count" in p) == expected
    active = [float(p["activity_g"]) for p in points.values() if "activity_g" in p]
    quiet = min(active)
    assert 0 <= quiet < 0.02 < max(active), "activity spans quiet sleep and movement (g)"
    assert {p.get("posture") for p in points.values()} <= {'"lying"', '"upright"', None}
    assert all(p.get("in_bed") in ("true", "false") for p in points.values() if "activity_g" in p)
    for p in points.values():
        if "missing_fraction" in p:
            assert 0.0 <= float(p["missing_fraction"]) <= 1.0


def _scored_events(batches):
    from detector.scoring.scorer import score_arrays
    from tests.live_helpers import batches_as_arrays

    return score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"])).events


def test_chunk_size_adapts_to_the_backlog_without_changing_results():
    """Held batches (large chunks under load) give the same movements as scoring every batch at once."""
    night = simulate_night("rls-severe", seed=7, duration_h=0.25, jitter_ms=0, gap=False)
    messages = [
        (wire.acc_topic("chunk", f"{side}-ankle"), wire.encode_binary(b))
        for side, b in interleave(night_batches(night))
    ]
    results = []
    for chunk_s in (0.0, 8.0):
        core = _core()
        core.chunk_s = chunk_s
        written = _feed(core, messages, 50) + core.end_all_nights().points
        results.append(sorted(line for line in written if line.startswith("movement,")))
    assert results[0] and results[0] == results[1]


class Clock:
    """The two clocks the chunk policy is given: monotonic seconds and the worker thread's CPU seconds."""

    def __init__(self) -> None:
        self.now, self.cpu = 1000.0, 50.0

    def window(self, policy: ChunkPolicy, share: float) -> None:
        """A full CPU-share window passes in which the worker used ``share`` of a core, the socket running dry
        (no backlog: only the CPU share speaks)."""
        span = policy_rules.BUSY_WINDOW_S + 0.5
        self.now += span
        self.cpu += share * span
        policy.socket_dry(self.now)

    def adapt(self, policy: ChunkPolicy) -> float:
        policy.adapt(self.now, self.cpu)
        return policy.chunk_s


def _policy(clock: Clock) -> ChunkPolicy:
    policy = ChunkPolicy(clock.now, max_chunk_s=16.0)
    policy.measure(clock.now, clock.cpu)  # the first window starts here
    return policy


def test_chunk_follows_the_worker_cpu_share_one_step_per_window():
    """A load in step (every sensor each second) lets the socket run dry between bursts, so the backlog rule
    never fires; the CPU share does: it lengthens the chunk one step per window while the worker is busy,
    keeps it in the band, and shortens it when the half chunk was measured cheap enough or the share is low."""
    clock = Clock()
    policy = _policy(clock)
    steps = []
    for _ in range(6):
        clock.window(policy, 0.9)
        clock.adapt(policy)
        steps.append(clock.adapt(policy))  # a second group in the same window: no second step
    assert steps == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    # in the band, the half measured too dear a moment ago (0.9 on the way up): stays (it would otherwise flap)
    clock.window(policy, 0.6)
    assert clock.adapt(policy) == 16.0
    # ... measured long ago: tried again (the cost curve is flat at long chunks)
    clock.now += 2 * policy_rules.BUSY_MEMORY_S
    clock.window(policy, 0.6)
    assert clock.adapt(policy) == 8.0
    # the half measured cheap enough: back to it
    policy.measured[4.0] = (0.5, clock.now)
    clock.window(policy, 0.6)
    assert clock.adapt(policy) == 4.0
    # in the band above the probing limit: stays
    clock.window(policy, (policy_rules.BUSY_SHORTER_BELOW + policy_rules.BUSY_HIGH) / 2)
    assert clock.adapt(policy) == 4.0
    # too dear: doubles back
    clock.window(policy, policy_rules.BUSY_HIGH + 0.05)
    assert clock.adapt(policy) == 8.0
    # a light load: halves once per window down to 0 (each batch scored on arrival)
    lengths = []
    for _ in range(5):
        clock.window(policy, 0.1)
        lengths.append(clock.adapt(policy))
    assert lengths == [4.0, 2.0, 1.0, 0.0, 0.0]
    # a backlog (the socket read full chunks for a second) doubles at once, whatever the share
    clock.now += 0.1
    policy.last_dry = policy.last_doubled = clock.now - 1.5 * policy_rules.BEHIND_AFTER_S
    assert clock.adapt(policy) == 1.0
    assert clock.adapt(policy) == 1.0  # ... at most every DOUBLE_EVERY_S
    clock.now += policy_rules.DOUBLE_EVERY_S
    assert clock.adapt(policy) == 2.0
    # a backlog that has lasted twice as long: fourfold (a restart's backlog reaches long chunks in a few groups)
    clock.now += policy_rules.DOUBLE_EVERY_S
    policy.last_dry = clock.now - 3 * policy_rules.BEHIND_AFTER_S
    assert clock.adapt(policy) == 8.0


def test_held_batches_wait_through_gaps_between_bursts_but_not_through_a_real_lull():
    night = simulate_night("rls-severe", seed=7, duration_h=0.25, jitter_ms=0, gap=False)
    messages = [
        (wire.acc_topic("lull", f"{side}-ankle"), wire.encode_binary(b)) for side, b in interleave(night_batches(night))
    ]
    core = _core()
    core.chunk_s = 16.0
    core.handle(messages[:40], 1_700_000_000.0)  # 20 s of each leg: some of it held for the 16-s chunk
    assert core.holding
    held = sum(len(v) for v in core.subjects["lull"].held.values())
    assert held > 0
    clock = Clock()
    policy = _policy(clock)
    clock.window(policy, 0.8)
    assert not policy.lull(clock.now, clock.cpu)  # busy: a quiet moment is only the gap before the next burst
    clock.window(policy, 0.0)
    assert policy.lull(clock.now, clock.cpu)  # the busy window is over and this one was quiet: a real lull
    core.flush_holds()
    assert sum(len(v) for v in core.subjects["lull"].held.values()) == 0
    assert not core.holding


def test_a_checkpoint_does_not_count_as_scoring_load():
    """A checkpoint pickles every subject at once, whatever the chunk: the window's share is judged on the
    rest of its time, so a checkpoint in an otherwise moderate window does not lengthen the chunk."""
    clock = Clock()
    policy = _policy(clock)
    clock.window(policy, 0.8)  # 2.5 s at 0.8 of a core: 2.0 s of CPU ...
    policy.paused(1.2, 1.2, clock.now - 1.3)  # ... 1.2 s of it a checkpoint: 0.8 s in the other 1.3 s (0.62)
    assert clock.adapt(policy) == 0.0 and 0.55 < policy.busy_share < 0.68
    clock.window(policy, 0.8)  # the same window without a checkpoint is busy
    assert clock.adapt(policy) == 1.0


@pytest.mark.services
def test_home_assistant_discovery_configs_are_retained_and_render(mosquitto, influxd, tmp_path):
    jinja2 = pytest.importorskip("jinja2")
    night = simulate_night("rls-severe", seed=5, duration_h=0.25, jitter_ms=0, gap=False)
    batches = night_batches(night)
    subject = "hadisc"
    detector = LiveDetector(settings_for(mosquitto, influxd, tmp_path, instance="hadisc"), publish_results=True)
    detector.start()
    publisher = make_client(detector.settings.mqtt, "ha-test-publisher")
    connect(publisher, detector.settings.mqtt)
    try:
        infos = [
            publisher.publish(wire.acc_topic(subject, f"{side}-ankle"), wire.encode_binary(b), qos=1)
            for side, b in interleave(batches)[:400]
        ]
        for info in infos:
            info.wait_for_publish(30)
        assert wait_for(lambda: subject in detector.core._discovery_sent, 20)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        detector.stop()
    # a new client, after the detector is gone: the configs and the night state are retained
    got: dict[str, bytes] = {}
    done = threading.Event()
    reader = make_client(detector.settings.mqtt, "ha-test-reader")

    def on_message(_c, _u, message):
        got[message.topic] = message.payload
        if len(got) >= 4:
            done.set()

    reader.on_message = on_message
    connect(reader, detector.settings.mqtt)
    reader.subscribe([(f"homeassistant/sensor/plm_{subject}/+/config", 1), (wire.night_topic(subject), 1)])
    try:
        assert done.wait(10), sorted(got)
    finally:
        reader.disconnect()
        reader.loop_stop()
    state = json.loads(got.pop(wire.night_topic(subject)))
    env = jinja2.Environment()
    assert {t.split("/")[3] for t in got} == {"plm_index", "plm_count", "lm_count"}
    for topic, payload in got.items():
        key = topic.split("/")[3]
        config = json.loads(payload)
        assert config["state_topic"] == wire.night_topic(subject)
        assert config["unique_id"] == f"plm_{subject}_{key}"
        assert config["device"]["identifiers"] == [f"plm_{subject}"]
        rendered = env.from_string(config["value_template"]).render(value_json=state)
        value = state.get(key)
        if value is None:
            assert rendered in ("", "None")
        else:
            assert float(rendered) == pytest.approx(round(float(value), 1)), (key, rendered, value)
    assert isinstance(state["lm_count"], int) and state["lm_count"] >= 0
    assert np.isfinite(state["night_start"])


def test_night_ends_at_the_configured_local_time():
    from detector.live.night import next_local_time, parse_local_time

    core = _core(night_end_local="07:30")
    night = simulate_night("rls-severe", seed=2, duration_h=0.25, jitter_ms=0, gap=False)
    messages = [
        (wire.acc_topic("clock", f"{side}-ankle"), wire.encode_binary(b))
        for side, b in interleave(night_batches(night))
    ]
    first_wall = next_local_time(1_700_000_000.0, 5, 0)  # data starts arriving at 05:00 local
    core.handle(messages[:200], first_wall)
    core.subjects["clock"].last_wall = first_wall + 3600  # data keeps flowing (idle rule not met)
    core.tick(first_wall + 3600 + 60)  # 06:01: still the night
    assert core.subjects["clock"].night_start_s is not None
    core.subjects["clock"].last_wall = first_wall + 2.5 * 3600
    assert any(p.startswith("night,") for p in core.tick(first_wall + 2.5 * 3600 + 1).points)  # 07:30:01
    assert core.stats.nights_finished == 1
    assert core.subjects["clock"].night_start_s is None
    assert parse_local_time("7:05") == (7, 5)
    with pytest.raises(ValueError, match="night_end_local"):
        parse_local_time("25:00")
    with pytest.raises(ValueError, match="HH:MM"):
        parse_local_time("seven")
