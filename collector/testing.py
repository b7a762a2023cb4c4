"""Scripted BLE peripherals: the project's one test double, standing in for the radio only.

``ScriptedRadio`` supplies a ``BaseBleakScanner`` and a ``BaseBleakClient`` subclass for bleak's
``backend=`` hooks, so the real ``BleakScanner``/``BleakClient`` code runs against peripherals that
advertise, answer GATT reads/writes, replay device frames, drop frames and disconnect on cue.
Used by the tests and by ``bench/collector_load.py``; never by the collector itself.

Arrival times: a peripheral can drive a :class:`VirtualClock` (set just before each notification
to the frame's true time plus a scripted latency), so a test replays an hour in seconds and still
knows exactly when every sample "really" happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError

from . import polar_pmd as pmd
from . import witmotion as wit
from .drivers import BATTERY_LEVEL, BATTERY_SERVICE

NS = 1_000_000_000


class VirtualClock:
    """Wall-clock ns that the scripted peripherals set; the collector reads it as arrival time."""

    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns


# ----------------------------------------------------------------------------- frame builders


def encode_delta_payload(samples: np.ndarray, block: int = 35) -> bytes:
    """Inverse of :func:`collector.polar_pmd.decode_delta` for 16-bit, 3-channel samples."""
    samples = np.asarray(samples, dtype=np.int64)
    out = bytearray(struct.pack("<3h", *samples[0]))
    deltas = np.diff(samples, axis=0)
    for start in range(0, len(deltas), block):
        d = deltas[start : start + block]
        # two's complement width that holds every delta of the block
        bits = max(1, int(max(int(np.max(d)), 0)).bit_length() + 1, int(max(-int(np.min(d)) - 1, 0)).bit_length() + 1)
        values = (d.reshape(-1) & ((1 << bits) - 1)).astype(np.uint64)
        bitstream = ((values[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8).reshape(-1)
        out += bytes([bits, len(d)]) + np.packbits(bitstream, bitorder="little").tobytes()
    return bytes(out)


def encode_acc_frame(device_ns: int, milli_g: np.ndarray, *, compressed: bool = True) -> bytes:
    """A PMD ACC notification: delta-compressed 0x81 or raw type 1, timestamp of the last sample."""
    header = bytes([pmd.MEASUREMENT_ACC]) + int(device_ns).to_bytes(8, "little")
    if compressed:
        return header + b"\x81" + encode_delta_payload(milli_g)
    return header + b"\x01" + np.asarray(milli_g, dtype="<i2").tobytes()


def encode_wit_packet(acc_raw: np.ndarray) -> bytes:
    values = np.zeros(9, dtype="<i2")
    values[:3] = acc_raw
    return wit.HEADER + values.tobytes()


def ankle_signal(n: int, rate_hz: float, seed: int = 0) -> np.ndarray:
    """A still ankle with a few movements, in integer milli-g (n, 3)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate_hz
    base = np.array([120.0, -250.0, 960.0])
    sig = np.tile(base, (n, 1)) + rng.normal(0, 3, (n, 3))
    for start in np.arange(5.0, t[-1] if n else 0, 23.0):
        m = (t >= start) & (t < start + 1.5)
        sig[m] += 400 * np.sin(2 * np.pi * 2.0 * (t[m] - start))[:, None] * np.array([1.0, 0.6, -0.3])
    return np.rint(sig).astype(np.int64)


# ----------------------------------------------------------------------------- peripherals


@dataclass
class ScriptedPeripheral:
    address: str
    name: str
    advertised_uuids: list[str] = field(default_factory=list)
    rssi: int = -60
    mtu: int = 247
    battery_pct: int | None = 87
    advertising: bool = True
    link: ScriptedClientBase | None = None
    connects: int = 0

    def gatt(self) -> dict[str, dict[str, list[str]]]:
        table: dict[str, dict[str, list[str]]] = {}
        if self.battery_pct is not None:
            table[BATTERY_SERVICE] = {BATTERY_LEVEL: ["read", "notify"]}
        return table

    @property
    def connected(self) -> bool:
        return self.link is not None

    async def read(self, uuid: str) -> bytes:
        if uuid == BATTERY_LEVEL and self.battery_pct is not None:
            return bytes([self.battery_pct])
        raise BleakError(f"characteristic {uuid} not readable")

    async def write(self, uuid: str, data: bytes) -> None:
        raise BleakError(f"characteristic {uuid} not writable")

    def notify(self, uuid: str, data: bytes) -> None:
        if self.link is not None:
            self.link.deliver(uuid, data)

    def on_connect(self) -> None:
        self.connects += 1

    def on_disconnect(self) -> None:
        """Link gone (either side); subclasses stop streaming."""

    def drop_link(self, away_s: float = 0.0) -> None:
        """Peripheral-side disconnect (out of range); stays silent ``away_s`` real seconds."""
        link, self.link = self.link, None
        self.on_disconnect()
        if link is not None:
            link.link_lost()
        if away_s > 0:
            self.advertising = False
            asyncio.get_running_loop().call_later(away_s, setattr, self, "advertising", True)


@dataclass
class ScriptedPolar(ScriptedPeripheral):
    """A Polar Verity Sense answering PMD commands and replaying ACC frames.

    ``frames``: (true wall ns of the last sample, device ns, notification bytes), in order.
    ``latency_ns(i)``: extra delay of frame i; ``pace_s``: real seconds between notifications.
    """

    name: str = "Polar Sense 0A1B2C3D"
    features: int = 0x6E  # PPG, ACC, PPI, GYRO, MAG
    settings_params: bytes = bytes.fromhex("00 01 34 00 01 01 10 00 02 01 08 00 04 01 03")
    packet_params: int = 0  # > 0: split responses into packets with this many parameter bytes
    start_errors: list[int] = field(default_factory=list)  # statuses for the next START commands
    frames: list[tuple[int, int, bytes]] = field(default_factory=list)
    clock: VirtualClock | None = None
    latency_ns: Callable[[int], int] = lambda i: 20_000_000
    pace_s: float = 0.0
    drop_frames: set[int] = field(default_factory=set)
    disconnect_at: dict[int, tuple[int, float]] = field(default_factory=dict)  # frame -> (frames skipped, away s)
    stop_measurement_at: set[int] = field(default_factory=set)
    next_frame: int = 0
    streaming: bool = False
    commands: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def gatt(self) -> dict[str, dict[str, list[str]]]:
        table = super().gatt()
        table[pmd.PMD_SERVICE] = {
            pmd.PMD_CONTROL: ["read", "write", "indicate"],
            pmd.PMD_DATA: ["notify"],
        }
        return table

    async def read(self, uuid: str) -> bytes:
        if uuid == pmd.PMD_CONTROL:
            return bytes([0x0F, self.features])
        return await super().read(uuid)

    def _respond(self, op: int, meas: int, status: int, params: bytes = b"") -> None:
        size = self.packet_params or max(1, len(params))
        chunks = [params[i : i + size] for i in range(0, len(params), size)] or [b""]
        for i, chunk in enumerate(chunks):
            more = 1 if i < len(chunks) - 1 else 0
            self.notify(pmd.PMD_CONTROL, bytes([0xF0, op, meas, status, more]) + chunk)

    async def write(self, uuid: str, data: bytes) -> None:
        if uuid != pmd.PMD_CONTROL:
            return await super().write(uuid, data)
        self.commands.append(bytes(data))
        op, meas = data[0], data[1] if len(data) > 1 else 0
        await asyncio.sleep(0)
        if meas != pmd.MEASUREMENT_ACC:
            self._respond(op, meas, pmd.PmdStatus.NOT_SUPPORTED)
        elif op == pmd.PmdOp.GET_SETTINGS:
            self._respond(op, meas, 0, self.settings_params)
        elif op == pmd.PmdOp.START:
            status = self.start_errors.pop(0) if self.start_errors else self._check_start(bytes(data))
            if status == 0 and self.streaming:
                status = pmd.PmdStatus.ALREADY_IN_STATE
            self._respond(op, meas, status)
            if status == 0:
                self.streaming = True
                self._task = asyncio.get_running_loop().create_task(self._stream())
        elif op == pmd.PmdOp.STOP:
            self._respond(op, meas, 0 if self.streaming else pmd.PmdStatus.ALREADY_IN_STATE)
            self._stop_stream()
        else:
            self._respond(op, meas, pmd.PmdStatus.INVALID_OP_CODE)

    def _check_start(self, command: bytes) -> int:
        if self.mtu < pmd.MIN_MTU:
            return pmd.PmdStatus.INVALID_MTU
        settings = pmd.parse_settings(command[2:])
        if settings.get(pmd.PmdSetting.SAMPLE_RATE) != [52]:
            return pmd.PmdStatus.INVALID_SAMPLE_RATE
        if settings.get(pmd.PmdSetting.RANGE) != [8]:
            return pmd.PmdStatus.INVALID_RANGE
        return 0

    def _stop_stream(self) -> None:
        self.streaming = False
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    def on_disconnect(self) -> None:
        self._stop_stream()  # Polar stops measuring when the link goes

    async def _stream(self) -> None:
        while self.streaming and self.next_frame < len(self.frames):
            i = self.next_frame
            await asyncio.sleep(self.pace_s)
            if not self.streaming:
                return
            self.next_frame += 1
            if i in self.disconnect_at:
                skipped, away = self.disconnect_at.pop(i)
                self.next_frame = i + skipped
                self.drop_link(away)
                return
            if i in self.stop_measurement_at:
                self.stop_measurement_at.discard(i)
                self.next_frame = i
                self.notify(pmd.PMD_CONTROL, bytes([0x01, pmd.MEASUREMENT_ACC]))
                self._stop_stream()
                return
            if i in self.drop_frames:
                continue
            true_ns, _device_ns, payload = self.frames[i]
            if self.clock is not None:
                self.clock.now_ns = true_ns + self.latency_ns(i)
            self.notify(pmd.PMD_DATA, payload)
        if self.next_frame >= len(self.frames):
            self.done.set()


def polar_frames(
    milli_g: np.ndarray,
    *,
    wall0_ns: int,
    device0_ns: int = 536_457_600 * NS,  # 2017-01-01: a Verity whose clock was never set
    rate_hz: float = 52.0,
    per_frame: int = 71,
    drift_ppm: float = 0.0,
    compressed: bool = True,
) -> list[tuple[int, int, bytes]]:
    """Frames of ``per_frame`` samples; the device clock ticks 1/rate per sample and runs
    ``drift_ppm`` fast against true time. Returns (true ns of last sample, device ns, bytes)."""
    frames = []
    step_dev = NS / rate_hz
    for start in range(0, len(milli_g) - per_frame + 1, per_frame):
        last = start + per_frame - 1
        device_ns = device0_ns + round(last * step_dev)
        true_ns = wall0_ns + round(last * step_dev / (1 + drift_ppm * 1e-6))
        frames.append(
            (true_ns, device_ns, encode_acc_frame(device_ns, milli_g[start : last + 1], compressed=compressed))
        )
    return frames


@dataclass
class ScriptedWitMotion(ScriptedPeripheral):
    """A BWT901BLE streaming 0x55 0x61 packets, ``per_notification`` to a notification."""

    name: str = "WT901BLE68"
    acc_raw: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    wall0_ns: int = 0
    rate_hz: float = 50.0
    per_notification: int = 2
    split_every: int = 0  # > 0: every Nth notification is cut in two mid-packet
    garbage_at: set[int] = field(default_factory=set)
    drop_notifications: set[int] = field(default_factory=set)
    clock: VirtualClock | None = None
    latency_ns: Callable[[int], int] = lambda i: 15_000_000
    pace_s: float = 0.0
    writes: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def gatt(self) -> dict[str, dict[str, list[str]]]:
        table = super().gatt()
        table[wit.WIT_SERVICE] = {wit.WIT_NOTIFY: ["notify"], wit.WIT_WRITE: ["write-without-response"]}
        return table

    async def write(self, uuid: str, data: bytes) -> None:
        if uuid != wit.WIT_WRITE:
            return await super().write(uuid, data)
        self.writes.append(bytes(data))

    def subscribed(self, uuid: str) -> None:
        if uuid == wit.WIT_NOTIFY and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._stream())

    def on_disconnect(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    async def _stream(self) -> None:
        period = NS / self.rate_hz
        for j, start in enumerate(range(0, len(self.acc_raw), self.per_notification)):
            await asyncio.sleep(self.pace_s)
            chunk = self.acc_raw[start : start + self.per_notification]
            payload = b"".join(encode_wit_packet(v) for v in chunk)
            if j in self.garbage_at:
                payload = b"\x13\x55\x00\x61" + payload
            last = start + len(chunk) - 1
            if j in self.drop_notifications:
                continue
            if self.clock is not None:
                self.clock.now_ns = self.wall0_ns + round(last * period) + self.latency_ns(j)
            if self.split_every and j % self.split_every == self.split_every - 1 and len(payload) > 7:
                self.notify(wit.WIT_NOTIFY, payload[:7])
                self.notify(wit.WIT_NOTIFY, payload[7:])
            else:
                self.notify(wit.WIT_NOTIFY, payload)
        self.done.set()


# ----------------------------------------------------------------------------- bleak backends


class ScriptedClientBase(BaseBleakClient):
    """Bound to a radio by :meth:`ScriptedRadio.client_backend`."""

    radio: ScriptedRadio

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.get("disconnected_callback"),
            timeout=kwargs.get("timeout", 10.0),
        )
        details = getattr(address_or_ble_device, "details", None)
        self._p = details if isinstance(details, ScriptedPeripheral) else self.radio.by_address(self.address)
        self._connected = False
        self._callbacks: dict[str, Callable[[bytearray], None]] = {}

    @property
    def name(self) -> str:
        return self._p.name if self._p else self.address

    @property
    def mtu_size(self) -> int:
        return self._p.mtu if self._p else 23

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        p = self._p
        if p is None or not p.advertising or p.connected or p.address not in self.radio.peripherals:
            raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.")
        services = BleakGATTServiceCollection()
        handle = 1
        for s_uuid, chars in p.gatt().items():
            service = BleakGATTService(None, handle, s_uuid)
            services.add_service(service)
            handle += 1
            for c_uuid, props in chars.items():
                services.add_characteristic(
                    BleakGATTCharacteristic(None, handle, c_uuid, cast(Any, props), lambda: p.mtu - 3, service)
                )
                handle += 2
        self.services = services
        self._connected = True
        p.link = self
        p.on_connect()

    async def disconnect(self) -> None:
        if self._connected and self._p is not None and self._p.link is self:
            self._p.link = None
            self._p.on_disconnect()
        self._connected = False

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def unpair(self) -> None:
        return None

    def _check(self) -> ScriptedPeripheral:
        if not self._connected or self._p is None:
            raise BleakError("Not connected")
        return self._p

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        return bytearray(await self._check().read(characteristic.uuid))

    async def read_gatt_descriptor(self, descriptor: Any, **kwargs: Any) -> bytearray:
        raise BleakError("descriptors are not scripted")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        await self._check().write(characteristic.uuid, bytes(data))

    async def write_gatt_descriptor(self, descriptor: Any, data: Any) -> None:
        raise BleakError("descriptors are not scripted")

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: Any, **kwargs: Any) -> None:
        p = self._check()
        self._callbacks[characteristic.uuid] = callback
        subscribed = getattr(p, "subscribed", None)
        if subscribed is not None:
            subscribed(characteristic.uuid)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._callbacks.pop(characteristic.uuid, None)

    # peripheral side
    def deliver(self, uuid: str, data: bytes) -> None:
        callback = self._callbacks.get(uuid)
        if callback is not None and self._connected:
            callback(bytearray(data))

    def link_lost(self) -> None:
        if self._connected:
            self._connected = False
            if self._disconnected_callback is not None:
                self._disconnected_callback()


class ScriptedScannerBase(BaseBleakScanner):
    radio: ScriptedRadio

    def __init__(self, detection_callback: Any = None, service_uuids: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        self._task = asyncio.get_running_loop().create_task(self._advertise())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _advertise(self) -> None:
        while True:
            await asyncio.sleep(self.radio.advert_interval_s)
            for p in list(self.radio.peripherals.values()):
                if not p.advertising or p.connected:
                    continue
                adv = AdvertisementData(p.name, {}, {}, list(p.advertised_uuids), None, p.rssi, ())
                if not self.is_allowed_uuid(adv.service_uuids):
                    continue
                device = self.create_or_update_device(p.address, p.address, p.name, p, adv)
                self.call_detection_callbacks(device, adv)


@dataclass
class ScriptedRadio:
    peripherals: dict[str, ScriptedPeripheral] = field(default_factory=dict)
    advert_interval_s: float = 0.005

    def add(self, *peripherals: ScriptedPeripheral) -> ScriptedRadio:
        for p in peripherals:
            self.peripherals[p.address] = p
        return self

    def by_address(self, address: str) -> ScriptedPeripheral | None:
        return self.peripherals.get(address) or next(
            (p for a, p in self.peripherals.items() if a.lower() == address.lower()), None
        )

    def client_backend(self) -> type[BaseBleakClient]:
        return type("ScriptedBleakClient", (ScriptedClientBase,), {"radio": self})

    def scanner_backend(self) -> type[BaseBleakScanner]:
        return type("ScriptedBleakScanner", (ScriptedScannerBase,), {"radio": self})


def true_times(n: int, wall0_ns: int, rate_hz: float, drift_ppm: float = 0.0) -> np.ndarray:
    """True wall ns of sample j for a device ticking 1/rate per sample, ``drift_ppm`` fast."""
    return wall0_ns + np.round(np.arange(n) * (NS / rate_hz) / (1 + drift_ppm * 1e-6)).astype(np.int64)
