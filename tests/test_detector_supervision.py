"""`plm detect` as a service under attack and failure (issue #16), against a real mosquitto and influxd:

- the payloads of the report keep every other subject scored, and a kill -9 and restart afterwards (which
  replays them from the journal) starts and goes on scoring;
- a storage failure ends the process with exit 1 after a retained ``failed`` status, and the healthcheck
  says so; a stuck worker shows as a status that grows old;
- a state directory that cannot be used is refused at start with one line naming it;
- retained sample batches and diary notes are not scored.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from detector.live.service import LiveDetector
from plm import wire
from plm.mqtt import connect, make_client
from plm.ops.stack_cli import detector_health_verdict
from simulator import simulate_night
from tests.live_helpers import night_batches, settings_for, wait_for

PLM = [sys.executable, "-c", "import sys; from plm.cli import main; sys.exit(main())"]
pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def batches():
    night = simulate_night("rls-severe", seed=1616, duration_h=0.25, jitter_ms=0, gap=False)
    return night_batches(night)


def _env(mosquitto, influxd, state_dir: Path, instance: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PLM_")},
        "PLM_MQTT__URL": mosquitto.url,
        "PLM_MQTT__USERNAME": "plm",
        "PLM_MQTT__PASSWORD": "plm-test-password",
        "PLM_INFLUX__URL": influxd.url,
        "PLM_INFLUX__API": "1",
        "PLM_INFLUX__BUCKET": influxd.database,
        "PLM_DETECTOR__STATE_DIR": str(state_dir),
        "PLM_DETECTOR__INSTANCE": instance,
    }


class StatusWatch:
    """The detector's retained status, as a healthcheck or a dashboard reads it."""

    def __init__(self, settings, instance: str) -> None:
        self.docs: list[dict] = []
        self.client = make_client(settings.mqtt, f"watch-{instance}-{time.monotonic_ns()}")
        self.client.on_message = lambda _c, _u, m: self.docs.append(json.loads(m.payload) if m.payload else {})
        connect(self.client, settings.mqtt)
        self.client.subscribe(wire.detector_status_topic(instance), qos=1)

    def latest(self) -> dict:
        return self.docs[-1] if self.docs else {}

    def wait_state(self, state: str, after_ns: int = 0, timeout_s: float = 60.0) -> dict:
        ok = wait_for(
            lambda: self.latest().get("state") == state and self.latest().get("time_ns", 0) > after_ns, timeout_s
        )
        assert ok, f"no {state!r} status; last: {self.latest()}"
        return self.latest()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)


def _movements(influxd, subject: str) -> int:
    result = influxd.query(
        f"SELECT count(duration_s) FROM movement WHERE subject = '{subject}'", database=influxd.database
    )
    series = result["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


POISON = [
    (wire.status_topic("attacker", "left-ankle"), b'{"state":"online","side":"left","battery_pct":"x"}'),
    (wire.status_topic("attacker", "left-ankle"), b'{"state":"online","side":"left","frames_dropped":1.5}'),
    (wire.status_topic("attacker", "left-ankle"), b'{"state":"online","side":"left","time_ns":"x"}'),
    (wire.status_topic("attacker", "left-ankle"), b'{"state":"online","side":"left","battery_pct":1e400}'),
    (wire.status_topic("attacker", "right-ankle"), b'{"state":"online","side":"right","time_ns":-1}'),
    (wire.status_topic("attacker", "right-ankle"), b'{"state":"online","side":"right","time_ns":1e300}'),
    (wire.status_topic("attacker", "right-ankle"), b'{"state":"online","rssi_dbm":' + b"9" * 4400 + b"}"),
    (wire.acc_topic("attacker", "left-ankle"), b'{"v":1,"t0":' + b"9" * 4400 + b',"rate":52,"acc":[[0,0,1]]}'),
    (wire.diary_topic("attacker"), b'{"text":"x","time":' + b"9" * 4400 + b"}"),
    (wire.diary_topic("attacker"), b'{"text":"x","time":1e400}'),
]


def test_poison_then_kill_9_then_restart_keeps_scoring(mosquitto, influxd, tmp_path, batches):
    instance = "poisoned"
    env = _env(mosquitto, influxd, tmp_path / "state", instance)
    settings = settings_for(mosquitto, influxd, tmp_path / "unused")
    watch = StatusWatch(settings, instance)
    publisher = make_client(settings.mqtt, "poison-publisher")
    connect(publisher, settings.mqtt)
    good = [(wire.acc_topic("sleeper", f"{side}-ankle"), wire.encode_binary(b)) for side in ("left", "right")
            for b in batches[side]]  # fmt: skip
    good.sort(key=lambda m: wire.decode(m[1], now_ns=2**62).start_ns)
    half = len(good) // 2
    log = open(tmp_path / "detect.log", "wb")  # noqa: SIM115 -- two processes append to it
    proc = subprocess.Popen([*PLM, "detect", "--idle-end-min", "600"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        watch.wait_state("online")
        _publish_all(publisher, [*POISON, *good[:half]])
        assert wait_for(lambda: _movements(influxd, "sleeper") > 0, 60), "the other subject was not scored"
        assert wait_for(lambda: sum(watch.latest().get("bad", {}).values()) >= len(POISON), 30), watch.latest()
        assert watch.latest().get("dead_lettered") == 0
        assert proc.poll() is None
        before = _movements(influxd, "sleeper")

        proc.send_signal(signal.SIGKILL)  # the poison rows are in the journal: the restart replays them
        proc.wait(10)
        restarted_at = time.time_ns()
        proc = subprocess.Popen(
            [*PLM, "detect", "--idle-end-min", "600"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        status = watch.wait_state("online", after_ns=restarted_at)
        assert status.get("dead_lettered") == 0
        _publish_all(publisher, good[half:])
        assert wait_for(lambda: _movements(influxd, "sleeper") > before, 60), "not scoring after the restart"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        publisher.disconnect()
        watch.close()
    assert b"Traceback" not in (tmp_path / "detect.log").read_bytes()


def test_a_full_disk_ends_the_process_loudly(mosquitto, influxd, tmp_path, batches):
    """The journal cannot be written (a file-size limit stands in for a full disk): the worker publishes a
    retained ``failed`` status with the error and ``plm detect`` exits 1 for its service manager to restart."""
    instance = "diskfull"
    env = _env(mosquitto, influxd, tmp_path / "state", instance)
    settings = settings_for(mosquitto, influxd, tmp_path / "unused")
    watch = StatusWatch(settings, instance)
    publisher = make_client(settings.mqtt, "diskfull-publisher")
    connect(publisher, settings.mqtt)
    limit = 256 * 1024

    def small_disk() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.Popen(
        [*PLM, "detect"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=small_disk
    )
    try:
        watch.wait_state("online")
        messages = [(wire.acc_topic("filler", "left-ankle"), wire.encode_binary(b)) for b in batches["left"]]
        _publish_all(publisher, messages * 2)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        publisher.disconnect()
    text = out.decode(errors="replace")
    assert proc.returncode == 1, text[-2000:]
    assert "the worker stopped" in text
    status = watch.wait_state("failed")
    assert "full" in status.get("error", "") or "Error" in status.get("error", ""), status
    health = subprocess.run(
        [*PLM, "stack", "healthcheck-detector"], env=env, capture_output=True, text=True, timeout=60
    )
    watch.close()
    assert health.returncode == 1 and "failed" in health.stdout, health.stdout + health.stderr


def test_a_stuck_worker_shows_as_an_old_status(mosquitto, influxd, tmp_path):
    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance="stuck")
    detector = LiveDetector(settings, status_every_s=0.2)
    watch = StatusWatch(settings, "stuck")
    gate = threading.Event()
    try:
        detector.start()
        watch.wait_state("online")
        assert detector_health_verdict(watch.latest(), time.time(), max_age_s=1.0)[1]
        detector._publish_acks = lambda _now: gate.wait(30)  # the worker's loop blocks here
        assert wait_for(lambda: detector.stalled_for() > 1.5, 10)
        verdict, healthy = detector_health_verdict(watch.latest(), time.time(), max_age_s=1.0)
        assert not healthy and verdict.startswith("stuck"), verdict
    finally:
        gate.set()
        detector.stop()
        watch.close()
    assert detector.failure is None and detector.stalled_for() == 0.0


def test_health_verdicts() -> None:
    now = 1_700_000_000.0
    fresh = {"state": "online", "time_ns": int((now - 5) * 1e9), "status_every_s": 10}
    assert detector_health_verdict(fresh, now) == ("online (5 s ago)", True)
    assert not detector_health_verdict({**fresh, "time_ns": int((now - 61) * 1e9)}, now)[1]
    assert detector_health_verdict({**fresh, "time_ns": int((now - 59) * 1e9)}, now)[1]
    assert not detector_health_verdict({**fresh, "status_every_s": 30, "time_ns": int((now - 181) * 1e9)}, now)[1]
    assert detector_health_verdict({"state": "failed", "error": "JournalError: disk full"}, now) == (
        "failed (JournalError: disk full)",
        False,
    )
    assert not detector_health_verdict({"state": "lost"}, now)[1]
    assert not detector_health_verdict(None, now)[1]
    assert not detector_health_verdict({"state": "online"}, now)[1]


def _detect_once(env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLM, "detect"], env=env, capture_output=True, text=True, timeout=60, **kwargs)


def _assert_one_line_refusal(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_state_dir_that_is_a_file_is_refused(mosquitto, influxd, tmp_path):
    state = tmp_path / "state"
    state.write_text("not a folder")
    _assert_one_line_refusal(_detect_once(_env(mosquitto, influxd, state, "detector")), str(state), "state_dir")


def test_a_corrupt_journal_is_refused(mosquitto, influxd, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "detector-journal.sqlite").write_bytes(b"this is not a database " * 200)
    done = _detect_once(_env(mosquitto, influxd, state, "detector"))
    _assert_one_line_refusal(done, str(state / "detector-journal.sqlite"), "not a database", "moved aside")


def _read_only_mounts_work(tmp_path: Path) -> bool:
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", READ_ONLY_THEN + " true", "sh", str(probe)], capture_output=True
    )
    return done.returncode == 0


READ_ONLY_THEN = 'd="$1"; shift; mount --bind "$d" "$d" && mount -o remount,ro,bind "$d" && exec "$@"'


@pytest.mark.parametrize("read_only", ["folder", "journal file"])
def test_a_read_only_state_is_refused(mosquitto, influxd, tmp_path, read_only):
    """A read-only volume (a compose mount without write access), or a journal file the detector's user may
    only read: a read-only file in a writable folder opens fine, so only the write probe at start finds it --
    before, the first commit raised in the middle of the stream."""
    if not _read_only_mounts_work(tmp_path):
        pytest.skip("needs a private mount namespace (unshare -m) to mount the state folder read-only")
    state = tmp_path / "state"
    state.mkdir()
    from detector.storage.journal import Journal

    Journal(state / "detector-journal.sqlite").close()
    target = state if read_only == "folder" else state / "detector-journal.sqlite"
    env = _env(mosquitto, influxd, state, "detector")
    command = ["unshare", "-m", "sh", "-c", READ_ONLY_THEN, "sh", str(target), *PLM, "detect"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    _assert_one_line_refusal(done, str(state / "detector-journal.sqlite"), "read")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_retained_batches_and_notes_are_not_scored(mosquitto, influxd, tmp_path, batches, protocol):
    subject = f"retained{protocol.replace('.', '')}"
    settings = settings_for(mosquitto, influxd, tmp_path / "state", instance=f"ret{protocol.replace('.', '')}",
                            mqtt_protocol=protocol)  # fmt: skip
    publisher = make_client(settings.mqtt, f"retain-publisher-{subject}")
    connect(publisher, settings.mqtt)
    retained = [
        (wire.acc_topic(subject, "left-ankle"), wire.encode_binary(batches["left"][0])),
        (wire.diary_topic(subject), b"coffee at nine"),
    ]
    _publish_all(publisher, retained, retain=True)
    detector = LiveDetector(settings, publish_results=False)
    try:
        detector.start()
        fresh = [(wire.acc_topic("control", "left-ankle"), wire.encode_binary(b)) for b in batches["left"][:3]]
        _publish_all(publisher, fresh)
        assert wait_for(lambda: detector.stats.received >= 3, 20)
        if protocol == "3.1.1":
            assert wait_for(lambda: detector.stats.bad["retained"] == 2, 10), detector.stats.bad
        else:  # MQTT 5: the broker keeps them from us (retain handling 2)
            assert detector.stats.bad["retained"] == 0
        assert subject not in detector.subjects and not any(k[0] == subject for k in detector.core.diary)
    finally:
        detector.stop()
        _publish_all(publisher, [(topic, b"") for topic, _ in retained], retain=True)  # clear them
        publisher.disconnect()
