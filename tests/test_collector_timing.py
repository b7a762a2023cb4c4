"""Timestamp reconstruction, batching and the durable queue (pure parts of the collector)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from collector.batcher import Batcher
from collector.queue import DurableQueue
from collector.timing import NS, CounterTimeline, DeviceClockTimeline, OffsetTracker, TimedChunk

RATE = 52.0
PER_FRAME = 71
WALL0 = 1_700_000_000 * NS
DEVICE0 = 536_457_600 * NS  # a Verity clock that was never set (2017)


def _polar_night(hours: float, drift_ppm: float, seed: int, drop_every: int = 0):
    """Yield (device ns of last sample, true wall ns of last sample, arrival ns) per frame."""
    rng = np.random.default_rng(seed)
    n_frames = int(hours * 3600 * RATE / PER_FRAME)
    last = np.arange(n_frames) * PER_FRAME + PER_FRAME - 1
    device = DEVICE0 + np.round(last * NS / RATE).astype(np.int64)
    true = WALL0 + np.round(last * NS / RATE / (1 + drift_ppm * 1e-6)).astype(np.int64)
    # BLE latency: 8 ms floor, exponential jitter, occasional 300-800 ms retries
    latency = 8_000_000 + rng.exponential(25e6, n_frames).astype(np.int64)
    latency[rng.random(n_frames) < 0.02] += rng.integers(300, 800, 1)[0] * 1_000_000
    keep = np.ones(n_frames, bool)
    if drop_every:
        keep[drop_every::drop_every] = False
    return device[keep], true[keep], (true + latency)[keep]


@pytest.mark.parametrize("drift_ppm", [50.0, -50.0, 0.0])
def test_drift_over_ten_hours_stays_within_50_ms(drift_ppm: float) -> None:
    timeline = DeviceClockTimeline(RATE)
    worst = 0
    device, true, arrival = _polar_night(10, drift_ppm, seed=int(drift_ppm) + 100)
    xyz = np.zeros((PER_FRAME, 3))
    for i, (d, t, a) in enumerate(zip(device.tolist(), true.tolist(), arrival.tolist(), strict=True)):
        chunk = timeline.frame(d, xyz, a)
        if i > 50:  # after the first ~minute the offset has seen a low-latency frame
            worst = max(worst, abs(int(chunk.t_ns[-1]) - t))
    assert worst < 50_000_000, f"worst timestamp error {worst / 1e6:.1f} ms"
    assert timeline.gaps == 0
    assert timeline.tracker.drift_ppm == pytest.approx(-drift_ppm, abs=3.0)


def test_latency_is_removed_not_averaged() -> None:
    timeline = DeviceClockTimeline(RATE)
    device, true, arrival = _polar_night(0.5, 0.0, seed=3)
    errors = []
    xyz = np.zeros((PER_FRAME, 3))
    for d, t, a in zip(device.tolist(), true.tolist(), arrival.tolist(), strict=True):
        errors.append(int(timeline.frame(d, xyz, a).t_ns[-1]) - t)
    # mean latency is ~40 ms and spikes reach 800 ms; the mapped time sits near the 8 ms floor
    assert np.median(errors[100:]) < 15_000_000
    assert max(np.abs(errors[100:])) < 20_000_000


def test_lost_frames_become_gaps_not_stretched_samples() -> None:
    timeline = DeviceClockTimeline(RATE)
    device, _true, arrival = _polar_night(0.2, 20.0, seed=4, drop_every=10)
    xyz = np.zeros((PER_FRAME, 3))
    chunks = [timeline.frame(d, xyz, a) for d, a in zip(device.tolist(), arrival.tolist(), strict=True)]
    gaps = [c for c in chunks[1:] if c.gap]
    assert len(gaps) == timeline.gaps == len(chunks) // 9
    assert all(c.lost_before == PER_FRAME for c in gaps)
    # inside a chunk samples stay 1/rate apart, also right after a gap
    steps = np.diff(gaps[0].t_ns)
    assert np.all(np.abs(steps - NS / RATE) < 1000)


def test_device_clock_jump_resets_mapping() -> None:
    tracker = OffsetTracker()
    for i in range(100):
        tracker.observe(i * NS, WALL0 + i * NS + 10_000_000)
    tracker.observe(100 * NS - 3600 * NS, WALL0 + 100 * NS + 10_000_000)  # device rebooted
    assert tracker.resets == 1
    assert tracker.to_wall(100 * NS - 3600 * NS) == WALL0 + 100 * NS + 10_000_000


def test_witmotion_counter_anchor_and_loss() -> None:
    rate = 50.0
    timeline = CounterTimeline(rate)
    rng = np.random.default_rng(5)
    xyz = np.zeros((2, 3))
    out = []
    for j in range(3000):  # 2 min, 2 packets a notification
        if 1000 <= j < 1010:  # 20 packets lost in the air
            continue
        last_true = WALL0 + round((2 * j + 1) * NS / rate)
        out.append((timeline.packets(xyz, last_true + 10_000_000 + int(rng.exponential(20e6))), last_true))
    # without a device counter the count is estimated from arrival times: +-1 packet of jitter
    assert timeline.gaps == 1 and abs(timeline.lost_samples - 20) <= 1
    errors = [int(c.t_ns[-1]) - t for c, t in out[50:]]
    assert max(np.abs(errors)) < 30_000_000
    gap_chunk = next(c for c, _ in out[1:] if c.gap)
    assert gap_chunk.lost_before == timeline.lost_samples


def test_batcher_makes_one_second_batches_and_breaks_at_gaps() -> None:
    b = Batcher(RATE)
    t = WALL0 + np.round(np.arange(200) * NS / RATE).astype(np.int64)
    xyz = np.tile([0.1, 0.2, 1.0], (200, 1))
    out = b.add(TimedChunk(t[:120], xyz[:120], gap=True))
    assert [x.count for x in out] == [52, 52]
    assert out[1].start_ns == t[52] and out[1].seq == 1
    out = b.add(TimedChunk(t[150:], xyz[150:], lost_before=30, gap=True))
    assert [x.count for x in out] == [16]  # the open batch closes at the gap, short
    assert out[0].start_ns == t[104] and out[0].count == 16
    rest = b.flush()
    assert rest[0].start_ns == t[150] and rest[0].count == 50 and rest[0].seq == 3


def test_queue_is_durable_ordered_and_bounded(tmp_path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite", max_items=5)
    q.put_many([("t", bytes([i])) for i in range(3)])
    rows = q.peek(10)
    assert [r[2] for r in rows] == [b"\x00", b"\x01", b"\x02"]
    q.delete([rows[0][0]])
    q.close()
    q = DurableQueue(tmp_path / "q.sqlite", max_items=5)  # reopened: what was not acked is still there
    assert len(q) == 2
    assert q.put_many([("t", bytes([i])) for i in range(3, 8)]) == 2
    assert len(q) == 5 and q.dropped == 2
    assert [r[2][0] for r in q.peek(10)] == [3, 4, 5, 6, 7]
    q.close()
    assert DurableQueue(tmp_path / "q.sqlite", max_items=5).dropped == 2


def test_batches_never_step_back_and_a_small_step_is_absorbed() -> None:
    """The clock mapping moved 40 ms back between two chunks: no batch may start before the previous
    batch's last sample (a detector would refuse it), and the shift decays back to the mapped times."""
    b = Batcher(RATE)
    period = NS / RATE
    t = WALL0 + np.round(np.arange(52 * 12) * period).astype(np.int64)
    t[52 * 2 :] -= 40_000_000  # the mapping stepped back at the third batch
    xyz = np.tile([0.1, 0.2, 1.0], (len(t), 1))
    out = b.add(TimedChunk(t, xyz, gap=True))
    last = [x.start_ns + round((x.count - 1) * period) for x in out]
    assert all(nxt.start_ns > prev for prev, nxt in zip(last, out[1:], strict=False))
    shifts = [x.start_ns - int(t[52 * i]) for i, x in enumerate(out)]
    assert shifts[:2] == [0, 0] and shifts[2] > 0  # moved later, not dropped
    assert all(a >= b for a, b in itertools.pairwise(shifts[2:]))  # the shift only shrinks ...
    assert shifts[-1] == 0 and b.backsteps == 4  # ... at half a period a batch, and is gone
    assert sum(x.count for x in out) == len(t)


def test_a_large_step_back_is_passed_on_as_it_is() -> None:
    """The host clock was set back 5 s: a real discontinuity, not jitter to smooth over."""
    b = Batcher(RATE)
    t = WALL0 + np.round(np.arange(104) * NS / RATE).astype(np.int64)
    t[52:] -= 5 * NS
    out = b.add(TimedChunk(t, np.zeros((104, 3)), gap=True))
    assert [x.start_ns for x in out] == [t[0], t[52]] and b.backsteps == 0
