"""A recorded night through the live detector's core: the wire batches a collector would have sent.

``plm import`` does not score a file its own way: each night's samples become the messages a collector
streaming that night would have published (a sensor status ``online``, sample batches made with
``plm.wire.make_batch`` and ``encode_binary``, and ``offline`` at the end, which ends the night as a clean
goodbye does), and :class:`detector.live.core.DetectorCore` -- the core ``plm detect`` runs -- turns them
into InfluxDB points. So an imported night has the live path's points (movements, per-minute activity and
posture, night summary, hourly and series points, sensor status), and the dashboards, ``plm report`` and the
trends read it like a streamed one. Every point is keyed by subject, series and time: importing the same
file again writes the same points over themselves.

Batches: a collector sends samples at a nominal rate from a start time and starts a new batch at every
hole. Here the samples are put on runs of the nominal grid (a new run where a sample is more than half a
step off: a hole, or a clock that drifted) and cut into batches of :data:`BATCH_S`; the sample times do not
depend on the batch length, nor does the core's result (it scores any chunking alike), so batches longer
than the collector's one second only save time (an 8-h two-leg night: ~3.7 s instead of ~11 s).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plm import wire

BATCH_S = 10.0  # seconds of samples per batch (a collector sends 1 s; results are the same, see above)
GROUP_S = 1800.0  # data seconds handed to the core per call (its "wall time" is the group's end); fewer calls,
# fewer provisional summaries: an 8-h night ~2 s instead of ~3.7 s with 5-min groups, the same final points
MAX_DEVIATION = 0.5  # a sample further than this many steps from its batch's grid starts a new batch


@dataclass
class Leg:
    side: str
    sensor_id: str
    rate_hz: float
    t: np.ndarray
    xyz: np.ndarray
    model: str  # what made the file, for the sensor status ("Polar Sensor Logger file", ...)


@dataclass
class NightResult:
    start: float
    end: float
    sides: tuple[str, ...]
    summary: dict[str, Any] = field(default_factory=dict)  # the live ``_night`` result of the finished night
    points: int = 0
    bad: dict[str, int] = field(default_factory=dict)  # what the core refused (bad_<reason> counts)


def batches(t: np.ndarray, xyz: np.ndarray, rate_hz: float, batch_s: float = BATCH_S) -> Iterator[wire.SampleBatch]:
    """One leg's samples as wire batches at ``rate_hz`` (float32, as the wire carries it), cut at holes.

    A run is the samples within half a step of one grid ``t_run + k / rate`` (a hole or a clock that drifted
    half a sample ends it); its batches are consecutive pieces of ``batch_s`` on that grid. The sample times
    are the grid's whatever ``batch_s`` is, so batches of 1 s and of 10 s carry the same samples at the same
    times (to the nanosecond of each batch's start)."""
    rate = float(np.float32(rate_hz))
    step = 1.0 / rate
    longest = max(1, min(int(batch_s * rate), wire.MAX_SAMPLES_PER_BATCH))
    n = t.shape[0]
    i = 0
    seq = 0
    end = -math.inf  # where the last batch ends (its last sample + one step)
    while i < n:
        # a sample less than half a step after the last one (a reader's times bunched at a hole) is put ~half a
        # step after it: a batch starting earlier would overlap the one before, and the detector drops those
        run_t0, k = max(float(t[i]), end - 0.45 * step), 0
        while i < n:
            j = min(n, i + longest)
            deviation = np.abs(t[i:j] - run_t0 - np.arange(k, k + j - i) * step)
            off_grid = np.flatnonzero(deviation > MAX_DEVIATION * step)
            if off_grid.size:
                j = i + int(off_grid[0])
            if j > i:
                yield wire.make_batch(round((run_t0 + k * step) * 1e9), rate, xyz[i:j], seq % 2**32)
                seq += 1
                k += j - i
                i = j
                end = run_t0 + k * step
            if off_grid.size:
                break  # a new run (grid) starts at sample i


def night_messages(
    subject: str, legs: list[Leg], batch_s: float = BATCH_S
) -> Iterator[tuple[float, list[tuple[str, bytes]]]]:
    """(wall time, messages) groups of one night, in the order a collector streaming both legs would send them."""
    online = []
    for leg in legs:
        status = wire.SensorStatus(
            state="online",
            side=leg.side,
            model=leg.model,
            rate_hz=float(np.float32(leg.rate_hz)),
            time_ns=round(float(leg.t[0]) * 1e9),
        )
        online.append((wire.status_topic(subject, leg.sensor_id), wire.encode_status(status)))
    first = min(float(leg.t[0]) for leg in legs)
    yield first, online
    streams = [(leg, batches(leg.t, leg.xyz, leg.rate_hz, batch_s)) for leg in legs]
    heads: list[Any] = [next(stream, None) for _, stream in streams]
    edge = first + GROUP_S
    group: list[tuple[str, bytes]] = []
    group_end = first
    while any(h is not None for h in heads):
        k = min((i for i, h in enumerate(heads) if h is not None), key=lambda i: heads[i].start_ns)
        batch = heads[k]
        if batch.start_ns / 1e9 >= edge and group:
            yield group_end, group
            group = []
            edge = max(edge + GROUP_S, batch.start_ns / 1e9)
        leg = streams[k][0]
        group.append((wire.acc_topic(subject, leg.sensor_id), wire.encode_binary(batch)))
        group_end = max(group_end, batch.end_ns / 1e9)
        heads[k] = next(streams[k][1], None)
    if group:
        yield group_end, group
    goodbye = []
    for leg in legs:
        status = wire.SensorStatus(state="offline", side=leg.side, time_ns=round(float(leg.t[-1]) * 1e9))
        goodbye.append((wire.status_topic(subject, leg.sensor_id), wire.encode_status(status)))
    yield group_end, goodbye


def replay_night(
    core: Any,
    subject: str,
    legs: list[Leg],
    write: Callable[[list[str]], object],
    progress: Callable[[float], object] | None = None,
    batch_s: float = BATCH_S,
) -> NightResult:
    """Feed one night to ``core`` (a DetectorCore) and hand its points to ``write``, as the live service does."""
    result = NightResult(
        min(float(leg.t[0]) for leg in legs), max(float(leg.t[-1]) for leg in legs), tuple(leg.side for leg in legs)
    )
    before = dict(core.stats.bad)
    night_topic = wire.night_topic(subject)

    def apply(effects: Any) -> None:
        if effects.dead_letters:
            letter = effects.dead_letters[0]
            raise RuntimeError(f"the detector core failed on {letter.topic} ({letter.stage}): {letter.error}")
        if effects.points:
            write(effects.points)
            result.points += len(effects.points)
        for p in effects.publishes:
            if p.topic == night_topic:
                result.summary = json.loads(p.payload)

    for wall, messages in night_messages(subject, legs, batch_s):
        apply(core.handle(messages, wall))
        if progress is not None:
            progress(wall)
    apply(core.end_all_nights())
    result.bad = {k: v - before.get(k, 0) for k, v in core.stats.bad.items() if v - before.get(k, 0)}
    if not math.isfinite(result.end):
        result.end = result.start
    return result
