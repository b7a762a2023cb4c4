"""The live detector against a real mosquitto and a real influxd: equivalence with offline scoring,
redelivery, bad input, restarts and shards."""

from __future__ import annotations

import json
import math
import time

import paho.mqtt.client as mqtt
import pytest

from detector.live.routing import shard_of
from detector.live.service import CHECKPOINT_MAX_SHARE, LiveDetector
from detector.scoring.scorer import score_arrays
from plm import wire
from plm.mqtt import connect, make_client
from simulator import simulate_night
from tests.live_helpers import batches_as_arrays, interleave, night_batches, settings_for, wait_for

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def night():
    return simulate_night("rls-severe", seed=4242, duration_h=0.75, jitter_ms=0, gap=False)


@pytest.fixture(scope="module")
def batches(night):
    return night_batches(night)


@pytest.fixture(scope="module")
def offline(batches):
    left = batches_as_arrays(batches["left"])
    right = batches_as_arrays(batches["right"])
    return score_arrays(left, right)


def _publisher(settings) -> mqtt.Client:
    client = make_client(settings.mqtt, "test-publisher")
    connect(client, settings.mqtt)
    return client


def _publish(client: mqtt.Client, subject: str, items, repeat_every: int = 0) -> None:
    infos = []
    for i, (side, batch) in enumerate(items):
        topic = wire.acc_topic(subject, f"{side}-ankle")
        payload = wire.encode_binary(batch)
        infos.append(client.publish(topic, payload, qos=1))
        if repeat_every and i % repeat_every == 0:  # what a QoS 1 redelivery looks like
            infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(30)


def _goodbye(client: mqtt.Client, subject: str) -> None:
    for side in ("left", "right"):
        status = wire.SensorStatus(state="offline", side=side)
        client.publish(wire.status_topic(subject, f"{side}-ankle"), wire.encode_status(status), qos=1).wait_for_publish(
            10
        )


def _stored_movements(influxd, subject: str) -> list[dict]:
    result = influxd.query(
        f"SELECT duration_s, plm, side, kind FROM movement WHERE subject = '{subject}'", database=influxd.database
    )
    series = result["results"][0].get("series", [])
    if not series:
        return []
    cols = series[0]["columns"]
    return [dict(zip(cols, row, strict=True)) for row in series[0]["values"]]


def _stored_night(influxd, subject: str) -> dict | None:
    result = influxd.query(f"SELECT * FROM night WHERE subject = '{subject}'", database=influxd.database)
    series = result["results"][0].get("series", [])
    if not series:
        return None
    cols = series[0]["columns"]
    return dict(zip(cols, series[0]["values"][-1], strict=True))


def _compare(stored: list[dict], offline_events) -> None:
    expected = sorted(
        ((round(e.onset * 1000), e.side, e.kind, e.plm) for e in offline_events),
    )
    got = sorted((row["time"], row["side"], row["kind"], row["plm"]) for row in stored)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert got == expected, f"missing {missing[:5]} extra {extra[:5]} ({len(missing)} missing, {len(extra)} extra)"


def test_streamed_night_equals_offline_scoring(mosquitto, influxd, tmp_path, batches, offline):
    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance="eq")
    detector = LiveDetector(settings, publish_results=True)
    detector.start()
    try:
        publisher = _publisher(settings)
        _publish(publisher, "eqsubject", interleave(batches), repeat_every=50)
        _goodbye(publisher, "eqsubject")
        assert wait_for(lambda: detector.stats.nights_finished == 1, 60)
        assert detector.sink.flush(30)
    finally:
        detector.stop()
        publisher.disconnect()
    stored = _stored_movements(influxd, "eqsubject")
    _compare(stored, offline.events)
    night = _stored_night(influxd, "eqsubject")
    assert night is not None and night["final"] is True
    for key in ("lm_count", "plm_count", "series_count", "twitch_count", "long_movement_count"):
        assert night[key] == offline.fields[key], key
    for key in ("plm_index", "time_in_bed_h", "periodicity_index"):
        want = offline.fields[key]
        assert (night[key] is None and want is None) or math.isclose(night[key], want, rel_tol=1e-9), key
    assert offline.fields["plm_count"] > 0  # a severe night has PLMs: the comparison is not vacuous
    assert detector.stats.bad == {} or set(detector.stats.bad) <= {"late"}


def test_bad_payloads_are_counted_and_the_service_keeps_going(mosquitto, influxd, tmp_path, batches):
    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance="bad")
    detector = LiveDetector(settings)
    detector.start()
    publisher = _publisher(settings)
    try:
        good = batches["left"][:5]
        for payload in (b"", b"\x50\x02garbage", b"{not json", b'{"v":1,"t0":1,"rate":52,"acc":[[0,0,1]]}'):
            publisher.publish(wire.acc_topic("badsubject", "left-ankle"), payload, qos=1).wait_for_publish(5)
        publisher.publish("plm/v1/bad subject/x/acc", b"x", qos=1).wait_for_publish(5)
        for b in good:
            publisher.publish(
                wire.acc_topic("badsubject", "left-ankle"), wire.encode_binary(b), qos=1
            ).wait_for_publish(5)
        assert wait_for(lambda: sum(detector.stats.bad.values()) >= 4, 20)
        assert wait_for(lambda: detector.stats.received >= 9, 20)
        assert detector.stats.bad["payload"] >= 3
        assert detector.stats.bad["clock"] >= 1
        # the detector status topic reports the counts, retained
        got: list = []
        reader = make_client(settings.mqtt, "status-reader")
        reader.on_message = lambda c, u, m: got.append(json.loads(m.payload))
        connect(reader, settings.mqtt)
        reader.subscribe(wire.detector_status_topic("bad"), qos=1)
        detector._publish_status("online")
        # the retained status the reader gets first may predate the bad payloads: wait for the one just sent
        assert wait_for(lambda: any("payload" in m.get("bad", {}) for m in got), 10), got
        assert [m for m in got if "payload" in m.get("bad", {})][-1]["bad"]["payload"] >= 3
        reader.disconnect()
    finally:
        detector.stop()
        publisher.disconnect()


def test_restart_mid_night_neither_loses_nor_doubles(mosquitto, influxd, tmp_path, batches, offline):
    """Kill-style restart: the first instance stops without finishing the night; the second resumes
    from the checkpoint + journal and must end with exactly the offline result."""
    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance="restart")
    items = interleave(batches)
    half = len(items) // 2
    first = LiveDetector(settings, checkpoint_every_s=0.5)
    first.start()
    publisher = _publisher(settings)
    _publish(publisher, "restartsubject", items[:half])
    assert wait_for(lambda: first.stats.received >= half, 60)
    first.stop()  # no finish: the night is open in the checkpoint
    _publish(publisher, "restartsubject", items[half - 20 : half + 100])  # overlap = redelivery after restart
    second = LiveDetector(settings, checkpoint_every_s=0.5)
    second.start()
    try:
        _publish(publisher, "restartsubject", items[half + 100 :])
        _goodbye(publisher, "restartsubject")
        assert wait_for(lambda: second.stats.nights_finished >= 1, 60)
        assert second.sink.flush(30)
    finally:
        second.stop()
        publisher.disconnect()
    _compare(_stored_movements(influxd, "restartsubject"), offline.events)
    night = _stored_night(influxd, "restartsubject")
    assert night["plm_count"] == offline.fields["plm_count"]


def test_shards_split_subjects_exactly_once(mosquitto, influxd, tmp_path, batches):
    subjects = [f"shard{i:02d}" for i in range(8)]
    assert {shard_of(s, 2) for s in subjects} == {0, 1}
    replicas = [
        LiveDetector(settings_for(mosquitto, influxd, tmp_path / f"s{k}", instance=f"rep{k}"), shard=(k, 2))
        for k in range(2)
    ]
    for r in replicas:
        r.start()
    publisher = _publisher(replicas[0].settings)
    try:
        few = batches["left"][:3]
        # a sender says "online" first and waits for a replica's announcement, as the collector does: replicas
        # subscribe to their own subjects only (tests/test_replica_subscriptions.py)
        online = wire.encode_status(wire.SensorStatus("online", side="left"))
        for s in subjects:
            publisher.publish(wire.status_topic(s, "left-ankle"), online, qos=1, retain=True).wait_for_publish(5)
        assert wait_for(lambda: sum(len(r._announced) for r in replicas) >= len(subjects), 20)
        for s in subjects:
            _publish(publisher, s, [("left", b) for b in few])
        assert wait_for(lambda: sum(len(r.subjects) for r in replicas) == len(subjects), 20)
        for k, r in enumerate(replicas):
            assert set(r.subjects) == {s for s in subjects if shard_of(s, 2) == k}
    finally:
        for r in replicas:
            r.stop()
        for s in subjects:  # the retained statuses would name these subjects to every later detector
            publisher.publish(wire.status_topic(s, "left-ankle"), b"", qos=1, retain=True).wait_for_publish(5)
        publisher.disconnect()


def test_a_lost_leg_does_not_hold_the_other_back(batches):
    """Right sensor silent: after leg_lost_after_s of wall time the left leg's movements are final."""
    from detector.live.core import DetectorCore
    from plm.config import Settings

    def final_movements(core: DetectorCore, messages, wall: float, step_s: float) -> list[str]:
        points = []
        for i in range(0, len(messages), 60):  # a minute of data per step
            points += core.handle(messages[i : i + 60], wall).points
            wall += step_s
        return [p for p in points if p.startswith("movement,") and "kind=twitch" not in p]

    left = [(wire.acc_topic("onelegged", "left-ankle"), wire.encode_binary(b)) for b in batches["left"][:1200]]
    patient = DetectorCore(Settings(), publish_results=False, leg_lost_after_s=30.0)
    assert final_movements(patient, left, 1_000.0, 60.0), "the left leg's movements were held back"
    waiting = DetectorCore(Settings(), publish_results=False, leg_lost_after_s=1e9)
    assert not final_movements(waiting, left, 1_000.0, 0.0), "without the lost-leg rule nothing should be final"


def test_broker_restart_mid_stream_loses_nothing(influxd, tmp_path, batches):
    """The service runs the MQTT network loop on its own thread (not paho's loop_forever), so it has its own
    reconnect: a broker restarted (SIGKILL, then up again on the same port) mid-stream is reconnected to, the
    persistent session redelivers, and every batch published before and after reaches the reorder buffers."""
    from plm.ops.localservices import Mosquitto

    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    try:
        settings = settings_for(broker, influxd, tmp_path / "state", instance="reconnect")
        detector = LiveDetector(settings, publish_results=False)
        detector.start()
        items = interleave(batches)[:400]
        try:
            publisher = _publisher(settings)
            _publish(publisher, "reconnect", items[:200])
            assert wait_for(lambda: detector.stats.received >= 200, 20), detector.stats.received
            publisher.disconnect()
            publisher.loop_stop()
            detector._subscribed.clear()
            broker.kill()
            broker.start()
            assert detector._subscribed.wait(40), "the detector did not reconnect and subscribe again"
            publisher = _publisher(settings)
            _publish(publisher, "reconnect", items[200:])
            publisher.disconnect()
            publisher.loop_stop()
            state = detector.subjects
            accepted = lambda: sum(i.counts["accepted"] for i in state["reconnect"].inboxes.values())  # noqa: E731
            assert wait_for(lambda: accepted() >= 400, 30), (accepted(), detector.stats)
        finally:
            detector.stop()
        inboxes = detector.subjects["reconnect"].inboxes.values()
        assert sum(i.counts["accepted"] for i in inboxes) == 400
        assert detector.stats.bad.get("late", 0) == 0
    finally:
        broker.stop()


@pytest.mark.parametrize("blob", ["other-version", "unreadable"])
def test_a_checkpoint_of_another_detector_version_is_set_aside_not_fatal(mosquitto, influxd, tmp_path, blob):
    """An upgraded detector must not unpickle the old code's scorer objects (they fail later, mid-stream,
    on a renamed attribute): it starts the nights in progress again, says so, and keeps running."""
    import sqlite3

    from detector.storage.journal import Journal

    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance="upgrade")
    (tmp_path / "state").mkdir()
    journal = Journal(tmp_path / "state" / "upgrade-journal.sqlite")
    journal.checkpoint(7, {"format": "written-by-0.0", "subjects": {"old": object()}})
    journal.close()
    if blob == "unreadable":
        with sqlite3.connect(tmp_path / "state" / "upgrade-journal.sqlite") as db:
            db.execute("UPDATE checkpoint SET state = ?", (b"\x80\x05not a pickle",))
    detector = LiveDetector(settings)
    detector.recover()
    try:
        assert detector.subjects == {} and detector.stats.checkpoints_discarded == 1
        assert detector._applied_id == 7  # the rows the checkpoint covered are gone: not replayed
        detector.apply("plm/v1/fresh/left-ankle/acc", wire.encode_binary(night_batches_one()))
        assert "fresh" in detector.subjects
    finally:
        detector.stop()


def night_batches_one() -> wire.SampleBatch:
    return wire.make_batch(1_700_000_000 * 10**9, 52.0, [[0.0, 0.0, 1.0]] * 52, 0, now_ns=2**62)


def test_the_nights_minutes_are_written_again_from_the_final_night(tmp_path, batches, offline):
    """Minutes written live carry what was known then; at the night's end every minute is written again
    from the final night (posture, in bed, asleep, movement counts): the last value of each minute is
    the final one, and its movement counts add up to the night's movements."""
    import re

    from plm.config import InfluxSettings, Settings

    settings = Settings(influx=InfluxSettings(url="http://127.0.0.1:9", api=1), detector={"state_dir": tmp_path})
    detector = LiveDetector(settings, publish_results=False)
    written: list[str] = []
    detector.sink.put = lambda lines: written.extend(lines)  # no database: the lines themselves are checked
    try:
        detector.apply_many(
            [(f"plm/v1/minutes/{side}-ankle/acc", wire.encode_binary(b)) for side, b in interleave(batches)],
            wall_s=2**40,
        )
        live_lines = len(written)
        detector.stop(finish_nights=True)
    finally:
        detector.sink.close()
    last: dict[tuple[str, int], str] = {}
    for text in written[live_lines:]:  # what the night's end wrote
        if text.startswith("activity,") and "movement_count=" in text:
            side = re.search(r"side=(\w+)", text).group(1)
            last[(side, int(text.rsplit(" ", 1)[1]))] = text
    night_start = min(b.start_ns for bs in batches.values() for b in bs) / 1e9
    night_end = max(b.end_ns for bs in batches.values() for b in bs) / 1e9
    minutes = int(night_end // 60) - int(night_start // 60) + 1
    assert len(written) > live_lines and {side for side, _ in last} == {"left", "right"}
    assert len(last) == 2 * minutes  # every minute of the night again, each leg
    counted = sum(int(re.search(r"movement_count=(\d+)i", text).group(1)) for text in last.values())
    expected = sum(2 if e.side == "bilateral" else 1 for e in offline.events if e.kind != "twitch")
    assert counted == expected


def test_checkpoints_stretch_to_a_small_share_of_the_time(mosquitto, influxd, tmp_path):
    """Nothing is read while a checkpoint pickles every subject: a slow one spaces the next ones out."""
    detector = LiveDetector(
        settings_for(mosquitto, influxd, tmp_path / "state", instance="ckpt"), checkpoint_every_s=30
    )
    try:
        assert detector._checkpoint_interval_s() == 30  # fast checkpoints: the configured interval
        detector._checkpoint_cost_s = 2.0  # e.g. 1000 subjects on a busy machine
        assert detector._checkpoint_interval_s() == pytest.approx(2.0 / CHECKPOINT_MAX_SHARE)
    finally:
        detector.journal.close()
        detector.sink.close(flush_timeout_s=0)


def test_a_restart_is_not_a_lost_leg(tmp_path, batches):
    """The journal is replayed at restart time, long after the checkpoint's wall clock: the detector's own
    downtime must not count as a leg's silence. Before the fix, a restart more than leg_lost_after_s after
    the last checkpoint declared the leg that was behind (here 6 s of data) lost up to the other leg, and
    refused its next seconds as already scored -- data offline scoring of the same batches has."""
    from plm.config import InfluxSettings, Settings

    settings = Settings(
        influx=InfluxSettings(url="http://127.0.0.1:9", api=1),
        detector={"state_dir": tmp_path, "instance": "replay"},
    )
    left, right = batches["left"][:120], batches["right"][:120]
    rows = []  # the left sensor runs 6 s of data ahead of the right one
    for k in range(len(right)):
        if k + 6 < len(left):
            rows.append((wire.acc_topic("replaysubject", "left-ankle"), wire.encode_binary(left[k + 6])))
        if k == 0:
            rows += [(wire.acc_topic("replaysubject", "left-ankle"), wire.encode_binary(b)) for b in left[:6]]
        rows.append((wire.acc_topic("replaysubject", "right-ankle"), wire.encode_binary(right[k])))
    half = len(rows) // 2
    first = LiveDetector(settings, publish_results=False, leg_lost_after_s=30.0)
    ids = first.journal.append(rows[:half])
    first.apply_many(rows[:half], wall_s=time.time() - 120.0)  # heard two minutes before the restart
    first._applied_id = ids[-1]
    first._checkpoint()
    first.journal.append(rows[half:])  # journaled, then SIGKILLed before applying them
    first.sink.close()
    first.journal.close()

    second = LiveDetector(settings, publish_results=False, leg_lost_after_s=30.0)
    second.recover()  # replays rows[half:]
    try:
        state = second.subjects["replaysubject"]
        assert second.stats.bad.get("samples", 0) == 0, dict(second.stats.bad)
        right_gaps = [g for g in state.scorer.summary().fields["gaps"] if g["side"] == "right"]
        assert not right_gaps, f"the right leg (no hole in its data) was declared lost: {right_gaps}"
    finally:
        second.sink.close()
        second.journal.close()
