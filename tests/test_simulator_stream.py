"""``plm simulate stream`` against a real mosquitto: wire-format batches, retained status, Last Will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from plm.config import MqttSettings
from plm.mqtt import connect, make_client
from plm.wire import SAMPLES_WILDCARD, STATUS_WILDCARD, decode, decode_status, parse_sensor_topic
from simulator.stream import NightStreamer, StreamConfig, stream_nights

pytestmark = pytest.mark.services


class Listener:
    """A real subscriber collecting decoded batches and status messages."""

    def __init__(self, settings: MqttSettings, name: str) -> None:
        self.batches: dict[tuple[str, str], list] = defaultdict(list)
        self.status: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.client = make_client(settings, name, on_connect=self._subscribe)
        self.client.on_message = self._on_message
        connect(self.client, settings)
        time.sleep(0.2)

    @staticmethod
    def _subscribe(client) -> None:
        client.subscribe([(SAMPLES_WILDCARD, 1), (STATUS_WILDCARD, 1)])

    def _on_message(self, _client, _userdata, msg) -> None:
        try:
            topic = parse_sensor_topic(msg.topic)
            key = (topic.subject, topic.sensor)
            with self.lock:
                if topic.kind == "acc":
                    self.batches[key].append(decode(msg.payload))
                else:
                    self.status[key].append(decode_status(msg.payload).state)
        except Exception as exc:  # recorded, asserted on by the test
            self.errors.append(repr(exc))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _settings(mosquitto) -> MqttSettings:
    return MqttSettings(url=mosquitto.url, username="plm", password="plm-test-password")


def _wait(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_fast_stream_publishes_a_whole_night_in_the_wire_format(mosquitto):
    settings = _settings(mosquitto)
    listener = Listener(settings, "t-fast")
    config = StreamConfig(subjects=1, speed=400, duration_h=0.25, prefix="fast", seed=3)
    t_start = time.time()
    stats = stream_nights(settings, config)
    assert stats.finished and stats.sensors == 2
    assert _wait(lambda: sum(b.count for v in listener.batches.values() for b in v) == stats.samples)
    assert not listener.errors
    for sensor in ("left", "right"):
        batches = listener.batches[("fast001", sensor)]
        seqs = [b.seq for b in batches]
        assert seqs == list(range(len(batches))), "QoS 1, in order, nothing lost"
        starts = np.array([b.start_ns for b in batches]) / 1e9
        assert np.all(np.diff(starts) > 0)
        assert t_start - 5 < starts[0] < t_start + 5, "the night starts now"
        assert starts[-1] - starts[0] > 0.24 * 3600 - 30, "timestamps run ahead at 400x"
        assert all(b.rate_hz == 52.0 for b in batches)
        xyz = np.concatenate([b.xyz for b in batches])
        assert abs(np.median(np.linalg.norm(xyz, axis=1)) - 1.0) < 0.1
        assert listener.status[("fast001", sensor)][:1] == ["online"]
        assert _wait(lambda s=sensor: listener.status[("fast001", s)][-1:] == ["offline"])
    listener.close()
    late = Listener(settings, "t-late")  # retained: a newcomer learns the sensors are offline
    assert _wait(lambda: late.status[("fast001", "left")] == ["offline"])
    late.close()


def test_real_time_stream_paces_one_second_batches_and_stops_on_request(mosquitto):
    settings = _settings(mosquitto)
    listener = Listener(settings, "t-rt")
    streamer = NightStreamer(settings, StreamConfig(subjects=2, speed=1, duration_h=1, prefix="rt", seed=1)).start()
    assert streamer.wait_ready()
    t_ready = time.time()
    time.sleep(3.3)
    stats = streamer.stop()
    assert stats is not None and not stats.finished
    for subject in ("rt001", "rt002"):
        batches = listener.batches[(subject, "left")]
        assert 2 <= len(batches) <= 6
        counts = [b.count for b in batches]
        assert max(counts) <= 60 and sum(counts) >= 2 * 50
        assert abs(batches[0].start_ns / 1e9 - t_ready) < 2.0
    assert stats.max_lag_s < 1.0
    listener.close()


def test_a_killed_streamer_leaves_lost_sensors_via_the_last_will(mosquitto, tmp_path):
    settings = _settings(mosquitto)
    listener = Listener(settings, "t-will")
    env = dict(os.environ)
    env.update(
        PLM_MQTT__URL=mosquitto.url, PLM_MQTT__USERNAME="plm", PLM_MQTT__PASSWORD="plm-test-password", PLM_CONFIG=""
    )
    env.pop("PLM_CONFIG")
    args = ["simulate", "stream", "--subjects", "1", "--prefix", "will", "--duration-h", "1", "--seed", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "plm.cli", *args],
        env=env,
        cwd=tmp_path,
    )
    try:
        assert _wait(lambda: len(listener.batches[("will001", "right")]) >= 1, 20)
        assert listener.status[("will001", "right")][0] == "online"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert _wait(lambda: listener.status[("will001", "left")][-1:] == ["lost"], 15)
    assert _wait(lambda: listener.status[("will001", "right")][-1:] == ["lost"], 15)
    listener.close()


def test_many_sensors_in_real_time_short_load(mosquitto):
    """100 sensors for 3 s (the 1,000-sensor run is bench/simulate_speed.py --stream)."""
    settings = _settings(mosquitto)
    listener = Listener(settings, "t-load")
    streamer = NightStreamer(settings, StreamConfig(subjects=50, speed=1, prefix="load", max_clients=8)).start()
    assert streamer.wait_ready(60)
    time.sleep(3.2)
    stats = streamer.stop()
    assert stats is not None and stats.sensors == 100
    assert _wait(lambda: sum(len(v) for v in listener.batches.values()) >= stats.batches)
    assert len(listener.batches) == 100
    assert stats.max_lag_s < 1.0
    assert not listener.errors
    listener.close()


def test_json_encoding_stream(mosquitto):
    settings = _settings(mosquitto)
    listener = Listener(settings, "t-json")
    stats = stream_nights(
        settings, StreamConfig(subjects=1, speed=1000, duration_h=0.25, prefix="json", encoding="json")
    )
    assert stats.finished
    assert _wait(lambda: sum(b.count for v in listener.batches.values() for b in v) == stats.samples)
    assert not listener.errors
    listener.close()


def test_bad_stream_config_is_named():
    with pytest.raises(ValueError, match="speed"):
        StreamConfig(speed=5000).validate()
    with pytest.raises(ValueError, match="encoding"):
        StreamConfig(encoding="xml").validate()
