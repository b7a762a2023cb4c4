"""Polar Measurement Data (PMD) protocol: pure command builders and decoders, no I/O.

Everything here is bytes in, values out, so the protocol can be checked against the published
vectors (docs/devices.md, tests/test_collector_polar.py) without a radio. The BLE glue that drives
a real device with these lives in :mod:`collector.drivers`.

Units: decoders return the device's raw integers (``PmdFrame.samples``, int64) plus the factor
that turns them into milli-g, because the vectors are stated in raw integers and a scaling bug
must not hide a decoding bug.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field

import numpy as np

PMD_SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

POLAR_EPOCH_OFFSET_NS = 946_684_800_000_000_000  # 2000-01-01T00:00Z in Unix ns
MIN_MTU = 230  # Verity sends ~227-byte ACC notifications

MEASUREMENT_ACC = 2


class PmdOp(enum.IntEnum):
    GET_SETTINGS = 1
    START = 2
    STOP = 3


class PmdMeasurement(enum.IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAG = 6


class PmdStatus(enum.IntEnum):
    """Control-point response status; ``name`` is what gets logged and reported."""

    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13
    DISK_FULL = 14


def status_name(code: int) -> str:
    try:
        return PmdStatus(code).name
    except ValueError:
        return f"UNKNOWN_STATUS_{code}"


class PmdSetting(enum.IntEnum):
    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    CHANNELS = 4
    FACTOR = 5


class PmdError(Exception):
    """A control-point command failed; ``status`` is the device's status code."""

    def __init__(self, op: int, measurement: int, status: int) -> None:
        self.op, self.measurement, self.status = op, measurement, status
        super().__init__(f"Polar PMD {_op_name(op)} {_meas_name(measurement)} failed: {status_name(status)} ({status})")


class PmdProtocolError(ValueError):
    """Bytes that do not follow the PMD format; the message says what is wrong."""


def _op_name(op: int) -> str:
    try:
        return PmdOp(op).name
    except ValueError:
        return f"op{op}"


def _meas_name(measurement: int) -> str:
    try:
        return PmdMeasurement(measurement).name
    except ValueError:
        return f"type{measurement}"


# ----------------------------------------------------------------------------- features & commands


def parse_features(data: bytes | bytearray) -> set[str]:
    """Decode the control-point read: ``0F <bitmap>`` -> names of the supported measurements."""
    if len(data) < 2 or data[0] != 0x0F:
        raise PmdProtocolError(f"PMD feature read must start with 0x0F and hold a bitmap, got {bytes(data).hex(' ')}")
    return {m.name for m in PmdMeasurement if data[1] >> m.value & 1}


def get_settings_command(measurement: int = MEASUREMENT_ACC) -> bytes:
    return bytes([PmdOp.GET_SETTINGS, measurement])


def stop_command(measurement: int = MEASUREMENT_ACC) -> bytes:
    return bytes([PmdOp.STOP, measurement])


def start_acc_command(rate_hz: int = 52, resolution: int = 16, range_g: int = 8, channels: int | None = 3) -> bytes:
    """START ACC. Verity wants the channel setting; H10 refuses it (pass ``channels=None``)."""
    out = bytearray([PmdOp.START, MEASUREMENT_ACC])
    out += struct.pack("<BBH", PmdSetting.SAMPLE_RATE, 1, rate_hz)
    out += struct.pack("<BBH", PmdSetting.RESOLUTION, 1, resolution)
    out += struct.pack("<BBH", PmdSetting.RANGE, 1, range_g)
    if channels is not None:
        out += struct.pack("<BBB", PmdSetting.CHANNELS, 1, channels)
    return bytes(out)


def parse_settings(params: bytes) -> dict[PmdSetting, list[int | float]]:
    """Decode ``[settingType, count, values...]`` groups from a GET-settings response."""
    out: dict[PmdSetting, list[int | float]] = {}
    i = 0
    while i < len(params):
        if i + 2 > len(params):
            raise PmdProtocolError(f"settings truncated at byte {i}: {bytes(params).hex(' ')}")
        kind, count = params[i], params[i + 1]
        i += 2
        try:
            setting = PmdSetting(kind)
        except ValueError:
            raise PmdProtocolError(f"unknown PMD setting type {kind} at byte {i - 2}") from None
        size = {PmdSetting.CHANNELS: 1, PmdSetting.FACTOR: 4}.get(setting, 2)
        if i + size * count > len(params):
            raise PmdProtocolError(f"setting {setting.name} declares {count} values but the response is too short")
        values: list[int | float] = []
        for _ in range(count):
            if setting is PmdSetting.FACTOR:
                values.append(struct.unpack_from("<f", params, i)[0])
            else:
                values.append(int.from_bytes(params[i : i + size], "little"))
            i += size
        out[setting] = values
    return out


# ----------------------------------------------------------------------------- control-point responses


@dataclass(frozen=True, slots=True)
class ControlResponse:
    op: int
    measurement: int
    status: int
    params: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == PmdStatus.SUCCESS

    @property
    def status_name(self) -> str:
        return status_name(self.status)

    def raise_for_status(self) -> ControlResponse:
        if not self.ok:
            raise PmdError(self.op, self.measurement, self.status)
        return self


@dataclass(frozen=True, slots=True)
class MeasurementStopped:
    """Device-initiated notice (byte0 0x01): these measurements stopped (e.g. put on the charger)."""

    measurements: tuple[int, ...]


@dataclass
class ResponseAssembler:
    """Reassembles control-point indications, including multi-packet responses (``more != 0``)."""

    _pending: tuple[int, int, int] | None = None
    _params: bytearray = field(default_factory=bytearray)

    def feed(self, packet: bytes) -> ControlResponse | MeasurementStopped | None:
        packet = bytes(packet)
        if not packet:
            raise PmdProtocolError("empty control-point indication")
        if self._pending is not None:
            if len(packet) < 5:
                self.reset()
                raise PmdProtocolError(f"continuation packet shorter than 5 bytes: {packet.hex(' ')}")
            self._params += packet[5:]
            more = packet[4]
        elif packet[0] == 0x01:
            return MeasurementStopped(tuple(packet[1:]))
        elif packet[0] == 0xF0:
            if len(packet) < 4:
                raise PmdProtocolError(f"control-point response shorter than 4 bytes: {packet.hex(' ')}")
            self._pending = (packet[1], packet[2], packet[3])
            self._params = bytearray(packet[5:])
            more = packet[4] if len(packet) > 4 else 0
        else:
            raise PmdProtocolError(f"unknown control-point indication 0x{packet[0]:02x}: {packet.hex(' ')}")
        if more:
            return None
        op, meas, status = self._pending
        response = ControlResponse(op, meas, status, bytes(self._params))
        self.reset()
        return response

    def reset(self) -> None:
        self._pending = None
        self._params = bytearray()


# ----------------------------------------------------------------------------- data frames


@dataclass(frozen=True, slots=True)
class PmdFrame:
    measurement: int
    device_ns: int  # ns since 2000-01-01 of the LAST sample
    frame_type: int  # raw byte incl. the 0x80 compression bit
    samples: np.ndarray  # int64 (n, channels), raw device units
    to_milli_g: float  # multiply samples by this for milli-g

    @property
    def compressed(self) -> bool:
        return bool(self.frame_type & 0x80)

    @property
    def unix_ns(self) -> int:
        return self.device_ns + POLAR_EPOCH_OFFSET_NS

    def milli_g(self) -> np.ndarray:
        return self.samples * self.to_milli_g


_RAW_BYTES = {0: 1, 1: 2, 2: 3}


def decode_frame(data: bytes | bytearray, *, resolution: int = 16, channels: int = 3, factor: float = 1.0) -> PmdFrame:
    """Decode one PMD ACC data notification.

    ``resolution`` and ``factor`` come from the settings response (factor is only sent by some
    firmwares; 1.0 otherwise). Raises :class:`PmdProtocolError` for malformed frames.
    """
    data = bytes(data)
    if len(data) < 10:
        raise PmdProtocolError(f"PMD frame of {len(data)} bytes is shorter than the 10-byte header")
    measurement = data[0]
    device_ns = int.from_bytes(data[1:9], "little")
    frame_type = data[9]
    payload = memoryview(data)[10:]
    if measurement != MEASUREMENT_ACC:
        raise PmdProtocolError(f"not an ACC frame: measurement type {measurement}")
    kind = frame_type & 0x7F
    if frame_type & 0x80:
        samples = decode_delta(payload, resolution=resolution, channels=channels)
        if kind == 0:
            scale = factor * 1000.0
        elif kind == 1:
            scale = factor if factor != 1.0 else 1.0
        else:
            raise PmdProtocolError(f"unsupported compressed ACC frame type 0x{frame_type:02x}")
    else:
        if kind not in _RAW_BYTES:
            raise PmdProtocolError(f"unsupported raw ACC frame type {kind}")
        width = _RAW_BYTES[kind]
        step = width * channels
        if len(payload) % step:
            raise PmdProtocolError(
                f"raw ACC type {kind} payload of {len(payload)} bytes is not a whole number of {step}-byte samples"
            )
        samples = _raw_samples(bytes(payload), width, channels)
        # type 0 is reported in G on Verity Sense; 1 and 2 are milli-g
        scale = 1000.0 if kind == 0 else 1.0
    return PmdFrame(measurement, device_ns, frame_type, samples, scale)


def _raw_samples(payload: bytes, width: int, channels: int) -> np.ndarray:
    if width in (1, 2):
        return np.frombuffer(payload, dtype="<i1" if width == 1 else "<i2").reshape(-1, channels).astype(np.int64)
    b = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3).astype(np.int64)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    v = np.where(v & 0x800000, v - (1 << 24), v)
    return v.reshape(-1, channels)


def decode_delta(payload: bytes | memoryview, *, resolution: int, channels: int) -> np.ndarray:
    """Delta-compressed samples: a reference sample, then ``[bits][count]`` blocks of packed deltas.

    Reads exactly ``bits*count*channels`` bits from each block (the rest of its last byte is
    padding) -- looping until the buffer is empty instead would invent samples.
    """
    data = bytes(payload)
    ref_width = math.ceil(resolution / 8)
    ref_len = ref_width * channels
    if len(data) < ref_len:
        raise PmdProtocolError(f"delta frame of {len(data)} bytes cannot hold the {ref_len}-byte reference sample")
    ref = [int.from_bytes(data[i * ref_width : (i + 1) * ref_width], "little", signed=True) for i in range(channels)]
    rows: list[np.ndarray] = [np.array([ref], dtype=np.int64)]
    i = ref_len
    while i < len(data):
        if i + 2 > len(data):
            raise PmdProtocolError(f"delta block header truncated at byte {i + 10} of the frame")
        bits, count = data[i], data[i + 1]
        i += 2
        if not 1 <= bits <= 32:
            raise PmdProtocolError(f"delta block at byte {i + 8} declares {bits}-bit deltas")
        nbits = bits * count * channels
        nbytes = (nbits + 7) // 8
        if i + nbytes > len(data):
            raise PmdProtocolError(
                f"delta block of {count} samples x {bits} bits needs {nbytes} bytes, {len(data) - i} left"
            )
        if count:
            rows.append(_unpack_deltas(data[i : i + nbytes], bits, count * channels).reshape(count, channels))
        i += nbytes
    deltas = np.concatenate(rows)
    return np.cumsum(deltas, axis=0)


def _unpack_deltas(block: bytes, bits: int, n: int) -> np.ndarray:
    """``n`` two's-complement ``bits``-wide values, LSB-first across the little-endian byte stream."""
    raw = np.frombuffer(block, dtype=np.uint8)
    stream = np.unpackbits(raw, bitorder="little")[: bits * n].reshape(n, bits).astype(np.int64)
    values = stream @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    sign = np.int64(1) << (bits - 1)
    return np.where(values & sign, values - (sign << 1), values)
