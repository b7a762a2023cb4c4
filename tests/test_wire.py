"""The MQTT wire format: round trips, every malformed-payload class, fuzzing, topics."""

from __future__ import annotations

import contextlib
import json
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plm import wire
from plm.wire import WireFormatError

NOW_NS = 1_790_000_000 * 10**9  # a fixed "now" so tests don't depend on the clock


def _batch(n: int = 52, rate: float = 52.0, start_ns: int = NOW_NS - 10**9, seq: int = 7) -> wire.SampleBatch:
    rng = np.random.default_rng(n)
    xyz = rng.normal(0, 0.3, (n, 3)).astype(np.float32)
    xyz[:, 2] += 1.0
    return wire.make_batch(start_ns, rate, xyz, seq, now_ns=NOW_NS)


# ----------------------------------------------------------------------------- round trips


samples = arrays(np.float32, st.tuples(st.integers(1, 60), st.just(3)), elements=st.floats(-32.0, 32.0, width=32))


@given(
    xyz=samples,
    rate=st.floats(1.0, 1000.0),
    start=st.integers(wire.EARLIEST_NS, NOW_NS),
    seq=st.integers(0, 2**32 - 1),
)
def test_binary_round_trip_within_quantisation(xyz, rate, start, seq):
    batch = wire.make_batch(start, rate, xyz, seq, now_ns=NOW_NS)
    back = wire.decode(wire.encode_binary(batch), now_ns=NOW_NS)
    assert back.start_ns == start and back.seq == seq and back.count == batch.count
    assert back.rate_hz == pytest.approx(rate, rel=1e-6)  # float32 on the wire
    assert np.abs(back.xyz - xyz).max() <= 0.0005 + 8e-6  # half a milli-g plus float32 rounding at 32 g


@given(xyz=samples, rate=st.floats(1.0, 1000.0), start=st.integers(wire.EARLIEST_NS, NOW_NS))
def test_json_round_trip_and_both_encodings_agree(xyz, rate, start):
    batch = wire.make_batch(start, rate, xyz, 3, now_ns=NOW_NS)
    from_json = wire.decode(wire.encode_json(batch), now_ns=NOW_NS)
    from_binary = wire.decode(wire.encode_binary(batch), now_ns=NOW_NS)
    assert from_json.start_ns == from_binary.start_ns == start
    assert from_json.seq == from_binary.seq == 3
    assert np.abs(from_json.xyz - xyz).max() <= 0.00005 + 1e-6
    assert np.abs(from_json.xyz - from_binary.xyz).max() <= 0.0006


def test_documented_binary_example_decodes():
    """The worked example in docs/wire-format.md, byte for byte."""
    payload = bytes.fromhex(
        "50 01 0000 2a000000 00807bb163b39c17 00005042 0200  0b00 f1ff e803  0c00 f0ff e703".replace(" ", "")
    )
    batch = wire.decode(payload, now_ns=NOW_NS)
    assert batch.seq == 42 and batch.rate_hz == 52.0 and batch.count == 2
    assert batch.start_ns == 1_701_432_000_000_000_000
    np.testing.assert_allclose(batch.xyz, [[0.011, -0.015, 1.0], [0.012, -0.016, 0.999]], atol=1e-6)
    assert wire.encode_binary(batch) == payload


def test_documented_json_example_decodes():
    payload = b'{"v":1,"t0":1701432000000000000,"rate":52,"seq":42,"acc":[[0.011,-0.015,1.0],[0.012,-0.016,0.999]]}'
    batch = wire.decode(payload, now_ns=NOW_NS)
    assert batch.count == 2 and batch.start_ns == 1_701_432_000_000_000_000 and batch.seq == 42
    np.testing.assert_allclose(batch.timestamps_s() - batch.timestamps_s()[0], [0, 1 / 52], atol=1e-6)


def test_timestamps_and_end():
    batch = _batch(n=52, rate=52.0)
    ts = batch.timestamps_ns()
    assert ts[0] == batch.start_ns and len(ts) == 52
    assert batch.end_ns - batch.start_ns == 10**9
    assert np.all(np.diff(ts) > 0)


# ----------------------------------------------------------------------------- malformed payloads


def _binary(count=2, version=1, rate=52.0, start_ns=NOW_NS - 10**9, body=None) -> bytes:
    header = struct.pack("<BBHIqfH", 0x50, version, 0, 1, start_ns, rate, count)
    return header + (body if body is not None else b"\x00\x00" * 3 * count)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"", "empty"),
        (b"\x50\x01\x00", "truncated"),
        (_binary(version=2), "unknown binary wire version 2"),
        (_binary(count=3, body=b"\x00" * 12), "count mismatch"),
        (_binary(count=0, body=b""), "no samples"),
        (_binary(rate=0.5), "sample rate"),
        (_binary(rate=1500.0), "sample rate"),
        (_binary(rate=float("nan")), "sample rate"),
        (_binary(start_ns=10**17), "before 2000"),
        (_binary(start_ns=NOW_NS + 2 * 86_400 * 10**9), "future"),
        (b"\x50" + b"\x00" * (70 * 1024), "exceeds"),
        (b"\x13garbage", "unknown encoding"),
        (b"{not json", "invalid JSON"),
        (b"[1,2,3]", "must be an object"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52}', "lacks field"),
        (b'{"v":2,"t0":1701432000000000000,"rate":52,"acc":[[0,0,1]]}', "unknown JSON wire version"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"acc":[[0,0,NaN]]}', "NaN"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"acc":[[0,0,Infinity]]}', "Infinity"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"acc":[[0,0,1e400]]}', "NaN or infinity"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"acc":[[0,0]]}', "triples"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"acc":[]}', "sample count 0"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"n":3,"acc":[[0,0,1]]}', "count mismatch"),
        (b'{"v":1,"t0":1701432000000000000,"rate":2000,"acc":[[0,0,1]]}', "sample rate"),
        (b'{"v":1,"t0":1701432000.5,"rate":52,"acc":[[0,0,1]]}', "integer of ns"),
        (b'{"v":1,"t0":1701432000,"rate":52,"acc":[[0,0,1]]}', "before 2000"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"acc":[[0,0,40.0]]}', "m/s"),
        (b'{"v":1,"t0":1701432000000000000,"rate":52,"seq":-1,"acc":[[0,0,1]]}', "seq"),
        (b'{"v":1,"t0":1701432000000000000,"rate":"52","acc":[[0,0,1]]}', "must be a number"),
        (b'{"v":1,"t0":1701432000000000000,"rate":true,"acc":[[0,0,1]]}', "must be a number"),
        (b'{"v":1,"t0":1701432000000000000,"rate":1' + b"0" * 400 + b',"acc":[[0,0,1]]}', "sample rate"),
        (b'{"v":1,"t0":1' + b"0" * 400 + b',"rate":5,"acc":[[0,0,1]]}', "future"),
        (b'{"v":1,"t0":1701432000000000000,"rate":5,"acc":[[0,0,1' + b"0" * 400 + b"]]}", "not numbers"),
        (b'{"v":1,"t0":1701432000000000000,"rate":5,"seq":1' + b"0" * 400 + b',"acc":[[0,0,1]]}', "seq"),
        (b"{" * 100_000, "exceeds"),
        (b'{"a":' * 5000, "JSON"),
        (b"{\xff\xfe}", "UTF-8"),
    ],
)
def test_malformed_payloads_raise_wire_format_error_naming_the_problem(payload, fragment):
    with pytest.raises(WireFormatError) as info:
        wire.decode(payload, now_ns=NOW_NS)
    assert fragment.lower() in str(info.value).lower()


def test_non_bytes_payload_is_rejected():
    with pytest.raises(WireFormatError, match="bytes"):
        wire.decode("text")  # type: ignore[arg-type]


def test_default_now_is_the_clock():
    batch = wire.make_batch(time.time_ns(), 52, np.zeros((1, 3)))
    assert wire.decode(wire.encode_binary(batch)).start_ns == batch.start_ns


# ----------------------------------------------------------------------------- fuzz


@settings(max_examples=2000)
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes_raise_only_wire_format_error(payload):
    try:
        batch = wire.decode(payload, now_ns=NOW_NS)
    except WireFormatError:
        return
    assert batch.count >= 1 and np.isfinite(batch.xyz).all()


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_fuzz_binary_with_valid_header_prefix(tail):
    with contextlib.suppress(WireFormatError):
        wire.decode(b"\x50\x01" + tail, now_ns=NOW_NS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])  # generation is slow on a loaded machine
@given(
    st.fixed_dictionaries(
        {},
        optional={"v": json_values, "t0": json_values, "rate": json_values, "seq": json_values, "acc": json_values},
    )
)
def test_fuzz_json_shapes_raise_only_wire_format_error(doc):
    with contextlib.suppress(WireFormatError):
        wire.decode(json.dumps(doc).encode(), now_ns=NOW_NS)


# ----------------------------------------------------------------------------- topics and status


def test_topics():
    assert wire.acc_topic("alice", "left-ankle") == "plm/v1/alice/left-ankle/acc"
    assert wire.status_topic("alice", "left-ankle") == "plm/v1/alice/left-ankle/status"
    parsed = wire.parse_sensor_topic("plm/v1/alice/left-ankle/acc")
    assert (parsed.subject, parsed.sensor, parsed.kind) == ("alice", "left-ankle", "acc")
    assert wire.night_topic("alice") == "plm/v1/alice/_night"
    # the detector's own status must not look like a sensor status to `plm/v1/+/+/status` subscribers
    assert wire.detector_status_topic("detector").count("/") == 3


@pytest.mark.parametrize(
    "bad", ["", "a/b", "+", "#", "a+", "_hidden", "-x", "x" * 33, "with space", "ünïcode", "a\x00", None, 5]
)
def test_ids_are_validated(bad):
    with pytest.raises(WireFormatError, match="invalid"):
        wire.acc_topic(bad, "left")
    with pytest.raises(WireFormatError, match="invalid"):
        wire.status_topic("alice", bad)


@pytest.mark.parametrize(
    "topic",
    ["plm/v1/alice/left/acc/x", "plm/v2/alice/left/acc", "plm/v1/alice/left/other", "plm/v1/_detector/x/status"],
)
def test_foreign_topics_are_rejected(topic):
    with pytest.raises(WireFormatError):
        wire.parse_sensor_topic(topic)


def test_status_round_trip_and_validation():
    status = wire.SensorStatus(state="online", side="left", battery_pct=80, frames_dropped=2, extra={"fw": "3.1"})
    back = wire.decode_status(wire.encode_status(status))
    assert back == status
    for bad in (b"{}", b'{"state":"sleepy"}', b"nope", b'{"state":"online","side":"middle"}'):
        with pytest.raises(WireFormatError):
            wire.decode_status(bad)
