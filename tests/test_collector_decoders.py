"""Polar PMD and WitMotion decoders against the published vectors (raw integers before scaling)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import polar_pmd as pmd
from collector import witmotion as wit
from collector.testing import encode_acc_frame, encode_delta_payload

H = bytes.fromhex


# ----------------------------------------------------------------------------- Polar: data frames


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # vector 1: spec delta frame (reference + first two deltas of a 0x1D-sample block, cut to 2)
        ("D0 FF 65 01 E4 0F 08 02 FC 07 FF 0C 13 F2", [(-48, 357, 4068), (-52, 364, 4067), (-40, 383, 4053)]),
        # vector 4: two blocks of 3-bit deltas, padding bits ignored
        (
            "FF FF FF FF FF FF 03 03 AA AA CC CF 03 02 AA AA CC",
            [(-1, -1, -1), (1, -4, 1), (-2, -2, 2), (1, -4, 1), (3, -7, 3), (0, -5, 4)],
        ),
    ],
)
def test_delta_vectors(payload: str, expected: list[tuple[int, int, int]]) -> None:
    got = pmd.decode_delta(H(payload), resolution=16, channels=3)
    assert got.tolist() == [list(e) for e in expected]


def test_vector1_with_its_declared_block_of_29() -> None:
    # header 08 1D: 29 samples x 3 channels x 8 bits = 87 bytes; the rest of the block is zero deltas
    block = H("FC 07 FF 0C 13 F2") + bytes(81)
    got = pmd.decode_delta(H("D0 FF 65 01 E4 0F 08 1D") + block, resolution=16, channels=3)
    assert got.shape == (30, 3)
    assert got[:3].tolist() == [[-48, 357, 4068], [-52, 364, 4067], [-40, 383, 4053]]
    assert (got[3:] == got[2]).all()
    with pytest.raises(pmd.PmdProtocolError, match="needs 87 bytes, 6 left"):
        pmd.decode_delta(H("D0 FF 65 01 E4 0F 08 1D FC 07 FF 0C 13 F2"), resolution=16, channels=3)


def test_raw_type1_vector2() -> None:
    header = H("02 00 94 35 77 00 00 00 00 01")
    first = H("F7 FF FF FF E7 03 F8 FF FE FF E5 03")
    frame = pmd.decode_frame(header + first + bytes(6 * 34))
    assert frame.device_ns == 2_000_000_000
    assert frame.unix_ns == 2_000_000_000 + pmd.POLAR_EPOCH_OFFSET_NS
    assert frame.samples.shape == (36, 3)
    assert frame.samples[:2].tolist() == [[-9, -1, 999], [-8, -2, 997]]
    assert frame.to_milli_g == 1.0 and not frame.compressed


def test_compressed_0x81_vector3() -> None:
    frame = pmd.decode_frame(H("02 65 00 00 00 00 00 00 00 81 F1 FF 14 00 F0 03 06 01 7B 0F 08"))
    assert frame.device_ns == 0x65
    assert frame.samples.tolist() == [[-15, 20, 1008], [-20, 17, 1008]]
    assert frame.milli_g().tolist() == [[-15, 20, 1008], [-20, 17, 1008]]


def test_real_verity_prefix_vector5() -> None:
    header = H("02 00 41 6F C4 12 45 93 0A 81")
    ref = H("EE 02 1F FE 82 FF")
    # block 08 0A: ten 8-bit deltas per channel; all zero here, so every sample equals the reference
    frame = pmd.decode_frame(header + ref + H("08 0A") + bytes(30))
    unix_s = frame.unix_ns // 10**9
    assert unix_s == 1708713508  # 2024-02-23 18:38:28 UTC
    assert frame.samples[0].tolist() == [750, -481, -126]
    assert frame.samples.shape == (11, 3)


def test_compressed_0x80_applies_factor_to_g() -> None:
    frame = pmd.decode_frame(H("02 00 00 00 00 00 00 00 00 80 F1 FF 14 00 F0 03"), factor=0.000244)
    assert frame.samples.tolist() == [[-15, 20, 1008]]
    assert frame.milli_g()[0, 2] == pytest.approx(1008 * 0.244)


def test_raw_type0_is_g_and_type2_is_int24() -> None:
    f0 = pmd.decode_frame(H("02 00 00 00 00 00 00 00 00 00 FF 00 01"))
    assert f0.samples.tolist() == [[-1, 0, 1]] and f0.to_milli_g == 1000.0
    f2 = pmd.decode_frame(H("02 00 00 00 00 00 00 00 00 02 FF FF FF 00 00 80 E8 03 00"))
    assert f2.samples.tolist() == [[-1, -(2**23), 1000]]


def test_one_bit_deltas_are_zero_or_minus_one() -> None:
    # ref (0,0,0); one 1-bit block of 2 samples: bits 1,0,1 then 0,0,1 -> (-1,0,-1), (-1,0,-2)
    got = pmd.decode_delta(H("00 00 00 00 00 00 01 02") + bytes([0b100101]), resolution=16, channels=3)
    assert got.tolist() == [[0, 0, 0], [-1, 0, -1], [-1, 0, -2]]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("02 00 00", "shorter than the 10-byte header"),
        ("02 00 00 00 00 00 00 00 00 01 01 02 03", "whole number"),
        ("02 00 00 00 00 00 00 00 00 81 01 02", "reference sample"),
        ("02 00 00 00 00 00 00 00 00 81 00 00 00 00 00 00 08", "header truncated"),
        ("02 00 00 00 00 00 00 00 00 07", "unsupported raw"),
        ("00 00 00 00 00 00 00 00 00 01", "not an ACC frame"),
    ],
)
def test_bad_frames_raise_clear_errors(frame: str, message: str) -> None:
    with pytest.raises(pmd.PmdProtocolError, match=message):
        pmd.decode_frame(H(frame))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(-8000, 8000)] * 3), min_size=1, max_size=120))
def test_delta_round_trip(samples: list[tuple[int, int, int]]) -> None:
    arr = np.array(samples, dtype=np.int64)
    assert pmd.decode_delta(encode_delta_payload(arr), resolution=16, channels=3).tolist() == arr.tolist()
    assert pmd.decode_frame(encode_acc_frame(5, arr, compressed=False)).samples.tolist() == arr.tolist()


# ----------------------------------------------------------------------------- Polar: control point


def test_start_command_vectors() -> None:
    assert pmd.start_acc_command() == H("02 02 00 01 34 00 01 01 10 00 02 01 08 00 04 01 03")
    assert pmd.start_acc_command(200, channels=None) == H("02 02 00 01 C8 00 01 01 10 00 02 01 08 00")
    assert pmd.start_acc_command(25, channels=None)[4:6] == H("19 00")
    assert pmd.start_acc_command(50, channels=None)[4:6] == H("32 00")
    assert pmd.stop_command() == H("03 02")
    assert pmd.get_settings_command() == H("01 02")


def test_settings_vector6() -> None:
    got = pmd.parse_settings(H("00 01 34 00 01 01 10 00 02 04 F5 00 F4 01 E8 03 D0 07 04 01 03"))
    assert got == {
        pmd.PmdSetting.SAMPLE_RATE: [52],
        pmd.PmdSetting.RESOLUTION: [16],
        pmd.PmdSetting.RANGE: [245, 500, 1000, 2000],
        pmd.PmdSetting.CHANNELS: [3],
    }


def test_settings_factor_and_truncation() -> None:
    got = pmd.parse_settings(H("05 01") + np.float32(0.5).tobytes())
    assert got == {pmd.PmdSetting.FACTOR: [0.5]}
    with pytest.raises(pmd.PmdProtocolError, match="RANGE declares 4 values"):
        pmd.parse_settings(H("02 04 F5 00"))


def test_features() -> None:
    assert pmd.parse_features(H("0F 6E")) == {"PPG", "ACC", "PPI", "GYRO", "MAG"}
    assert pmd.parse_features(H("0F 04")) == {"ACC"}
    with pytest.raises(pmd.PmdProtocolError):
        pmd.parse_features(H("01 04"))


def test_multi_packet_response_is_reassembled() -> None:
    asm = pmd.ResponseAssembler()
    assert asm.feed(H("F0 01 02 00 01 00 01 34 00 01")) is None
    assert asm.feed(H("F0 01 02 00 01 01 10 00 02 01")) is None
    done = asm.feed(H("F0 01 02 00 00 08 00 04 01 03"))
    assert isinstance(done, pmd.ControlResponse) and done.ok
    assert pmd.parse_settings(done.params)[pmd.PmdSetting.CHANNELS] == [3]
    assert done.params == H("00 01 34 00 01 01 10 00 02 01 08 00 04 01 03")


@pytest.mark.parametrize("status", list(range(1, 15)))
def test_every_error_status_is_reported_by_name(status: int) -> None:
    response = pmd.ResponseAssembler().feed(bytes([0xF0, 2, 2, status, 0]))
    assert isinstance(response, pmd.ControlResponse) and not response.ok
    name = pmd.PmdStatus(status).name
    assert response.status_name == name
    with pytest.raises(pmd.PmdError, match=name):
        response.raise_for_status()


def test_unknown_status_and_measurement_stopped() -> None:
    assert pmd.status_name(99) == "UNKNOWN_STATUS_99"
    stopped = pmd.ResponseAssembler().feed(H("01 02"))
    assert stopped == pmd.MeasurementStopped((2,))


# ----------------------------------------------------------------------------- WitMotion

CAPTURE = H("55 61 fc ff ef ff 11 08 00 00 00 00 00 00 98 ff 0d 00 f8 31")


def test_witmotion_capture_vector() -> None:
    raw = wit.decode_packet(CAPTURE)
    assert raw.tolist() == [-4, -17, 2065, 0, 0, 0, -104, 13, 12792]
    g = wit.acc_g(raw[:3])
    assert g == pytest.approx([-0.0020, -0.0083, 1.0083], abs=5e-5)
    assert raw[6:] * 180 / 32768 == pytest.approx([-0.571, 0.071, 70.269], abs=5e-4)


def test_witmotion_commands() -> None:
    assert H("FF AA 69 88 B5") == wit.UNLOCK
    assert H("FF AA 00 00 00") == wit.SAVE
    assert [wit.rate_command(r).hex() for r in (10, 20, 50, 100, 200)] == [
        "ffaa030600",
        "ffaa030700",
        "ffaa030800",
        "ffaa030900",
        "ffaa030b00",
    ]
    with pytest.raises(ValueError, match="52"):
        wit.rate_command(52)


@pytest.mark.parametrize(
    ("chunks", "packets", "garbage"),
    [
        ([CAPTURE * 2], 2, 0),  # 40 bytes at 50 Hz
        ([CAPTURE * 4], 4, 0),  # 80 bytes seen too
        ([CAPTURE[:7], CAPTURE[7:] + CAPTURE[:1], CAPTURE[1:]], 2, 0),  # split, header split too
        ([b"\x00\x13" + CAPTURE[5:] + CAPTURE], 1, 17),  # mid-packet start: resync on the header
        ([CAPTURE + b"\x55\x00\x61" + CAPTURE], 2, 3),  # garbage between packets
    ],
)
def test_witmotion_reassembly(chunks: list[bytes], packets: int, garbage: int) -> None:
    reader = wit.PacketReader()
    got = np.concatenate([reader.feed(c) for c in chunks])
    assert got.shape == (packets, 9)
    assert (got[:, :3] == [-4, -17, 2065]).all()
    assert reader.garbage_bytes == garbage


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 45), min_size=1, max_size=30))
def test_witmotion_any_split_gives_the_same_packets(cuts: list[int]) -> None:
    stream = b"".join(CAPTURE[:2] + bytes([i]) + CAPTURE[3:] for i in range(12))
    reader, pos, out = wit.PacketReader(), 0, []
    for c in cuts:
        out.append(reader.feed(stream[pos : pos + c]))
        pos += c
    out.append(reader.feed(stream[pos:]))
    got = np.concatenate(out)
    assert len(got) == 12 and reader.garbage_bytes == 0


# ----------------------------------------------------------------------------- simulator frames

sim_frames = pytest.importorskip("simulator.frames")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(*[st.integers(-4000, 4000)] * 3), min_size=2, max_size=90),
    st.sampled_from([0x80, 0x81]),
    st.integers(1, 40),
)
def test_simulator_delta_frames_decode_exactly(samples, frame_type: int, block: int) -> None:
    arr = np.array(samples, dtype=np.int64)
    frame = sim_frames.encode_pmd_delta(123_456_789, arr, frame_type=frame_type, block_size=block)
    got = pmd.decode_frame(frame, factor=0.001 if frame_type == 0x80 else 1.0)
    assert got.device_ns == 123_456_789 and got.frame_type == frame_type
    assert got.samples.tolist() == arr.tolist()


@pytest.mark.parametrize("resolution", [8, 16, 24])
def test_simulator_raw_frames_decode_exactly(resolution: int) -> None:
    rng = np.random.default_rng(resolution)
    lim = 2 ** (resolution - 1)
    arr = rng.integers(-lim, lim, (36, 3))
    got = pmd.decode_frame(sim_frames.encode_pmd_raw(7, arr, resolution=resolution))
    assert got.samples.tolist() == arr.tolist()


def test_simulator_witmotion_packets_reassemble() -> None:
    acc = np.array([[0.01, -0.5, 1.0], [0.2, 0.3, -0.9], [1.5, -2.0, 0.0]])
    stream = sim_frames.witmotion_packets(acc)
    reader = wit.PacketReader()
    got = np.concatenate([reader.feed(stream[i : i + 13]) for i in range(0, len(stream), 13)])
    assert wit.acc_g(got[:, :3]) == pytest.approx(acc, abs=16 / 32768)
