"""The detector's ack marks (detector/live/acks.py): never past a hole, whatever the arrival order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.live.acks import AckMark
from plm import wire

T0 = 1_700_000_000 * 10**9


def _batch(i: int, seq: int | None = None, t0: int = T0) -> wire.SampleBatch:
    return wire.SampleBatch(t0 + i * 10**9, 52.0, np.zeros((52, 3), np.float32), i if seq is None else seq)


def test_ack_payload_round_trip_and_errors() -> None:
    assert wire.decode_ack(wire.encode_ack(123)) == 123
    assert wire.ack_topic("alice", "left-ankle") == "plm/v1/alice/left-ankle/ack"
    for bad in (b"", b"[]", b'{"until_ns":-1}', b'{"until_ns":1.5}', b'{"until_ns":true}', b"{}"):
        with pytest.raises(wire.WireFormatError):
            wire.decode_ack(bad)


@given(st.permutations(range(1, 30)), st.sets(st.integers(1, 29), max_size=4), st.booleans())
def test_mark_never_passes_a_missing_batch(order, missing, with_seq) -> None:
    mark = AckMark()
    mark.add(_batch(0, None if with_seq else 0))
    for i in order:
        if i not in missing:
            mark.add(_batch(i, None if with_seq else 0))
            mark.add(_batch(i, None if with_seq else 0))  # a redelivery changes nothing
    first_hole = min(missing, default=30)
    assert mark.until_ns == _batch(first_hole - 1).end_ns
    for i in sorted(missing):  # the holes filled (a republication after a broker restart)
        mark.add(_batch(i, None if with_seq else 0))
    assert mark.until_ns == _batch(29).end_ns and mark.runs == []


def test_seq_bridges_a_time_gap_and_a_reset_starts_a_new_stream() -> None:
    mark = AckMark()
    mark.add(_batch(0))
    mark.add(_batch(5, seq=1))  # samples lost at the sensor: the collector's seq still says "next batch"
    assert mark.until_ns == _batch(5).end_ns
    mark.add(_batch(9, seq=7))  # a seq gap and a time gap: a hole
    assert mark.until_ns == _batch(5).end_ns
    mark.add(_batch(20, seq=0))  # a restarted collector counts from 0 again, later in time
    assert mark.until_ns == _batch(20).end_ns
    mark.add(_batch(3, seq=0))  # old data (a clock jumped back): covered, changes nothing
    assert mark.until_ns == _batch(20).end_ns
