"""No configured secret ever appears in logs, status messages, exception texts, CLI output or the
night report: every output is scanned for the secret strings (and their Basic-auth / URL encodings)."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import urllib.parse

import pytest

from detector.live.service import LiveDetector
from detector.reporting.data import InfluxQL, ReportDataError, load_from_influx
from detector.storage.influx import InfluxSink, V1Writer, WriteError
from plm import wire
from plm.config import ConfigError, InfluxSettings, MqttSettings, Settings, load_settings
from plm.mqtt import connect, make_client
from plm.ops.localservices import free_port
from tests.live_helpers import wait_for

pytestmark = pytest.mark.services

MQTT_SECRET = "mqtt-Secret-9f8e7d6c"
INFLUX_SECRET = "influx-Secret-1a2b3c4d"
WRONG_SECRET = "wrong-Secret-5e6f7a8b"


def _forms(secret: str) -> list[str]:
    forms = [secret, urllib.parse.quote(secret, safe="")]
    for user in ("plm", "detector", ""):
        forms.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets or (MQTT_SECRET, INFLUX_SECRET, WRONG_SECRET):
        for form in _forms(secret):
            assert form not in text, (
                f"secret {secret!r} leaked (as {form!r}) in: ...{text[max(0, text.find(form) - 200) : text.find(form) + 50]}"
            )


def test_detector_logs_and_status_hold_no_secret(mosquitto_factory, influxd_factory, tmp_path, caplog) -> None:
    broker = mosquitto_factory(users={"detector": MQTT_SECRET, "sim": MQTT_SECRET})
    influxd = influxd_factory(auth=True)
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        mqtt=MqttSettings(url=broker.url, username="detector", password=MQTT_SECRET),
        # wrong Influx credentials: every write is refused, errors get logged and reported
        influx=InfluxSettings(url=influxd.url, api=1, bucket="plm", username="detector", password=WRONG_SECRET),
        detector={"state_dir": tmp_path / "state", "instance": "leak"},
    )
    statuses: list[bytes] = []
    detector = LiveDetector(settings, status_every_s=0.2)
    detector.start()
    sim = make_client(MqttSettings(url=broker.url, username="sim", password=MQTT_SECRET), "leak-sim")
    sim.on_message = lambda _c, _u, m: statuses.append(bytes(m.payload))
    connect(sim, MqttSettings(url=broker.url, username="sim", password=MQTT_SECRET))
    sim.subscribe([(wire.detector_status_topic("leak"), 1), ("plm/v1/#", 1)])
    try:
        batch = wire.make_batch(1_700_000_000 * 10**9, 52.0, [[0, 0, 1]] * 52)
        sim.publish(wire.acc_topic("leak01", "left-ankle"), wire.encode_binary(batch), qos=1).wait_for_publish(5)
        sim.publish(wire.acc_topic("leak01", "left-ankle"), b"\x50garbage", qos=1).wait_for_publish(5)
        sim.publish("plm/v1/leak01/_diary", b'{"bad": 1}', qos=1).wait_for_publish(5)
        assert wait_for(lambda: detector.stats.received >= 3, 20)
        assert wait_for(lambda: detector.sink.metrics().retries >= 1 or detector.sink.last_error is not None, 20)
        assert wait_for(lambda: len(statuses) >= 3, 10)
        last_error = str(detector.sink.last_error)
    finally:
        detector.stop()
        sim.disconnect()
    text = caplog.text + "\n".join(s.decode(errors="replace") for s in statuses) + last_error
    assert "401" in text or "auth" in text.lower(), "the refused writes were not reported at all"
    assert_clean(text)


def test_exceptions_hold_no_secret(influxd_factory, tmp_path) -> None:
    influxd = influxd_factory(auth=True)
    wrong = InfluxSettings(url=influxd.url, api=1, bucket="plm", username="detector", password=WRONG_SECRET)
    with pytest.raises(WriteError) as refused:
        V1Writer(wrong).write("m v=1 1")
    down = InfluxSettings(url=f"http://127.0.0.1:{free_port()}", api=2, token=INFLUX_SECRET)
    with pytest.raises(WriteError) as unreachable:
        V1Writer(down).write("m v=1 1")
    with pytest.raises(ReportDataError) as report_refused:
        InfluxQL(wrong).query("SELECT * FROM night")
    with pytest.raises(ReportDataError) as report_down:
        load_from_influx(InfluxQL(down), "leak01", None, None)
    sink = InfluxSink(down, tmp_path / "outbox.sqlite", initial_backoff_s=0.05)
    try:
        sink.put(["m v=1 1"])
        sink.flush(0.5)
        metrics = repr(sink.metrics()) + str(sink.last_error)
    finally:
        sink.close()
    texts = [repr(e.value) + str(e.value) for e in (refused, unreachable, report_refused, report_down)] + [metrics]
    assert_clean("\n".join(texts))


def test_config_errors_hold_no_secret(tmp_path, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("PLM_")]:
        monkeypatch.delenv(key)
    bad = tmp_path / "plm.toml"
    bad.write_text(
        f'[mqtt]\nurl = "ftp://nowhere"\npassword = "{MQTT_SECRET}"\n'
        f'[influx]\nurl = "http://x"\ntoken = "{INFLUX_SECRET}"\ntimeout_s = -1\nusername = "u"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(bad)
    assert "mqtt.url" in str(exc.value) or "url" in str(exc.value)
    assert_clean(str(exc.value) + repr(exc.value))
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[mqtt]\npassword = "{MQTT_SECRET}\n')  # unterminated string: a TOML syntax error
    with pytest.raises(ConfigError) as syntax:
        load_settings(broken)
    assert_clean(str(syntax.value))
    good = tmp_path / "good.toml"
    good.write_text(f'[mqtt]\npassword = "{MQTT_SECRET}"\n[influx]\ntoken = "{INFLUX_SECRET}"\n')
    settings = load_settings(good)
    assert set(settings.secrets()) == {MQTT_SECRET, INFLUX_SECRET}
    assert_clean(repr(settings) + str(settings) + settings.model_dump_json())


def test_plm_detect_refused_by_the_broker_prints_no_secret(mosquitto_factory, tmp_path) -> None:
    broker = mosquitto_factory(users={"detector": MQTT_SECRET})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLM_")}
    env.update(
        PLM_MQTT__URL=broker.url, PLM_MQTT__USERNAME="detector", PLM_MQTT__PASSWORD=WRONG_SECRET,
        PLM_INFLUX__URL=f"http://127.0.0.1:{free_port()}", PLM_INFLUX__TOKEN=INFLUX_SECRET,
        PLM_DETECTOR__STATE_DIR=str(tmp_path / "state"), PLM_LOG_LEVEL="DEBUG",
    )  # fmt: skip
    cmd = [sys.executable, "-c", "import sys; from plm.cli import main; sys.exit(main())", "detect"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        out, code = (exc.stdout or b"").decode() + (exc.stderr or b"").decode(), None
    assert code != 0, f"plm detect started with a wrong password: {out[-500:]}"
    assert out.strip(), "plm detect failed silently"
    assert_clean(out)


@pytest.mark.services
def test_night_report_and_its_errors_hold_no_secret(influxd_factory, mosquitto, tmp_path) -> None:
    """The report is the document most likely to be shared (printed, mailed to a doctor)."""
    from tests.pipeline_fill import fill_influx_live

    influxd = influxd_factory()
    fill_influx_live(influxd, mosquitto, tmp_path / "detector", "leaky", nights=1, duration_h=0.5)
    config = tmp_path / "plm.toml"
    config.write_text(f'[influx]\nurl = "{influxd.url}"\napi = 1\nusername = "reader"\n')
    env = {**os.environ, "PLM_INFLUX__PASSWORD": INFLUX_SECRET, "PLM_MQTT__PASSWORD": MQTT_SECRET}
    out = tmp_path / "night.html"
    ok = subprocess.run(
        [sys.executable, "-m", "plm.cli", "--config", str(config), "report", "--subject", "leaky", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "does not diagnose" in out.read_text()
    down = tmp_path / "down.toml"
    down.write_text(f'[influx]\nurl = "http://127.0.0.1:{free_port()}"\napi = 1\nusername = "reader"\n')
    failed = subprocess.run(
        [sys.executable, "-m", "plm.cli", "--config", str(down), "report", "--subject", "leaky", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert failed.returncode != 0
    assert_clean(ok.stdout + ok.stderr + out.read_text() + failed.stdout + failed.stderr)
