"""Fuzzing every parser that meets outside bytes, with a short fixed budget (the bench run is
``python -m bench.fuzz``, >= 100,000 inputs per parser). A parser may accept an input or raise its
documented error type (docs/reliability.md lists them); anything else fails the test with the input."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import NOW_NS, clean_config_env, run_target, targets
from detector.storage.diary import DiaryError, parse_diary_payload
from plm import wire

CI_INPUTS = {"config.load_settings": 150, "csv.read_leg_csv": 500, "score_events.read_events": 500,
             "score_events.read_gaps": 500}  # fmt: skip  # file-based targets are slower
DEFAULT_INPUTS = 2000

TARGETS = {t.name: t for t in targets()}


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.filterwarnings("ignore::UserWarning")  # numpy's "input contained no data" is not an error
def test_mutated_inputs_raise_only_documented_errors(name: str) -> None:
    target = TARGETS[name]
    with clean_config_env():
        result = run_target(target, CI_INPUTS.get(name, DEFAULT_INPUTS), seed=int(os.environ.get("PLM_FUZZ_SEED", 9)))
    assert not result.crashes, f"{name}: {result.crashes[0][1]} on input {result.crashes[0][0][:200]!r}"
    assert result.accepted > 0, "no input was accepted: the seeds are broken, the fuzzer tests nothing"
    if target.allowed:
        assert result.rejected > 0, "no input was rejected: the mutations do not reach the parser's checks"


# ----------------------------------------------------------------------------- structured (hypothesis)

finite = st.floats(min_value=-16, max_value=16, allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start_s=st.floats(min_value=9e8, max_value=2e9),
    rate=st.floats(min_value=0.0, max_value=1000.0) | st.sampled_from([52.0, 50.0, 100.0]),
    xyz=st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=40),
    seq=st.integers(min_value=0, max_value=2**32 - 1),
    use_json=st.booleans(),
)
def test_valid_batches_round_trip(start_s, rate, xyz, seq, use_json) -> None:
    """Whatever make_batch accepts, both encodings carry losslessly enough (binary: 16-bit milli-g)."""
    try:
        batch = wire.make_batch(round(start_s * 1e9), rate, xyz, seq, now_ns=NOW_NS)
    except wire.WireFormatError:
        return
    payload = wire.encode_json(batch) if use_json else wire.encode_binary(batch)
    back = wire.decode(payload, now_ns=NOW_NS)
    assert back.count == batch.count and back.seq == batch.seq
    assert back.start_ns == batch.start_ns
    assert math.isclose(back.rate_hz, batch.rate_hz, rel_tol=1e-6)
    assert np.allclose(back.xyz, batch.xyz, atol=1.01e-3)


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["v", "t0", "rate", "n", "seq", "acc", "x"]), json_values, max_size=7))
def test_json_batches_with_any_field_types(doc) -> None:
    try:
        batch = wire.decode(json.dumps(doc).encode(), now_ns=NOW_NS)
    except wire.WireFormatError:
        return
    assert np.isfinite(batch.xyz).all() and batch.xyz.shape == (batch.count, 3)


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["state", "side", "battery_pct", "rssi_dbm", "rate_hz", "time_ns",
                                            "queue_depth", "extra", "model"]), json_values, max_size=8))  # fmt: skip
def test_status_with_any_field_types(doc) -> None:
    try:
        status = wire.decode_status(json.dumps(doc).encode())
    except wire.WireFormatError:
        return
    assert status.state in wire.SENSOR_STATES


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["text", "tags", "time"]), json_values, max_size=3) | json_values)
def test_diary_with_any_json(doc) -> None:
    try:
        note = parse_diary_payload(json.dumps(doc).encode())
    except DiaryError:
        return
    assert note.text is not None
