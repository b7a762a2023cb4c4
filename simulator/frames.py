"""Byte-exact BLE notification streams of real devices, for the collector's scripted BLE backend.

* Polar Verity Sense, Polar Measurement Data (PMD) ACC: control-point answers and data frames,
  raw (types 0/1/2 = int8/16/24) and delta-compressed (0x80/0x81), with the device's own drifting
  timestamp (ns since 2000-01-01 of the last sample in the frame).
* WitMotion BWT901BLE: 20-byte ``55 61`` packets (acc, gyro, angle; no timestamp), several per
  notification and sometimes split across two.

Encoders only; the layouts follow /work/shared/reference/ble-devices.md and its test vectors. The
collector owns the decoders (``collector.polar_pmd``, ``collector.witmotion``).
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from simulator.api import LegRecording

POLAR_EPOCH_NS = 946_684_800 * 10**9  # 2000-01-01T00:00Z in Unix ns
POLAR_UNSET_CLOCK_NS = 536_457_600 * 10**9  # 2017-01-01 in ns since 2000: a Verity whose clock nobody set
PMD_ACC = 2
PMD_FEATURES_VERITY = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6)  # PPG, ACC, PPI, GYRO, MAG
RAW_FRAME_TYPES = {8: 0x00, 16: 0x01, 24: 0x02}
POLAR_MTU_PAYLOAD = 229  # ATT MTU 232 - 3: Verity needs >= 230
WIT_PACKET = struct.Struct("<2s9h")
WIT_ACC_LSB_PER_G = 32768 / 16
WIT_GYRO_LSB_PER_DPS = 32768 / 2000
WIT_ANGLE_LSB_PER_DEG = 32768 / 180


class Notification(NamedTuple):
    """One BLE notification: when it arrives (wall time, Unix s) and its bytes."""

    time_s: float
    data: bytes


# ----------------------------------------------------------------------------- Polar PMD control point


def pmd_features(bitmap: int = PMD_FEATURES_VERITY) -> bytes:
    """The control-point read value: ``0F <feature bitmap>``."""
    return bytes([0x0F, bitmap])


def pmd_response(op: int, measurement: int = PMD_ACC, status: int = 0, params: bytes = b"", more: int = 0) -> bytes:
    """A control-point indication: ``F0 op type status more params``."""
    return bytes([0xF0, op, measurement, status, more]) + bytes(params)


def pmd_settings_params(
    rates: tuple[int, ...] = (52,),
    resolutions: tuple[int, ...] = (16,),
    ranges: tuple[int, ...] = (8,),
    channels: int | None = 3,
    factor: float | None = None,
) -> bytes:
    """Setting groups ``[type, count, values LE]``: 0 rate u16, 1 resolution u16, 2 range u16, 4 channels u8, 5 factor f32."""
    out = bytearray()
    for kind, values in ((0, rates), (1, resolutions), (2, ranges)):
        out += bytes([kind, len(values)]) + b"".join(struct.pack("<H", v) for v in values)
    if channels is not None:
        out += bytes([4, 1, channels])
    if factor is not None:
        out += bytes([5, 1]) + struct.pack("<f", factor)
    return bytes(out)


def pmd_settings_response(**settings) -> bytes:
    """Answer to GET settings (op 1) for ACC; keyword arguments as :func:`pmd_settings_params`."""
    return pmd_response(1, PMD_ACC, 0, pmd_settings_params(**settings))


def pmd_start_response(status: int = 0, factor: float | None = None) -> bytes:
    """Answer to START (op 2) for ACC; a compressed 0x80 stream also reports its float32 factor."""
    params = bytes([5, 1]) + struct.pack("<f", factor) if factor is not None and status == 0 else b""
    return pmd_response(2, PMD_ACC, status, params)


# ----------------------------------------------------------------------------- Polar PMD data frames


def _header(timestamp_ns: int, frame_type: int, measurement: int = PMD_ACC) -> bytes:
    if not 0 <= timestamp_ns < 2**64:
        raise ValueError(f"PMD timestamp must fit u64 ns since 2000-01-01, got {timestamp_ns}")
    return struct.pack("<BQB", measurement, timestamp_ns, frame_type)


def _int_le(values: np.ndarray, width: int) -> bytes:
    """Signed little-endian integers of ``width`` bytes, row-major."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    lo, hi = -(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"sample value outside the {8 * width}-bit range")
    u = (v & ((1 << (8 * width)) - 1)).astype("<u8")
    return u.view(np.uint8).reshape(-1, 8)[:, :width].tobytes()


def encode_pmd_raw(timestamp_ns: int, samples: np.ndarray, *, resolution: int = 16) -> bytes:
    """Raw ACC frame (type 0/1/2 for 8/16/24-bit): header then x,y,z signed LE per sample, in mG."""
    if resolution not in RAW_FRAME_TYPES:
        raise ValueError(f"raw PMD resolution must be 8, 16 or 24 bits, got {resolution}")
    return _header(timestamp_ns, RAW_FRAME_TYPES[resolution]) + _int_le(samples, resolution // 8)


def _bits_needed(deltas: np.ndarray) -> int:
    """Smallest two's-complement width holding every delta (at least 1: 1-bit deltas are {0, -1})."""
    if deltas.size == 0:
        return 1
    hi = int(deltas.max())
    lo = int(deltas.min())
    return max(1, hi.bit_length() + 1 if hi > 0 else 1, (-lo - 1).bit_length() + 1 if lo < 0 else 1)


def pack_deltas(deltas: np.ndarray, bits: int) -> bytes:
    """``bits``-wide two's-complement fields, LSB-first across the little-endian byte stream, zero padded."""
    d = np.asarray(deltas, dtype=np.int64).reshape(-1)
    if d.size and (d.min() < -(1 << (bits - 1)) or d.max() > (1 << (bits - 1)) - 1):
        raise ValueError(f"delta outside the {bits}-bit range")
    u = d & ((1 << bits) - 1)
    bit_matrix = ((u[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def encode_pmd_delta(
    timestamp_ns: int,
    samples: np.ndarray,
    *,
    frame_type: int = 0x81,
    resolution: int = 16,
    block_size: int = 10,
    bits: int | None = None,
) -> bytes:
    """Delta-compressed frame: reference sample, then blocks ``[bits u8][count u8]`` + packed deltas.

    ``samples`` (n, channels) are the stored integers (mG for 0x81; for 0x80 the integers that the
    receiver multiplies by ``factor * 1000``). ``bits`` forces one width for every block (as some
    firmware does); by default each block uses the smallest width that holds its deltas.
    """
    s = np.asarray(samples, dtype=np.int64)
    if s.ndim != 2 or len(s) == 0:
        raise ValueError("samples must be a non-empty (n, channels) array")
    if frame_type not in (0x80, 0x81):
        raise ValueError(f"compressed ACC frame type must be 0x80 or 0x81, got {frame_type:#x}")
    if not 1 <= block_size <= 255:
        raise ValueError("block_size must be 1-255 samples")
    out = bytearray(_header(timestamp_ns, frame_type))
    out += _int_le(s[0], math.ceil(resolution / 8))
    deltas = np.diff(s, axis=0)
    for k in range(0, len(deltas), block_size):
        block = deltas[k : k + block_size]
        width = _bits_needed(block) if bits is None else bits
        out += bytes([width, len(block)]) + pack_deltas(block, width)
    return bytes(out)


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) positions of contiguous device-sample-counter runs (losses split frames)."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(index)]])
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def polar_acc_frames(
    leg: LegRecording,
    *,
    compressed: bool = True,
    samples_per_frame: int | None = None,
    clock_set: bool = True,
    frame_type: int = 0x81,
    factor: float = 1.0,
    latency_s: tuple[float, float] = (0.02, 0.12),
    seed: int = 0,
) -> Iterator[Notification]:
    """The PMD data notifications a Verity Sense sends for this recording.

    Compressed frames carry ~71 samples (the real Verity's ~1.4 s batches); raw int16 frames 36 (an
    MTU-232 notification). Frame timestamps are the device clock (drifting ``clock_ppm`` from wall
    time); with ``clock_set=False`` it counts from 2017-01-01 like a Verity nobody set. Lost samples
    (drops, gaps) are lost notifications: the next frame's timestamp jumps. For ``frame_type=0x80``
    the stored integers are mG / (factor * 1000) (send ``factor`` in the START response).
    """
    spf = samples_per_frame or (71 if compressed else 36)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x504D44]))
    mg = leg.milli_g.astype(np.int64)
    if compressed and frame_type == 0x80:
        mg = np.rint(mg / (factor * 1000.0)).astype(np.int64)
    dev = leg.device_ns
    offset = POLAR_EPOCH_NS if clock_set else int(dev[0]) - POLAR_UNSET_CLOCK_NS if len(dev) else 0
    for a, b in _runs(leg.index):
        for s in range(a, b, spf):
            e = min(b, s + spf)
            ts = int(dev[e - 1]) - offset
            frame = (
                encode_pmd_delta(ts, mg[s:e], frame_type=frame_type)
                if compressed
                else encode_pmd_raw(ts, mg[s:e], resolution=16)
            )
            yield Notification(float(leg.t[e - 1] + rng.uniform(*latency_s)), frame)


# ----------------------------------------------------------------------------- WitMotion


def witmotion_packets(
    acc_g: np.ndarray, gyro_dps: np.ndarray | None = None, angle_deg: np.ndarray | None = None
) -> bytes:
    """Concatenated 20-byte packets ``55 61`` + 9 int16 LE: acc v/32768*16 g, gyro *2000 deg/s, angle *180 deg."""
    acc = np.asarray(acc_g, dtype=np.float64).reshape(-1, 3)
    n = len(acc)
    gyro = np.zeros((n, 3)) if gyro_dps is None else np.asarray(gyro_dps, dtype=np.float64).reshape(-1, 3)
    angle = np.zeros((n, 3)) if angle_deg is None else np.asarray(angle_deg, dtype=np.float64).reshape(-1, 3)
    rows = np.empty((n, 10), dtype="<i2")
    rows[:, 0] = np.frombuffer(b"\x55\x61", dtype="<i2")[0]
    for col, values, scale in (
        (1, acc, WIT_ACC_LSB_PER_G),
        (4, gyro, WIT_GYRO_LSB_PER_DPS),
        (7, angle, WIT_ANGLE_LSB_PER_DEG),
    ):
        rows[:, col : col + 3] = np.clip(np.rint(values * scale), -32768, 32767)
    return rows.tobytes()


def witmotion_motion(xyz_g: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Angles the device's filter would report (roll/pitch from gravity, yaw 0) and their rates as gyro."""
    a = np.asarray(xyz_g, dtype=np.float64)
    roll = np.degrees(np.arctan2(a[:, 1], a[:, 2]))
    pitch = np.degrees(np.arctan2(-a[:, 0], np.hypot(a[:, 1], a[:, 2])))
    angle = np.stack([roll, pitch, np.zeros(len(a))], axis=1)
    if len(a) < 2:
        return np.zeros_like(angle), angle
    gyro = np.gradient(np.unwrap(np.radians(angle), axis=0), axis=0) * rate_hz
    return np.degrees(gyro), angle


def witmotion_notifications(
    leg: LegRecording,
    *,
    packets_per_notification: int = 2,
    split_probability: float = 0.05,
    latency_s: tuple[float, float] = (0.005, 0.04),
    seed: int = 0,
) -> Iterator[Notification]:
    """The notifications a BWT901BLE sends: ``packets_per_notification`` packets each (40 bytes at 50 Hz),
    sometimes 1 or 4, and now and then a packet split across two notifications. No timestamps: the
    collector must anchor a sample counter to arrival times, and see losses as arrival gaps."""
    if packets_per_notification < 1:
        raise ValueError("packets_per_notification must be >= 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x574954]))
    for a, b in _runs(leg.index):
        gyro, angle = witmotion_motion(leg.xyz[a:b], leg.rate_hz)
        stream = witmotion_packets(leg.xyz[a:b], gyro, angle)
        pos, total = 0, len(stream)
        while pos < total:
            k = int(rng.choice([1, packets_per_notification, 4], p=[0.05, 0.9, 0.05]))
            size = k * WIT_PACKET.size
            if rng.random() < split_probability:
                size += int(rng.integers(-WIT_PACKET.size + 1, WIT_PACKET.size))
            end = min(total, pos + max(1, size))
            last_sample = a + max(0, end // WIT_PACKET.size - 1)
            yield Notification(float(leg.t[last_sample] + rng.uniform(*latency_s)), stream[pos:end])
            pos = end
