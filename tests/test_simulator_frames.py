"""Device frames: the simulator's Polar PMD and WitMotion byte streams decode back to the same samples.

A small reference decoder here (written from ble-devices.md, bit by bit, independent of the encoder)
checks the spec vectors and the encoder; the collector's own decoders are checked too when present.
"""

from __future__ import annotations

import importlib.util
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import simulate_night
from simulator.frames import (
    POLAR_EPOCH_NS,
    POLAR_UNSET_CLOCK_NS,
    encode_pmd_delta,
    encode_pmd_raw,
    pmd_features,
    pmd_settings_response,
    pmd_start_response,
    polar_acc_frames,
    witmotion_notifications,
    witmotion_packets,
)

HAVE_COLLECTOR = importlib.util.find_spec("collector.polar_pmd") is not None


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def ref_decode_pmd(frame: bytes, resolution: int = 16, channels: int = 3) -> tuple[int, int, list[list[int]]]:
    """(device timestamp ns since 2000, frame type, samples) by the letter of the spec."""
    assert frame[0] == 2
    ts = int.from_bytes(frame[1:9], "little")
    ftype = frame[9]
    body = frame[10:]
    width = math.ceil(resolution / 8)
    if not ftype & 0x80:
        w = {0: 1, 1: 2, 2: 3}[ftype]
        assert len(body) % (w * channels) == 0
        vals = [_signed(int.from_bytes(body[i : i + w], "little"), 8 * w) for i in range(0, len(body), w)]
        return ts, ftype, [vals[i : i + channels] for i in range(0, len(vals), channels)]
    ref = [_signed(int.from_bytes(body[i * width : (i + 1) * width], "little"), 8 * width) for i in range(channels)]
    out = [ref]
    pos = channels * width
    while pos < len(body):
        bits, count = body[pos], body[pos + 1]
        pos += 2
        nbytes = math.ceil(bits * count * channels / 8)
        stream = int.from_bytes(body[pos : pos + nbytes], "little")
        pos += nbytes
        k = 0
        for _ in range(count):  # exactly the declared count, never "until the buffer is empty"
            prev = out[-1]
            sample = []
            for c in range(channels):
                delta = _signed((stream >> k) & ((1 << bits) - 1), bits)
                k += bits
                sample.append(prev[c] + delta)
            out.append(sample)
    return ts, ftype, out


def ref_decode_witmotion(stream: bytes) -> np.ndarray:
    assert len(stream) % 20 == 0
    rows = []
    for i in range(0, len(stream), 20):
        assert stream[i : i + 2] == b"\x55\x61"
        rows.append(struct.unpack_from("<9h", stream, i + 2))
    return np.array(rows, dtype=np.int64)


# ----------------------------------------------------------------------------- spec vectors


def test_reference_decoder_reads_the_spec_vectors():
    v1 = bytes.fromhex("02" + "00" * 8 + "81" + "D0FF6501E40F" + "081D" + "FC07FF" + "0C13F2")
    _, _, s = ref_decode_pmd(v1)
    assert s[:3] == [[-48, 357, 4068], [-52, 364, 4067], [-40, 383, 4053]]
    v2 = bytes.fromhex("02009435770000000001" + "F7FFFFFFE703F8FFFEFFE503")
    ts, ftype, s = ref_decode_pmd(v2)
    assert (ts, ftype, s) == (2_000_000_000, 1, [[-9, -1, 999], [-8, -2, 997]])
    v3 = bytes.fromhex("02650000000000000081F1FF1400F00306017B0F08")
    assert ref_decode_pmd(v3)[2] == [[-15, 20, 1008], [-20, 17, 1008]]
    v4 = bytes.fromhex("02" + "00" * 8 + "81" + "FFFFFFFFFFFF0303AAAACCCF0302AAAACC")
    assert ref_decode_pmd(v4)[2] == [[-1, -1, -1], [1, -4, 1], [-2, -2, 2], [1, -4, 1], [3, -7, 3], [0, -5, 4]]
    wit = bytes.fromhex("5561fcffefff1108000000000000" + "98ff0d00f831")
    raw = ref_decode_witmotion(wit)[0]
    np.testing.assert_allclose(raw[:3] / 32768 * 16, [-0.0020, -0.0083, 1.0083], atol=1e-4)
    np.testing.assert_allclose(raw[6:] / 32768 * 180, [-0.571, 0.071, 70.269], atol=1e-3)


def test_encoder_reproduces_the_spec_vectors():
    raw = encode_pmd_raw(2_000_000_000, np.array([[-9, -1, 999], [-8, -2, 997]]))
    assert raw == bytes.fromhex("02009435770000000001F7FFFFFFE703F8FFFEFFE503")
    v3 = encode_pmd_delta(0x65, np.array([[-15, 20, 1008], [-20, 17, 1008]]), bits=6)
    spec = bytes.fromhex("02650000000000000081F1FF1400F00306017B0F08")
    assert v3[:-1] == spec[:-1]  # the device leaves junk in the padding bits of the last byte
    assert v3[-1] == spec[-1] & 0x03, "the 18 used bits agree"
    assert ref_decode_pmd(v3)[2] == ref_decode_pmd(spec)[2]
    v1 = encode_pmd_delta(0, np.array([[-48, 357, 4068], [-52, 364, 4067], [-40, 383, 4053]]), bits=8, block_size=29)
    assert v1[10:] == bytes.fromhex("D0FF6501E40F" + "0802" + "FC07FF" + "0C13F2")
    samples = [[-1, -1, -1], [1, -4, 1], [-2, -2, 2], [1, -4, 1], [3, -7, 3], [0, -5, 4]]
    v4 = encode_pmd_delta(0, np.array(samples), block_size=3)
    assert v4[10:18] == bytes.fromhex("FFFFFFFFFFFF0303")
    assert ref_decode_pmd(v4)[2] == samples
    wit = witmotion_packets(
        np.array([[-4, -17, 2065]]) * 16 / 32768, np.zeros((1, 3)), np.array([[-104, 13, 12792]]) * 180 / 32768
    )
    assert wit == bytes.fromhex("5561fcffefff110800000000000098ff0d00f831")


def test_control_point_answers():
    assert pmd_features() == bytes([0x0F, 0b0110_1110])
    resp = pmd_settings_response(rates=(52,), resolutions=(16,), ranges=(245, 500, 1000, 2000), channels=3)
    # spec vector 6: F0 op=1 type=2 status=0 more=0, then the parameters
    assert resp == bytes.fromhex("F001020000" + "000134000101100002 04F500F401E803D007 040103".replace(" ", ""))
    assert pmd_start_response() == bytes.fromhex("F002020000")
    assert pmd_start_response(factor=0.5)[5:] == bytes([5, 1]) + struct.pack("<f", 0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(*[st.integers(-8000, 8000)] * 3), min_size=1, max_size=80),
    st.integers(1, 40),
)
def test_delta_roundtrip_any_samples(samples, block):
    frame = encode_pmd_delta(123, np.array(samples), block_size=block)
    assert ref_decode_pmd(frame)[2] == [list(s) for s in samples]


# ----------------------------------------------------------------------------- whole nights


@pytest.fixture(scope="module")
def night():
    return simulate_night("rls-moderate", seed=24, duration_h=0.3, drops=True, gap=False)  # drops on both legs


@pytest.mark.parametrize("compressed", [True, False])
def test_polar_frames_decode_to_the_same_samples_and_device_times(night, compressed):
    leg = night.legs["left"]
    notes = list(polar_acc_frames(leg, compressed=compressed))
    samples, stamps = [], []
    for note in notes:
        ts, ftype, s = ref_decode_pmd(note.data)
        assert ftype == (0x81 if compressed else 0x01)
        if not compressed:
            assert len(note.data) <= 229, "fits an MTU-232 notification"
        samples.extend(s)
        stamps.append(ts + POLAR_EPOCH_NS)
    np.testing.assert_array_equal(np.array(samples), leg.milli_g)
    np.testing.assert_allclose(np.array(samples) / 1000, leg.xyz, atol=0.0005)
    ends = np.cumsum([len(ref_decode_pmd(n.data)[2]) for n in notes]) - 1
    np.testing.assert_array_equal(np.array(stamps), leg.device_ns[ends])
    times = np.array([n.time_s for n in notes])
    assert np.all(times > leg.t[ends]) and np.all(times < leg.t[ends] + 0.2)
    assert np.any(np.diff(leg.index) > 1), "the night has lost samples, seen as timestamp jumps"


def test_polar_unset_clock_and_0x80_factor(night):
    leg = night.legs["right"]
    first = next(polar_acc_frames(leg, clock_set=False))
    ts, _, _ = ref_decode_pmd(first.data)
    assert ts == POLAR_UNSET_CLOCK_NS + int(leg.device_ns[70] - leg.device_ns[0])
    frame = next(polar_acc_frames(leg, frame_type=0x80, factor=0.002))
    _, ftype, s = ref_decode_pmd(frame.data)
    assert ftype == 0x80
    np.testing.assert_allclose(np.array(s) * 0.002 * 1000, leg.milli_g[:71], atol=1.0)


def test_witmotion_notifications_reassemble_to_the_samples(night):
    leg = night.legs["left"]
    notes = list(witmotion_notifications(leg))
    sizes = [len(n.data) for n in notes]
    assert max(sizes) > 20 and any(s % 20 for s in sizes), "several packets per notification, some split"
    raw = ref_decode_witmotion(b"".join(n.data for n in notes))
    assert len(raw) == len(leg)
    np.testing.assert_allclose(raw[:, :3] * 16 / 32768, leg.xyz, atol=0.5 * 16 / 32768 + 1e-6)
    times = np.array([n.time_s for n in notes])
    assert np.all(np.diff(times) > -0.05)


@pytest.mark.skipif(not HAVE_COLLECTOR, reason="collector decoders not written yet")
def test_collector_decoders_agree(night):
    from collector.polar_pmd import decode_frame
    from collector.witmotion import PacketReader, acc_g

    leg = night.legs["left"]
    for compressed in (True, False):
        decoded = [decode_frame(n.data) for n in polar_acc_frames(leg, compressed=compressed)]
        np.testing.assert_array_equal(np.concatenate([f.milli_g() for f in decoded]), leg.milli_g)
    reader = PacketReader()
    raw = np.concatenate([reader.feed(n.data) for n in witmotion_notifications(leg)])
    np.testing.assert_allclose(acc_g(raw[:, :3]), leg.xyz, atol=0.5 * 16 / 32768 + 1e-6)
    assert reader.garbage_bytes == 0
