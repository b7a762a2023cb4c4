"""Fill a real InfluxDB the way the product does, for the dashboard and report tests.

    simulate a night -> score it (detector.scoring.scorer.score_arrays, the detector's offline API)
      -> line protocol (detector.storage.schema builders) -> InfluxSink (durable outbox, v1 /write) -> influxd

Until the live service (MQTT -> scorer -> sink) is used here, this helper plays its part for whole
nights. What the scorer does not produce yet -- per-minute activity/posture, sensor status and
detector health -- is derived here from the simulated samples (see :func:`activity_lines`), so the
dashboards can be tested on every measurement of docs/influx-schema.md. Swap :func:`night_lines`
for the live service when it exists; :func:`fill_influx` keeps its signature.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.scoring.scorer import score_arrays
from detector.storage import schema
from detector.storage.diary import DiaryNote, diary_lines, make_note, night_start_for
from detector.storage.influx import InfluxSink
from detector.storage.night_points import summary_lines
from plm.config import InfluxSettings
from simulator import simulate_night

PROFILES = ("rls-severe", "rls-moderate", "mild", "healthy", "rls-severe")
NOTES = (
    "coffee after 18:00, a glass of wine and a late dinner",
    "went for a run, stretched before bed",
    "started a new medication; slept badly",
    "quiet evening",
    None,
)
"""One note per night (cycled): every known tag is true on some night and false on another."""


@dataclass
class FilledNight:
    profile: str
    anchor_s: float
    start_s: float
    end_s: float
    summary: dict[str, Any]
    events: list[dict[str, Any]]
    note: DiaryNote | None


@dataclass
class FillResult:
    subject: str
    nights: list[FilledNight] = field(default_factory=list)
    lines: int = 0
    wall_hi_s: float | None = None  # the live detector writes its health points at wall-clock time

    @property
    def time_range_ms(self) -> tuple[int, int]:
        """A range covering every point written (night anchors at noon up to the last status point)."""
        lo = min(n.anchor_s for n in self.nights)
        hi = max(max(n.end_s for n in self.nights) + 3600, self.wall_hi_s or 0.0)
        return int(lo * 1000), int(hi * 1000)


def activity_lines(
    subject: str, side: str, t: np.ndarray, xyz: np.ndarray, rate_hz: float, events: list[dict]
) -> list[str]:
    """Per-minute activity and posture of one leg (stand-in for the live service's activity output).

    ``activity_g``: mean |a - minute's mean gravity vector|; ``tilt_deg``: angle of the minute's
    gravity from the night's median direction (lying most of the night); > 60 degrees = upright.
    """
    lines: list[str] = []
    minute = np.floor(t / 60.0).astype(np.int64)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(minute)) + 1, [len(t)]))
    means = []
    for a, b in itertools.pairwise(starts):
        means.append(xyz[a:b].astype(np.float64).mean(axis=0))
    gravity = np.array(means)
    unit = gravity / np.maximum(np.linalg.norm(gravity, axis=1, keepdims=True), 1e-9)
    reference = np.median(unit, axis=0)
    reference /= max(float(np.linalg.norm(reference)), 1e-9)
    mine = [e for e in events if e["side"] in (side, "bilateral")]
    for i, (a, b) in enumerate(itertools.pairwise(starts)):
        m0 = float(minute[a] * 60)
        dynamic = np.linalg.norm(xyz[a:b].astype(np.float64) - gravity[i], axis=1)
        inside = [e for e in mine if e["onset"] < m0 + 60 and e["onset"] + e["duration"] > m0]
        active = sum(min(e["onset"] + e["duration"], m0 + 60) - max(e["onset"], m0) for e in inside)
        tilt = float(np.degrees(np.arccos(np.clip(unit[i] @ reference, -1.0, 1.0))))
        lines.append(
            schema.activity_point(
                subject,
                side,
                m0,
                activity_g=float(dynamic.mean()),
                active_s=float(active),
                movement_count=len(inside),
                posture="upright" if tilt > 60 else "lying",
                tilt_deg=tilt,
                missing_fraction=float(max(0.0, 1.0 - (b - a) / (rate_hz * 60.0))),
            )
        )
    return lines


def night_lines(
    subject: str, profile: str, seed: int, start_s: float, duration_h: float, note: str | None, rate_hz: float = 25.0
) -> tuple[list[str], FilledNight]:
    night = simulate_night(profile, seed=seed, rate_hz=rate_hz, duration_h=duration_h, start_unix_s=start_s)
    legs = night.legs
    result = score_arrays((legs["left"].t, legs["left"].xyz), (legs["right"].t, legs["right"].xyz))
    doc = result.to_dict()
    events = doc.pop("events")
    summary = doc
    anchor = night_start_for(summary["start"])
    lines: list[str] = []
    for e in events:
        lines.append(schema.movement_from(subject, e))
        lines += schema.leg_state_points(subject, e["onset"], e["duration"], e["side"], e["kind"], e["plm"])
    lines += summary_lines(subject, summary, events, final=True)  # the live service's own definition
    end = summary["end"]
    for side, leg in legs.items():
        lines += activity_lines(subject, side, leg.t, leg.xyz, leg.rate_hz, events)
        dropped = np.concatenate(([0], np.cumsum(np.maximum(np.diff(leg.index) - 1, 0))))
        for k, i in enumerate(range(0, len(leg.t), int(leg.rate_hz * 600))):
            lines.append(
                schema.sensor_status_point(
                    subject,
                    side,
                    float(leg.t[i]),
                    state="online",
                    sensor_id=f"{side}-ankle",
                    battery_pct=max(5.0, 95.0 - 3.0 * k - 10 * seed % 40),
                    rssi_dbm=-60.0 - k,
                    rate_hz=float(leg.rate_hz),
                    dropped_samples=int(dropped[i]),
                    late_batches=0,
                )
            )
        lines.append(
            schema.sensor_status_point(subject, side, float(leg.t[-1]) + 1, state="offline", sensor_id=f"{side}-ankle")
        )
    for k, minute in enumerate(range(int(summary["start"]), int(end), 600)):
        lines.append(
            schema.detector_health_point(
                "detector",
                float(minute),
                outbox_depth=k % 3,
                late_batches=0,
                dead_letters=0,
                sent_points=100 * k,
                write_retries=0,
                bad_payloads={"decode": k // 3, "schema": 0, "diary": 0},
            )
        )
    diary_note = None
    if note is not None:
        written = summary["start"] - 1800  # in the evening, before the night
        diary_note = make_note(note, time_s=written)
        lines += diary_lines(subject, diary_note, written)
    return lines, FilledNight(profile, anchor, summary["start"], end, summary, events, diary_note)


def fill_influx(
    influxd: Any,
    subject: str = "alice",
    nights: int = 5,
    duration_h: float = 1.0,
    last_night: dt.date | None = None,
    profiles: tuple[str, ...] = PROFILES,
    seed: int = 11,
) -> FillResult:
    """Write ``nights`` simulated nights (consecutive evenings, the last one ``last_night``, by default
    yesterday) for ``subject`` into ``influxd`` (a :class:`plm.ops.localservices.Influxd1`) through the
    durable InfluxSink (v1 path). Returns what was written, for the assertions."""
    last = last_night or (dt.date.today() - dt.timedelta(days=1))
    settings = InfluxSettings(url=influxd.url, api=1, bucket=influxd.database)
    result = FillResult(subject)
    with tempfile.TemporaryDirectory() as tmp:
        sink = InfluxSink(settings, Path(tmp) / "outbox.sqlite")
        try:
            for n in range(nights):
                day = last - dt.timedelta(days=nights - 1 - n)
                start = dt.datetime.combine(day, dt.time(22, 30)).astimezone().timestamp()
                lines, filled = night_lines(
                    subject, profiles[n % len(profiles)], seed + n, start, duration_h, NOTES[n % len(NOTES)]
                )
                sink.put(lines)
                result.lines += len(lines)
                result.nights.append(filled)
            if not sink.flush(60):
                raise RuntimeError(f"InfluxSink did not drain: {sink.metrics()}")
            if sink.dead_letters():
                raise RuntimeError(f"influxd refused lines: {sink.dead_letters()[:3]}")
        finally:
            sink.close()
    return result


def fill_influx_live(
    influxd: Any,
    mosquitto: Any,
    state_dir: Path,
    subject: str = "alice",
    nights: int = 5,
    duration_h: float = 1.0,
    last_night: dt.date | None = None,
    profiles: tuple[str, ...] = PROFILES,
    seed: int = 11,
) -> FillResult:
    """The same nights through the real pipeline: wire batches, sensor status and diary notes published
    to a real mosquitto, scored by the live detector (detector.live.service.LiveDetector) into ``influxd``.

    The summaries returned for the assertions are `plm score`'s (score_arrays of exactly the samples
    published): the live detector must have stored the same, which the dashboard tests then check."""
    import json
    import time

    from detector.live.service import LiveDetector
    from plm import wire
    from plm.config import MqttSettings, Settings
    from plm.mqtt import connect, make_client
    from tests.live_helpers import batches_as_arrays, interleave, night_batches, wait_for

    last = last_night or (dt.date.today() - dt.timedelta(days=1))
    settings = Settings(
        mqtt=MqttSettings(url=mosquitto.url, username="plm", password="plm-test-password"),
        influx=InfluxSettings(url=influxd.url, api=1, bucket=influxd.database),
        detector={"state_dir": state_dir, "instance": f"fill-{subject}"},
    )
    result = FillResult(subject)
    detector = LiveDetector(settings, status_every_s=0.5)
    detector.start()
    publisher = make_client(settings.mqtt, f"fill-publisher-{subject}")
    connect(publisher, settings.mqtt)
    try:
        for n in range(nights):
            day = last - dt.timedelta(days=nights - 1 - n)
            start = dt.datetime.combine(day, dt.time(22, 30)).astimezone().timestamp()
            profile = profiles[n % len(profiles)]
            # the third night: the right sensor is taken off after ~10 min (non-wear spans on the dashboards)
            night = simulate_night(
                profile, seed=seed + n, rate_hz=25.0, duration_h=duration_h, start_unix_s=start, taken_off=n == 2
            )
            per_side = night_batches(night)
            infos = []
            text = NOTES[n % len(NOTES)]
            note = None
            if text is not None:
                written = start - 1800  # in the evening, before the night
                note = make_note(text, time_s=written)
                payload = json.dumps({"text": text, "time": written}).encode()
                infos.append(publisher.publish(wire.diary_topic(subject), payload, qos=1))
            status_every = 600.0
            next_status = {side: per_side[side][0].start_ns / 1e9 for side in per_side}
            sent = {side: 0 for side in per_side}
            for side, batch in interleave(per_side):
                t0 = batch.start_ns / 1e9
                if t0 >= next_status[side]:
                    status = wire.SensorStatus(
                        state="online",
                        side=side,
                        battery_pct=max(5, 95 - 3 * n - int((t0 - start) / 600)),
                        rssi_dbm=-60,
                        rate_hz=batch.rate_hz,
                        frames_dropped=int(batch.seq - sent[side]),
                        time_ns=batch.start_ns,
                    )
                    topic = wire.status_topic(subject, f"{side}-ankle")
                    infos.append(publisher.publish(topic, wire.encode_status(status), qos=1))
                    next_status[side] = t0 + status_every
                infos.append(
                    publisher.publish(wire.acc_topic(subject, f"{side}-ankle"), wire.encode_binary(batch), qos=1)
                )
                sent[side] += 1
            for side, batches in per_side.items():
                end_ns = batches[-1].end_ns
                bye = wire.SensorStatus(state="offline", side=side, time_ns=end_ns)
                infos.append(
                    publisher.publish(wire.status_topic(subject, f"{side}-ankle"), wire.encode_status(bye), qos=1)
                )
            for info in infos:
                info.wait_for_publish(60)
            if not wait_for(lambda n=n: detector.stats.nights_finished >= n + 1, 120):
                raise RuntimeError(f"the live detector did not finish night {n}: {detector.stats}")
            offline = score_arrays(batches_as_arrays(per_side["left"]), batches_as_arrays(per_side["right"]))
            doc = offline.to_dict()
            events = doc.pop("events")
            anchor = night_start_for(doc["start"])
            result.nights.append(FilledNight(profile, anchor, doc["start"], doc["end"], doc, events, note))
        time.sleep(1.0)  # one more detector health point after the last night
        detector._publish_status("online")
        if not detector.sink.flush(60):
            raise RuntimeError(f"the detector's outbox did not drain: {detector.sink.metrics()}")
        result.lines = detector.sink.metrics().sent
    finally:
        detector.stop()
        publisher.disconnect()
    result.wall_hi_s = time.time() + 60
    return result
