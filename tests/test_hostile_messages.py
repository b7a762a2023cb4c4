"""Hostile messages cannot stop the live detector (issue #16).

Structurally valid JSON (and binary batches) with hostile values in every field of every payload kind go
through ``LiveDetector.apply_many`` -- the path of the live service and of the journal replay alike. The
wire boundary must refuse each bad value with a ``bad_<reason>`` count: an exception that escapes fails the
test, and so does a dead letter (the defence in depth below the boundary is not meant to be reached by input).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.live.service import LiveDetector
from plm import wire
from plm.config import InfluxSettings, Settings


class Raw(str):
    """A JSON token written as it is: what ``json.dumps`` cannot make (a 5,000-digit integer, ``1e400``)."""


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # NaN and Infinity come out as the bare tokens Python's json reads back


NOW_NS = time.time_ns()
HOSTILE_TOKENS = [
    Raw("1e400"), Raw("-1e400"), Raw("1e-400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("-0"),
    Raw("9" * 5000), Raw("-" + "9" * 4301), Raw("1" + "0" * 400), Raw("[" * 3000 + "]" * 3000),
    Raw('{"a":' * 600 + "1" + "}" * 600), 2**63, 2**64, -(2**63) - 1, 2**32, -1, 0, 0.5, 1.5, True, False, None,
    "", "x", "\x00\n\r", "online", "left", "9" * 300, NOW_NS, -NOW_NS, NOW_NS * 1000, 1e300, 1e-300,
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_TOKENS)
)
hostile = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
)


def field_values(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a hostile value, sometimes a valid one, so later checks are reached as well as the first."""
    return st.one_of(hostile, valid)


# every field each schema knows, plus unknown ones; the assertions below fail if a schema gains a field
STATUS_VALID = {
    "state": st.sampled_from(wire.SENSOR_STATES),
    "side": st.sampled_from(["left", "right"]),
    "model": st.text(max_size=20),
    "battery_pct": st.integers(0, 100),
    "rssi_dbm": st.integers(-100, 0),
    "rate_hz": st.sampled_from([25.0, 52.0, 100]),
    "frames_received": st.integers(0, 10**6),
    "frames_dropped": st.integers(0, 10),
    "queue_depth": st.integers(0, 10),
    "time_ns": st.just(NOW_NS),
    "samples_lost": st.integers(0, 5),  # the collector's diagnostic extras
    "last_error": st.none() | st.text(max_size=20),
    "anything": st.integers(),
}
ACC_JSON_VALID = {
    "v": st.just(1),
    "t0": st.just(NOW_NS - 10**9),
    "rate": st.sampled_from([52.0, 25]),
    "seq": st.integers(0, 2**32 - 1),
    "n": st.just(2),
    "acc": st.just([[0.0, 0.0, 1.0], [0.01, -0.02, 0.98]]),
}
DIARY_VALID = {
    "text": st.text(max_size=40),
    "tags": st.lists(st.sampled_from(["caffeine", "alcohol", "my tag"]), max_size=3),
    "time": st.sampled_from([time.time(), "2024-03-01T21:30:00+01:00"]),
}
ACK_VALID = {"until_ns": st.integers(0, 2**63 - 1)}


def documents(valid: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={k: field_values(v) for k, v in valid.items()})


def test_the_fuzz_covers_every_field_of_every_schema() -> None:
    assert set(wire.StatusPayload.model_fields) <= set(STATUS_VALID)
    assert set(wire.AckPayload.model_fields) <= set(ACK_VALID)
    assert {"v", "t0", "rate", "seq", "acc"} <= set(ACC_JSON_VALID)
    assert {"text", "tags", "time"} <= set(DIARY_VALID)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> LiveDetector:
    state = Path(tmp_path_factory.mktemp("hostile"))
    settings = Settings(influx=InfluxSettings(url="http://127.0.0.1:9", api=1), detector={"state_dir": state})
    live = LiveDetector(settings, publish_results=False)
    yield live
    live.sink.close()
    live.journal.close()


def _apply_and_check(detector: LiveDetector, topic: str, payload: bytes) -> None:
    received, dead = detector.stats.received, detector.journal.dead_letter_total
    detector.apply_many([(topic, payload)])  # anything it raises fails the test, with the input shown
    assert detector.stats.received == received + 1
    assert detector.journal.dead_letter_total == dead, (
        f"reached the dead-letter table, so the wire boundary let it through: "
        f"{detector.journal.dead_letters(1)[0]['error']} for {payload[:300]!r}"
    )


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(doc=documents(STATUS_VALID), side=st.sampled_from(["left-ankle", "right-ankle", "ankle"]))
def test_status_with_hostile_fields(detector, doc, side) -> None:
    _apply_and_check(detector, wire.status_topic("fuzzstatus", side), dump(doc).encode())


@FUZZ
@given(doc=documents(ACC_JSON_VALID), sensor=st.sampled_from(["left-ankle", "right-ankle"]))
def test_json_batches_with_hostile_fields(detector, doc, sensor) -> None:
    _apply_and_check(detector, wire.acc_topic("fuzzjson", sensor), dump(doc).encode())


@FUZZ
@given(
    triples=st.lists(st.lists(hostile, min_size=0, max_size=4), min_size=1, max_size=4),
    sensor=st.sampled_from(["left-ankle", "right-ankle"]),
)
def test_json_samples_with_hostile_values(detector, triples, sensor) -> None:
    doc = {"v": 1, "t0": NOW_NS - 5 * 10**9, "rate": 52.0, "acc": triples}
    _apply_and_check(detector, wire.acc_topic("fuzzsamples", sensor), dump(doc).encode())


@FUZZ
@given(
    header=st.tuples(
        st.sampled_from([wire.BINARY_MAGIC]),
        st.integers(0, 255),
        st.integers(0, 2**16 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(-(2**63), 2**63 - 1) | st.sampled_from([NOW_NS, NOW_NS - 10**9, wire.EARLIEST_NS - 1]),
        st.floats(width=32) | st.sampled_from([52.0, 0.0, 1000.0, 1000.5]),
        st.integers(0, 2**16 - 1) | st.just(3),
    ),
    body=st.binary(max_size=64) | st.just(b"\xff\x7f" * 9),
)
def test_binary_batches_with_hostile_header_fields(detector, header, body) -> None:
    payload = struct.pack("<BBHIqfH", *header) + body
    _apply_and_check(detector, wire.acc_topic("fuzzbinary", "left-ankle"), payload)


@FUZZ
@given(doc=documents(DIARY_VALID) | hostile | st.text(max_size=50))
def test_diary_with_hostile_fields(detector, doc) -> None:
    payload = doc.encode() if isinstance(doc, str) and not isinstance(doc, Raw) else dump(doc).encode()
    _apply_and_check(detector, wire.diary_topic("fuzzdiary"), payload)


@FUZZ
@given(doc=documents(ACK_VALID) | hostile)
def test_ack_with_hostile_fields(doc) -> None:
    """The collector's side of the wire: an ack either decodes to a usable mark or is a WireFormatError."""
    try:
        until = wire.decode_ack(dump(doc).encode())
    except wire.WireFormatError:
        return
    assert isinstance(until, int) and 0 <= until < 2**63


ISSUE_PAYLOADS = [
    b'{"state":"online","side":"left","battery_pct":"x"}',
    b'{"state":"online","side":"left","frames_dropped":1.5}',
    b'{"state":"online","side":"left","time_ns":"x"}',
    b'{"state":"online","side":"left","battery_pct":1e400}',
    b'{"state":"online","side":"left","time_ns":-1}',
    b'{"state":"online","side":"left","time_ns":1e300}',
    b'{"state":"online","side":"left","battery_pct":' + b"9" * 4400 + b"}",
]


@pytest.mark.parametrize("payload", ISSUE_PAYLOADS, ids=range(len(ISSUE_PAYLOADS)))
def test_the_reported_poison_statuses_are_counted(detector, payload) -> None:
    bad = sum(detector.stats.bad.values())
    _apply_and_check(detector, wire.status_topic("poisoned", "left-ankle"), payload)
    assert sum(detector.stats.bad.values()) == bad + 1


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (wire.acc_topic("poisoned", "left-ankle"), b'{"v":1,"t0":' + b"9" * 4400 + b',"rate":52,"acc":[[0,0,1]]}'),
        (wire.diary_topic("poisoned"), b'{"text":"x","time":' + b"9" * 4400 + b"}"),
        (wire.diary_topic("poisoned"), b'{"text":"x","time":1e400}'),
    ],
    ids=["acc-int-limit", "diary-int-limit", "diary-overflow"],
)
def test_int_string_limit_and_overflow_are_counted(detector, topic, payload) -> None:
    bad = sum(detector.stats.bad.values())
    _apply_and_check(detector, topic, payload)
    assert sum(detector.stats.bad.values()) == bad + 1
