"""Smoke test of the real services every other test relies on."""

from __future__ import annotations

import queue
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest


def _client(broker, user: str | None, password: str | None) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)
    return client


def test_mqtt_publish_and_receive_with_auth(mosquitto):
    received: queue.Queue = queue.Queue()
    sub = _client(mosquitto, "plm", "plm-test-password")
    sub.on_message = lambda c, u, msg: received.put((msg.topic, msg.payload))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("smoke/#", qos=1)
    sub.loop_start()
    try:
        time.sleep(0.2)
        pub = _client(mosquitto, "plm", "plm-test-password")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        pub.publish("smoke/hello", b"\x00\x01payload", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert received.get(timeout=5) == ("smoke/hello", b"\x00\x01payload")
    finally:
        sub.loop_stop()
        sub.disconnect()


@pytest.mark.parametrize("user,password", [(None, None), ("plm", "wrong-password")])
def test_mqtt_refuses_anonymous_and_bad_password(mosquitto, user, password):
    client = _client(mosquitto, user, password)
    result: queue.Queue = queue.Queue()
    client.on_connect = lambda c, u, flags, reason, props: result.put(reason)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        reason = result.get(timeout=5)
        assert reason.is_failure, f"broker accepted {user!r}"
    finally:
        client.loop_stop()
        client.disconnect()


def test_influxd_v1_write_and_query(influxd):
    body = b"smoke,subject=s1 value=42i 1700000000000"
    req = urllib.request.Request(f"{influxd.url}/write?db=plm&precision=ms", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    result = influxd.query('SELECT "value" FROM "smoke" WHERE "subject" = \'s1\'', database="plm")
    assert result["results"][0]["series"][0]["values"] == [[1700000000000, 42]]


def test_victoria_metrics_v2_write_and_export(victoria):
    now_ms = int(time.time() * 1000)
    body = f"smoke,subject=s1 value=7 {now_ms}".encode()
    req = urllib.request.Request(
        f"{victoria.url}/api/v2/write?org=plm&bucket=plm&precision=ms", data=body, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    rows = victoria.export("smoke_value")
    assert len(rows) == 1
    assert rows[0]["metric"]["subject"] == "s1"
    assert rows[0]["values"] == [7] and rows[0]["timestamps"] == [now_ms]
