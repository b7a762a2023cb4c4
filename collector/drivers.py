"""Device drivers: configure a connected device's accelerometer stream and turn notifications into
timed samples. Protocol details are in the pure modules (:mod:`.polar_pmd`, :mod:`.witmotion`);
this is the thin async shell that talks to a ``bleak.BleakClient``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from bleak import BleakClient

from . import polar_pmd as pmd
from . import witmotion as wit
from .timing import CounterTimeline, DeviceClockTimeline, TimedChunk

log = logging.getLogger(__name__)

BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9a34fb"
BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9a34fb"
COMMAND_TIMEOUT_S = 5.0

ChunkSink = Callable[[TimedChunk], None]
Clock = Callable[[], int]


class StreamStopped(Exception):
    """The device ended the stream on its own (Polar "measurement stopped", e.g. on the charger)."""


@dataclass
class DriverStats:
    frames_received: int = 0
    frames_bad: int = 0  # undecodable notifications
    samples: int = 0

    def frames_dropped(self, lost_samples: int, samples_per_frame: float) -> int:
        return self.frames_bad + int(np.ceil(lost_samples / max(samples_per_frame, 1.0)))


@dataclass
class Driver:
    """Common shape; subclasses implement :meth:`start` and :meth:`stop`."""

    rate_hz: float
    clock: Clock
    sink: ChunkSink
    stats: DriverStats = field(default_factory=DriverStats)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    name = "driver"
    model = "unknown"
    service_uuid = ""
    samples_per_frame = 1.0

    async def start(self, client: BleakClient) -> None:
        raise NotImplementedError

    async def stop(self, client: BleakClient) -> None:
        raise NotImplementedError

    # every driver keeps a timeline (subclasses set it in __post_init__): its counters are the driver's
    timeline: DeviceClockTimeline | CounterTimeline = field(init=False)

    def link_lost(self) -> None:
        self.timeline.link_lost()

    @property
    def lost_samples(self) -> int:
        return self.timeline.lost_samples

    @property
    def gaps(self) -> int:
        return self.timeline.gaps

    @property
    def drift_ppm(self) -> float:
        return self.timeline.tracker.drift_ppm


@dataclass
class PolarPmdDriver(Driver):
    """Polar Verity Sense / OH1 / H10 over PMD: ACC 16 bit, 8 g by default.

    The device clock is not set (that needs Polar's PSFTP protocol, outside the public PMD facts);
    device time is mapped to wall time by :class:`~.timing.OffsetTracker` instead.
    """

    range_g: int = 8
    resolution: int = 16
    channels: int | None = 3
    name = "polar_pmd"
    model = "Polar PMD"
    service_uuid = pmd.PMD_SERVICE
    samples_per_frame = 71.0
    timeline: DeviceClockTimeline = field(init=False)

    def __post_init__(self) -> None:
        self.timeline = DeviceClockTimeline(self.rate_hz)
        self._assembler = pmd.ResponseAssembler()
        self._waiting: asyncio.Future[pmd.ControlResponse] | None = None
        self.factor = 1.0
        self.features: set[str] = set()
        self.settings: dict[pmd.PmdSetting, list[int | float]] = {}

    # -- control point
    def _on_control(self, _char: object, data: bytearray) -> None:
        try:
            msg = self._assembler.feed(bytes(data))
        except pmd.PmdProtocolError as exc:
            log.warning("ignoring malformed PMD control indication: %s", exc)
            return
        if isinstance(msg, pmd.MeasurementStopped):
            log.warning("Polar stopped measurement(s) %s on its own", list(msg.measurements))
            if pmd.MEASUREMENT_ACC in msg.measurements or not msg.measurements:
                self.stopped.set()
        elif msg is not None and self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(msg)

    async def _command(self, client: BleakClient, command: bytes) -> pmd.ControlResponse:
        self._waiting = asyncio.get_running_loop().create_future()
        await client.write_gatt_char(pmd.PMD_CONTROL, command, response=True)
        try:
            response = await asyncio.wait_for(self._waiting, COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise TimeoutError(
                f"Polar did not answer PMD command {command.hex(' ')} within {COMMAND_TIMEOUT_S} s"
            ) from None
        finally:
            self._waiting = None
        if response.op != command[0]:
            raise pmd.PmdProtocolError(f"PMD answered op {response.op} to command {command.hex(' ')}")
        return response

    # -- data
    def _on_data(self, _char: object, data: bytearray) -> None:
        arrival = self.clock()
        try:
            frame = pmd.decode_frame(data, resolution=self.resolution, channels=self.channels or 3, factor=self.factor)
        except pmd.PmdProtocolError as exc:
            self.stats.frames_bad += 1
            log.warning("dropping undecodable Polar frame (%d bytes): %s", len(data), exc)
            return
        self.stats.frames_received += 1
        self.stats.samples += len(frame.samples)
        xyz_g = frame.samples * (frame.to_milli_g / 1000.0)
        self.sink(self.timeline.frame(frame.device_ns, xyz_g, arrival))

    async def start(self, client: BleakClient) -> None:
        self.stopped.clear()
        self._assembler.reset()
        await client.start_notify(pmd.PMD_CONTROL, self._on_control)
        self.features = pmd.parse_features(await client.read_gatt_char(pmd.PMD_CONTROL))
        if "ACC" not in self.features:
            raise pmd.PmdProtocolError(
                f"this Polar device has no accelerometer stream (features {sorted(self.features)})"
            )
        reply = (await self._command(client, pmd.get_settings_command())).raise_for_status()
        self.settings = pmd.parse_settings(reply.params)
        rates = self.settings.get(pmd.PmdSetting.SAMPLE_RATE, [])
        if rates and int(self.rate_hz) not in rates:
            raise ValueError(f"Polar does not offer ACC at {self.rate_hz:g} Hz; it offers {rates} Hz")
        self.factor = float(self.settings.get(pmd.PmdSetting.FACTOR, [1.0])[0])
        if pmd.PmdSetting.CHANNELS not in self.settings:
            self.channels = None  # H10 / OH1 do not take the channel setting
        await client.start_notify(pmd.PMD_DATA, self._on_data)
        command = pmd.start_acc_command(int(self.rate_hz), self.resolution, self.range_g, self.channels)
        response = await self._command(client, command)
        if response.status == pmd.PmdStatus.ALREADY_IN_STATE:
            log.info("Polar ACC stream was still running; restarting it with our settings")
            await self._command(client, pmd.stop_command())
            response = await self._command(client, command)
        response.raise_for_status()
        if response.params:
            extra = pmd.parse_settings(response.params)
            if pmd.PmdSetting.FACTOR in extra:
                self.factor = float(extra[pmd.PmdSetting.FACTOR][0])

    async def stop(self, client: BleakClient) -> None:
        response = await self._command(client, pmd.stop_command())
        if not response.ok and response.status != pmd.PmdStatus.ALREADY_IN_STATE:
            log.warning("Polar refused to stop ACC: %s", response.status_name)

    def link_lost(self) -> None:
        super().link_lost()
        self._assembler.reset()


@dataclass
class WitMotionDriver(Driver):
    """WitMotion BWT901BLE family: 0x55 0x61 packets at 50 Hz by default, no device clock."""

    name = "witmotion"
    model = "WitMotion BWT901BLE"
    service_uuid = wit.WIT_SERVICE
    samples_per_frame = 2.0
    timeline: CounterTimeline = field(init=False)

    def __post_init__(self) -> None:
        self.timeline = CounterTimeline(self.rate_hz)
        self.reader = wit.PacketReader()
        self._saved = False

    def _on_data(self, _char: object, data: bytearray) -> None:
        arrival = self.clock()
        before = self.reader.garbage_bytes
        raw = self.reader.feed(bytes(data))
        if self.reader.garbage_bytes != before:
            self.stats.frames_bad += 1
            log.debug("WitMotion resynchronised after %d garbage bytes", self.reader.garbage_bytes - before)
        self.stats.frames_received += 1
        if len(raw):
            self.stats.samples += len(raw)
            self.sink(self.timeline.packets(wit.acc_g(raw[:, :3]), arrival))

    async def start(self, client: BleakClient) -> None:
        self.reader.reset()
        await client.start_notify(wit.WIT_NOTIFY, self._on_data)
        await client.write_gatt_char(wit.WIT_WRITE, wit.UNLOCK, response=False)
        await client.write_gatt_char(wit.WIT_WRITE, wit.rate_command(self.rate_hz), response=False)
        if not self._saved:  # once per run: each save is a flash write on the device
            await client.write_gatt_char(wit.WIT_WRITE, wit.SAVE, response=False)
            self._saved = True

    async def stop(self, client: BleakClient) -> None:
        await client.stop_notify(wit.WIT_NOTIFY)

    def link_lost(self) -> None:
        super().link_lost()
        self.reader.reset()


DRIVERS: dict[str, type[Driver]] = {"polar_pmd": PolarPmdDriver, "witmotion": WitMotionDriver}
DEFAULT_RATE_HZ = {"polar_pmd": 52.0, "witmotion": 50.0}
