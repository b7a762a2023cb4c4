"""One BLE session per sensor: scan, connect, stream, and come back after every drop.

BlueZ forgets a device once scanning stops, so every (re)connect starts with a fresh scan and hands
``BleakClient`` the ``BLEDevice`` it found, never a bare address. Backends are injectable so the
tests and the load bench run the real ``BleakScanner``/``BleakClient`` code against scripted
peripherals (:mod:`collector.testing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason, BleakDBusError, BleakError

from plm.config import SensorSettings
from plm.wire import SampleBatch

from . import polar_pmd as pmd
from . import witmotion as wit
from .batcher import Batcher
from .drivers import BATTERY_LEVEL, DEFAULT_RATE_HZ, DRIVERS, Clock, Driver, StreamStopped
from .timing import TimedChunk

log = logging.getLogger(__name__)

POLAR_NAME_PREFIXES = ("Polar Sense", "Polar OH1", "Polar H10", "Polar Verity")
WIT_NAME_MARKERS = ("WT901", "BWT901", "WT9011")


def guess_driver(device: BLEDevice, adv: AdvertisementData) -> str | None:
    """Which supported driver a scanned device needs, from its name and advertised services."""
    name = adv.local_name or device.name or ""
    uuids = {u.lower() for u in adv.service_uuids}
    if pmd.PMD_SERVICE in uuids or name.startswith(POLAR_NAME_PREFIXES):
        return "polar_pmd"
    if wit.WIT_SERVICE in uuids or any(m in name for m in WIT_NAME_MARKERS):
        return "witmotion"
    return None


@dataclass(frozen=True, slots=True)
class ScanResult:
    address: str
    name: str | None
    driver: str
    rssi: int


async def scan(timeout_s: float = 5.0, *, scanner_backend: type[BaseBleakScanner] | None = None) -> list[ScanResult]:
    """Nearby supported devices, strongest signal first (for ``plm collect --scan``)."""
    kwargs: dict[str, Any] = {"backend": scanner_backend} if scanner_backend else {}
    found = await BleakScanner.discover(timeout_s, return_adv=True, **kwargs)
    out = []
    for device, adv in found.values():
        driver = guess_driver(device, adv)
        if driver:
            out.append(ScanResult(device.address, adv.local_name or device.name, driver, adv.rssi))
    return sorted(out, key=lambda r: -r.rssi)


NO_BLUEZ = ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner")


class BluetoothUnavailable(RuntimeError):
    """This machine has no usable Bluetooth; the message says which part is missing and what to do."""


def bluetooth_problem(exc: BaseException) -> str | None:
    """What an error from starting a scan says about this machine's Bluetooth, or None if it is
    something else (a device out of range, a dropped link...).

    On Linux bleak talks to bluetoothd over the system D-Bus: no D-Bus socket comes back as a bare
    ``FileNotFoundError``, no bluetoothd as a D-Bus ``ServiceUnknown`` error, no adapter as
    :class:`BleakBluetoothNotAvailableError`; none of them names Bluetooth.
    """
    if isinstance(exc, BleakBluetoothNotAvailableError):
        reason = exc.reason
        if reason == BleakBluetoothNotAvailableReason.POWERED_OFF:
            return "the Bluetooth adapter is switched off (turn it on: `bluetoothctl power on`)"
        if reason in (
            BleakBluetoothNotAvailableReason.DENIED_BY_SYSTEM,
            BleakBluetoothNotAvailableReason.DENIED_BY_USER,
            BleakBluetoothNotAvailableReason.DENIED_BY_UNKNOWN,
        ):
            return f"access to Bluetooth was denied ({exc}); on Linux BlueZ admits root and the `bluetooth` group"
        return f"no Bluetooth adapter found ({exc}); check `bluetoothctl list` or plug in a Bluetooth dongle"
    if isinstance(exc, BleakDBusError) and exc.dbus_error in NO_BLUEZ:
        return (
            "bluetoothd is not running (no org.bluez on the system D-Bus); start it: `sudo systemctl start bluetooth`"
        )
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError | PermissionError):
        return (
            f"no Bluetooth adapter / bluetoothd not running: cannot reach the system D-Bus ({exc.strerror or exc}); "
            "on Linux install and start bluez (`sudo systemctl start bluetooth`), in Docker mount /run/dbus"
        )
    return None


async def check_bluetooth(scanner_backend: type[BaseBleakScanner] | None = None) -> None:
    """Start and stop a scan once: raises :class:`BluetoothUnavailable` with a plain reason when this
    machine cannot scan, so ``plm collect`` says it once instead of retrying every sensor forever."""
    kwargs: dict[str, Any] = {"backend": scanner_backend} if scanner_backend else {}
    try:
        async with BleakScanner(**kwargs):
            pass
    except (BleakError, OSError) as exc:
        problem = bluetooth_problem(exc)
        if problem is None:
            raise
        raise BluetoothUnavailable(problem) from None


def matches(sensor: SensorSettings, device: BLEDevice, adv: AdvertisementData) -> bool:
    if sensor.address:
        return device.address.lower() == sensor.address.lower()
    name = adv.local_name or device.name or ""
    if sensor.name:
        return name == sensor.name or name.startswith(sensor.name)
    return guess_driver(device, adv) == sensor.driver


@dataclass
class Backoff:
    """Exponential reconnect delay with jitter, reset once a stream has run for a while."""

    initial_s: float = 1.0
    max_s: float = 60.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.max_s, self.initial_s * 2**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class SessionCounters:
    connects: int = 0
    disconnects: int = 0
    link_gaps: int = 0  # reconnects after a stream had run: a gap in the data
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)  # the most recent few, for status and tests

    def error(self, text: str) -> None:
        self.last_error = text
        self.errors = [*self.errors[-9:], text]


@dataclass
class SensorSession:
    """Keeps one sensor streaming for as long as :meth:`run` runs; batches go to ``emit``."""

    subject: str
    sensor: SensorSettings
    emit: Callable[[list[SampleBatch]], None]
    clock: Clock
    scanner_backend: type[BaseBleakScanner] | None = None
    client_backend: type[BaseBleakClient] | None = None
    scan_timeout_s: float = 20.0
    backoff: Backoff = field(default_factory=Backoff)
    stable_after_s: float = 30.0
    counters: SessionCounters = field(default_factory=SessionCounters)
    battery_pct: int | None = None
    rssi_dbm: int | None = None
    mtu: int | None = None
    connected: bool = False

    def __post_init__(self) -> None:
        if self.sensor.driver not in DRIVERS:
            raise ValueError(f"sensor {self.sensor.id!r}: driver must be one of {sorted(DRIVERS)}")
        if not (self.sensor.address or self.sensor.name):
            raise ValueError(f"sensor {self.sensor.id!r}: give its BLE address or name")
        self.rate_hz = float(self.sensor.rate_hz or DEFAULT_RATE_HZ[self.sensor.driver])
        self.batcher = Batcher(self.rate_hz)
        self.driver: Driver = DRIVERS[self.sensor.driver](rate_hz=self.rate_hz, clock=self.clock, sink=self._on_chunk)
        self._streamed = False

    @property
    def label(self) -> str:
        return f"{self.subject}/{self.sensor.id}"

    def _on_chunk(self, chunk: TimedChunk) -> None:
        if chunk.lost_before:
            log.warning("%s: %d samples lost in the air; new batch after the gap", self.label, chunk.lost_before)
        try:
            batches = self.batcher.add(chunk)
        except ValueError as exc:  # WireFormatError: a timestamp or value the wire refuses
            log.error("%s: dropping samples the wire format refuses: %s", self.label, exc)
            return
        if batches:
            self.emit(batches)

    def flush(self) -> None:
        batches = self.batcher.flush()
        if batches:
            self.emit(batches)

    async def find(self) -> tuple[BLEDevice, AdvertisementData] | None:
        kwargs: dict[str, Any] = {"backend": self.scanner_backend} if self.scanner_backend else {}
        async with BleakScanner(**kwargs) as scanner:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.scan_timeout_s):
                    async for device, adv in scanner.advertisement_data():
                        if matches(self.sensor, device, adv):
                            return device, adv
        return None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._connect_and_stream(stop)
            except asyncio.CancelledError:
                raise
            except (BleakError, TimeoutError, OSError, ValueError, pmd.PmdError, pmd.PmdProtocolError) as exc:
                problem = bluetooth_problem(exc)  # e.g. bluetoothd restarted mid-night: say what, keep trying
                self.counters.error(problem or f"{type(exc).__name__}: {exc}")
                log.warning("%s: %s", self.label, self.counters.last_error)
            finally:
                self.connected = False
            if stop.is_set():
                break
            delay = self.backoff.next()
            log.info("%s: reconnecting in %.1f s", self.label, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _connect_and_stream(self, stop: asyncio.Event) -> None:
        found = await self.find()
        if found is None:
            raise TimeoutError(
                f"{self.sensor.address or self.sensor.name} not seen in a {self.scan_timeout_s:g} s scan"
            )
        device, adv = found
        self.rssi_dbm = adv.rssi
        lost = asyncio.Event()
        kwargs: dict[str, Any] = {"backend": self.client_backend} if self.client_backend else {}
        client = BleakClient(device, disconnected_callback=lambda _c: lost.set(), **kwargs)
        await client.connect()
        self.counters.connects += 1
        started_at = asyncio.get_running_loop().time()
        try:
            self.connected = True
            self.mtu = client.mtu_size
            if self.sensor.driver == "polar_pmd" and self.mtu < pmd.MIN_MTU:
                log.warning(
                    "%s: ATT MTU %d < %d; Polar ACC frames need it (BlueZ may under-report)",
                    self.label,
                    self.mtu,
                    pmd.MIN_MTU,
                )
            await self._read_battery(client)
            if self._streamed:
                self.counters.link_gaps += 1
                log.warning("%s: stream resumed after a link drop; the data has a gap", self.label)
            await self.driver.start(client)
            self._streamed = True
            log.info("%s: streaming %s at %g Hz from %s", self.label, self.driver.name, self.rate_hz, device.address)
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, lost, self.driver.stopped)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            if asyncio.get_running_loop().time() - started_at > self.stable_after_s:
                self.backoff.reset()
            if stop.is_set() and client.is_connected:
                with contextlib.suppress(BleakError, TimeoutError, pmd.PmdError):
                    await self.driver.stop(client)
            elif lost.is_set():
                raise BleakError("link lost")
            elif self.driver.stopped.is_set():
                raise StreamStoppedError("device stopped the measurement")
        finally:
            self.connected = False
            self.driver.link_lost()
            self.flush()  # close the open batch: whatever comes next starts after a gap
            self.counters.disconnects += 1
            if client.is_connected:
                with contextlib.suppress(BleakError, TimeoutError, OSError):
                    await client.disconnect()

    async def _read_battery(self, client: BleakClient) -> None:
        try:
            if client.services.get_characteristic(BATTERY_LEVEL) is None:
                return
            value = await client.read_gatt_char(BATTERY_LEVEL)
            self.battery_pct = int(value[0]) if value else None
        except BleakError as exc:
            log.debug("%s: no battery level: %s", self.label, exc)


class StreamStoppedError(BleakError, StreamStopped):
    pass
