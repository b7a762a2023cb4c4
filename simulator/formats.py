"""A simulated recording written in the file formats people already have, from the formats' public descriptions.

- ``psl``: Polar Sensor Logger ACC text (``Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]``): the
  sensor's own clock (ns since 2000-01-01, nominal spacing, as Polar frames carry it), milli-g, packets of
  samples sharing the phone's arrival time (local, with a little latency); dropped packets are holes.
- ``gt3x``: ActiGraph's zip of ``info.txt`` and ``log.bin`` (actigraph/GT3X-File-Format): one ACTIVITY record
  (type 0x00: 12-bit two's-complement samples in y, x, z order, bit-packed) per second of the device's local
  clock, an 8-byte header (0x1E, type, u32 seconds, u16 size) and the one's-complement XOR checksum;
  ``Acceleration Scale`` 256 counts per g (+-8 g), ``TimeZone`` the device's offset from UTC.
- ``cwa``: Axivity AX3 (Open Movement's cwa.h): a 1024-byte ``MD`` header and 512-byte ``AX`` blocks of
  80 unpacked samples (3 x int16, 1/256 g), each with a packed local date-time, a 15-bit fraction of a second
  for its first sample and a checksum making the block's 16-bit words sum to zero.

A device samples on its own grid: the .gt3x and .cwa writers put the samples the simulator rendered at the
device's nominal rate from a whole second (``t = t0 + k / rate`` with the device's sample counter ``k``);
:class:`Written` returns the times and values a file holds, for tests to compare a reader against.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

POLAR_EPOCH_UNIX_NS = 946_684_800 * 1_000_000_000
DOTNET_TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000
GT3X_SCALE = 256.0  # counts per g: 12 bits give +-8 g
CWA_SCALE = 256.0  # unpacked AX3 samples are 1/256 g
CWA_SAMPLES_PER_BLOCK = 80  # 480 bytes of 3 x int16
CWA_RATE_CODES = {25.0: 8, 50.0: 9, 100.0: 10, 200.0: 11, 400.0: 12}  # + 64: +-8 g range
FORMATS = ("psl", "gt3x", "cwa")


@dataclass
class Written:
    """What a file holds: its path, the sample times (Unix s) and values (g) after the format's quantisation."""

    path: Path
    t: np.ndarray
    xyz: np.ndarray
    sensor_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def device_grid(device_ns: np.ndarray, index: np.ndarray, rate_hz: float) -> np.ndarray:
    """The sample times of a device that starts at a whole second and samples at exactly its nominal rate."""
    start = math.floor(float(device_ns[0]) / 1e9)
    return start + (index - index[0]) / rate_hz


# ---------------------------------------------------------------------------------------------- psl
def write_psl(
    out_dir: Path, side: str, device_ns: np.ndarray, xyz: np.ndarray, *, packet: int = 36, latency_s: float = 0.08
) -> Written:
    """A Polar Sensor Logger ``..._ACC.txt`` of one sensor (``device_ns``: the sensor clock, Unix ns)."""
    device_id = "B5A7C10F" if side == "left" else "B5A7C12E"
    start_local = dt.datetime.fromtimestamp(float(device_ns[0]) / 1e9)
    path = Path(out_dir) / f"Polar_VeritySense_{device_id}_{start_local:%Y%m%d%H%M%S}_ACC.txt"
    mg = np.rint(np.asarray(xyz, dtype=np.float64) * 1000.0).astype(np.int64)
    sensor = np.asarray(device_ns, dtype=np.int64) - POLAR_EPOCH_UNIX_NS
    n = sensor.shape[0]
    ends = np.minimum(np.arange(n) // packet * packet + packet - 1, n - 1)  # each sample's packet's last sample
    arrival = device_ns[ends] / 1e9 + latency_s
    phone_of = {}
    for s in np.unique(arrival):
        phone_of[s] = dt.datetime.fromtimestamp(float(s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    phone = [phone_of[s] for s in arrival]
    lines = [f"{p};{s};{x};{y};{z}\n" for p, s, x, y, z in zip(phone, sensor.tolist(), *mg.T.tolist(), strict=True)]
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg] \n")  # the app's trailing space
        fh.writelines(lines)
    t = (sensor + POLAR_EPOCH_UNIX_NS) / 1e9
    return Written(path, t, mg / 1000.0, f"polar-{device_id}")


# --------------------------------------------------------------------------------------------- gt3x
def _ticks(unix_s: float) -> int:
    return DOTNET_TICKS_AT_UNIX_EPOCH + round(unix_s * 10_000_000)


def _pack12(values: np.ndarray) -> bytes:
    """12-bit two's-complement values, two in three bytes, most significant nibble first."""
    v = (values.astype(np.int64) & 0xFFF).astype(np.uint16)
    if v.shape[0] % 2:
        v = np.append(v, np.uint16(0))
    a, b = v[0::2], v[1::2]
    out = np.empty((a.shape[0], 3), dtype=np.uint8)
    out[:, 0] = a >> 4
    out[:, 1] = ((a & 0xF) << 4) | (b >> 8)
    out[:, 2] = b & 0xFF
    raw = out.tobytes()
    return raw[: math.ceil(values.shape[0] * 12 / 8)]


def _record(kind: int, timestamp: int, payload: bytes) -> bytes:
    header = bytes([0x1E, kind]) + int(timestamp).to_bytes(4, "little") + len(payload).to_bytes(2, "little")
    checksum = 0
    for byte in header + payload:
        checksum ^= byte
    return header + payload + bytes([~checksum & 0xFF])


def write_gt3x(
    path: Path,
    t: np.ndarray,
    xyz: np.ndarray,
    rate_hz: int,
    *,
    serial: str = "MOS2E21234567",
    side: str = "Left",
    tz_offset_s: int = 3600,
) -> Written:
    """An ActiGraph .gt3x of samples on the device grid ``t`` (whole-second start, ``rate_hz`` per second).

    Seconds the device did not record (holes in ``t``) have no record; a second's record holds its samples."""
    if int(rate_hz) != rate_hz or rate_hz % 2 or not 30 <= rate_hz <= 100:
        raise ValueError(f"a .gt3x rate is an even number of Hz from 30 to 100, got {rate_hz!r}")
    counts = np.clip(np.rint(np.asarray(xyz, dtype=np.float64) * GT3X_SCALE), -2048, 2047).astype(np.int64)
    second = np.floor(t + 1e-9).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, second[1:] != second[:-1]])
    ends = np.r_[starts[1:], second.shape[0]]
    log = io.BytesIO()
    kept = np.zeros(second.shape[0], dtype=bool)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a != rate_hz:
            continue  # a partial second (the edges, a hole): a device writes whole seconds only
        yxz = counts[a:b][:, [1, 0, 2]].ravel()
        log.write(_record(0x00, int(second[a]) + tz_offset_s, _pack12(yxz)))
        kept[a:b] = True
    first, last = float(t[kept][0]), float(t[kept][-1])
    hours, rest = divmod(abs(tz_offset_s), 3600)
    info = {
        "Serial Number": serial,
        "Device Type": "wGT3XBT",
        "Firmware": "1.9.2",
        "Battery Voltage": "4.12",
        "Sample Rate": str(int(rate_hz)),
        "Start Date": str(_ticks(first + tz_offset_s)),
        "Stop Date": "0",
        "Last Sample Time": str(_ticks(last + tz_offset_s)),
        "TimeZone": f"{'-' if tz_offset_s < 0 else ''}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
        "Download Date": str(_ticks(last + tz_offset_s + 3600)),
        "Board Revision": "8",
        "Unexpected Resets": "0",
        "Acceleration Scale": f"{GT3X_SCALE:.1f}",
        "Acceleration Min": "-8.0",
        "Acceleration Max": "8.0",
        "Subject Name": "simulated",
        "Side": side,
        "Limb": "Ankle",
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=3) as archive:
        archive.writestr("info.txt", "".join(f"{k}: {v}\r\n" for k, v in info.items()))
        archive.writestr("log.bin", log.getvalue())
    return Written(path, t[kept], counts[kept] / GT3X_SCALE, serial)


# ---------------------------------------------------------------------------------------------- cwa
def _cwa_time(local: dt.datetime) -> int:
    return (
        ((local.year - 2000) & 0x3F) << 26
        | local.month << 22
        | local.day << 17
        | local.hour << 12
        | local.minute << 6
        | local.second
    )


def write_cwa(
    path: Path, t: np.ndarray, xyz: np.ndarray, rate_hz: float, *, device_id: int = 43_210, session_id: int = 1
) -> Written:
    """An Axivity AX3 .cwa (unpacked samples) of samples on the device grid ``t``, local time of this machine.

    A block holds 80 consecutive samples; a hole in ``t`` starts a new block (its timestamp says where)."""
    code = CWA_RATE_CODES.get(float(rate_hz))
    if code is None:
        raise ValueError(f"an AX3 samples at {', '.join(f'{r:g}' for r in CWA_RATE_CODES)} Hz, got {rate_hz!r}")
    code |= 64  # +-8 g
    counts = np.clip(np.rint(np.asarray(xyz, dtype=np.float64) * CWA_SCALE), -32768, 32767).astype("<i2")
    header = bytearray(b"\xff" * 1024)
    header[0:2] = b"MD"
    header[2:4] = (1020).to_bytes(2, "little")
    header[4] = 0x00  # hardware type: AX3
    header[5:7] = device_id.to_bytes(2, "little")
    header[7:11] = session_id.to_bytes(4, "little")
    header[11:13] = b"\x00\x00"
    header[13:17] = (0).to_bytes(4, "little")  # always log
    header[17:21] = (0xFFFFFFFF).to_bytes(4, "little")
    header[21:25] = (0).to_bytes(4, "little")
    header[25:36] = b"\xff" * 11
    header[36] = code
    header[37:41] = _cwa_time(dt.datetime.fromtimestamp(float(t[0]))).to_bytes(4, "little")
    header[41] = 50
    header[42:44] = (-1).to_bytes(2, "little", signed=True)
    header[64:512] = b" " * 448
    step = 1.0 / rate_hz
    breaks = np.flatnonzero(np.abs(np.diff(t) - step) > 0.25 * step) + 1
    blocks: list[Any] = []
    kept = np.zeros(t.shape[0], dtype=bool)
    for run in np.split(np.arange(t.shape[0]), breaks):
        for a in range(0, run.shape[0] - CWA_SAMPLES_PER_BLOCK + 1, CWA_SAMPLES_PER_BLOCK):
            idx = run[a : a + CWA_SAMPLES_PER_BLOCK]
            kept[idx] = True
            blocks.append(_cwa_block(len(blocks), float(t[idx[0]]), counts[idx], code, session_id, rate_hz))
    with path.open("wb") as fh:
        fh.write(bytes(header))
        fh.writelines(blocks)
    return Written(path, t[kept], counts[kept].astype(np.float64) / CWA_SCALE, f"ax-{device_id}")


def _cwa_block(sequence: int, first_s: float, samples: np.ndarray, code: int, session_id: int, rate_hz: float) -> bytes:
    """One data block whose first sample is at ``first_s``: the whole second and its 15-bit fraction, and (for
    readers that ignore the fraction) ``timestampOffset`` = minus the samples that fraction spans, so the
    whole second falls that many samples before the block (cwa.h's backwards-compatible shim)."""
    local = dt.datetime.fromtimestamp(first_s)
    whole = local.replace(microsecond=0)
    fraction = min(round(local.microsecond / 1e6 * 32768), 32767)
    shim = ((fraction << 1) * int(rate_hz)) >> 16
    block = bytearray(512)
    block[0:2] = b"AX"
    block[2:4] = (508).to_bytes(2, "little")
    block[4:6] = (0x8000 | fraction).to_bytes(2, "little")
    block[6:10] = session_id.to_bytes(4, "little")
    block[10:14] = sequence.to_bytes(4, "little")
    block[14:18] = _cwa_time(whole).to_bytes(4, "little")
    block[18:20] = (0).to_bytes(2, "little")  # light
    block[20:22] = (300).to_bytes(2, "little")  # temperature (raw)
    block[22] = 0  # events
    block[23] = 200  # battery (raw)
    block[24] = code
    block[25] = 0x32  # 3 axes, unpacked 16-bit
    block[26:28] = (-shim).to_bytes(2, "little", signed=True)
    block[28:30] = samples.shape[0].to_bytes(2, "little")
    block[30:510] = samples.astype("<i2").tobytes()
    words = np.frombuffer(bytes(block[:510]), dtype="<u2")
    block[510:512] = ((-int(words.sum())) & 0xFFFF).to_bytes(2, "little")
    return bytes(block)


# ------------------------------------------------------------------------------------- any format
def write_leg(
    fmt: str,
    out_dir: Path,
    side: str,
    t: np.ndarray,
    xyz: np.ndarray,
    rate_hz: float,
    device_ns: np.ndarray | None = None,
) -> Written:
    """One leg in ``fmt`` (csv, psl, gt3x, cwa) under ``out_dir``. ``device_ns`` (the sensor's clock) is what a
    Polar file carries; the .gt3x and .cwa writers take ``t`` as the device's grid (see :func:`device_grid`)."""
    out_dir = Path(out_dir)
    if fmt == "csv":
        from simulator.csvio import write_leg_csv

        return Written(write_leg_csv(out_dir / f"{side}.csv", t, xyz), t, xyz, f"{side}-ankle")
    if fmt == "psl":
        return write_psl(out_dir, side, device_ns if device_ns is not None else np.rint(t * 1e9).astype(np.int64), xyz)
    if fmt == "gt3x":
        serial = "MOS2E21234567" if side == "left" else "MOS2E21234568"
        return write_gt3x(out_dir / f"{side}.gt3x", t, xyz, int(rate_hz), serial=serial, side=side.capitalize())
    if fmt == "cwa":
        device = 43_210 if side == "left" else 43_211
        return write_cwa(out_dir / f"{side}.cwa", t, xyz, rate_hz, device_id=device)
    raise ValueError(f"unknown format {fmt!r}; known: csv, {', '.join(FORMATS)}")


DEFAULT_RATE_HZ = {"csv": 52.0, "psl": 52.0, "gt3x": 30.0, "cwa": 50.0}


# -------------------------------------------------------------------------------------- multi-day
@dataclass
class MultiDay:
    """A recording over several days and nights, one sensor per leg worn throughout (as an actigraph is).

    ``legs``: side -> (t on the device's grid, xyz in g); ``nights``: each night's simulator truth."""

    legs: dict[str, tuple[np.ndarray, np.ndarray]]
    rate_hz: float
    nights: list[Any]

    def in_bed(self) -> list[tuple[float, float]]:
        return [truth.in_bed for truth in self.nights]


def simulate_days(
    profile: str = "rls-moderate",
    seed: int = 0,
    days: int = 3,
    rate_hz: float = 30.0,
    legs: str = "left",
    start_unix_s: float | None = None,
    night_h: float = 8.5,
) -> MultiDay:
    """``days`` nights from the simulator (from 22:30 on consecutive evenings), joined by simulated days.

    The sensor stays on the leg: one fixed mounting, no clock drift, no dropped packets (a logging actigraph
    loses no radio packets). A day is upright (the gravity direction of the next night's first seconds,
    when the person stands) with sensor noise, and walks of 1-7 min every 10-40 min."""
    from simulator.api import simulate_night

    if not 1 <= int(days) <= 14:
        raise ValueError(f"days must be 1-14, got {days!r}")
    start = 1_709_332_200.0 - 86400.0 * (int(seed) % 365) if start_unix_s is None else float(start_unix_s)
    start = float(math.floor(start))
    nights = []
    pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDA75]))
    for k in range(int(days)):
        night = simulate_night(
            profile,
            seed=int(seed) + k,
            rate_hz=rate_hz,
            legs=legs,
            start_unix_s=start + 86400.0 * k,
            duration_h=night_h,
            orientation="fixed",
            drift=False,
            drops=False,
            gap=False,
        )
        nights.append(night.truth)
        for side, leg in night.legs.items():
            t = start + 86400.0 * k + (leg.index - leg.index[0]) / rate_hz
            got = pieces.setdefault(side, [])
            if got:
                up = leg.xyz[: int(2 * rate_hz)].astype(np.float64).mean(axis=0)
                got.append(_day(rng, float(got[-1][0][-1]) + 1.0 / rate_hz, float(t[0]), rate_hz, up))
            got.append((t, leg.xyz))
    joined = {
        side: (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps])) for side, ps in pieces.items()
    }
    return MultiDay(joined, float(rate_hz), nights)


def _day(
    rng: np.random.Generator, t0: float, t1: float, rate_hz: float, up: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = max(0, int((t1 - t0) * rate_hz))
    t = t0 + np.arange(n) / rate_hz
    unit = up / max(float(np.linalg.norm(up)), 1e-9)
    across = np.cross(unit, [1.0, 0.0, 0.0] if abs(unit[0]) < 0.9 else [0.0, 1.0, 0.0])
    across /= np.linalg.norm(across)
    xyz = np.empty((n, 3), dtype=np.float32)
    xyz[:] = unit.astype(np.float32)
    xyz += rng.normal(0.0, 0.003, (n, 3)).astype(np.float32)
    walk = t0 + rng.uniform(60, 600)
    while walk < t1 - 180:
        length = rng.uniform(60, 420)
        a, b = np.searchsorted(t, [walk, min(walk + length, t1 - 60)])
        phase = 2 * np.pi * rng.uniform(0.8, 1.0) * (t[a:b] - walk)
        swing = np.sin(phase)
        strike = np.abs(np.sin(phase)) ** 8
        xyz[a:b] += (0.45 * swing[:, None] * across + 0.9 * strike[:, None] * unit).astype(np.float32)
        walk += length + rng.uniform(600, 2400)
    np.clip(xyz, -8.0, 8.0, out=xyz)
    return t, np.rint(xyz * 1000.0) / np.float32(1000.0)
