"""``plm collect``: stream the configured BLE sensors to MQTT; ``--scan`` lists supported devices."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collect",
        help="stream BLE ankle sensors to MQTT (or --scan for devices)",
        description="Connect to the sensors in the configuration and publish 1-second sample batches "
        "to MQTT. Batches wait in an on-disk queue while the broker is away. It measures; it does not diagnose.",
    )
    p.add_argument("--scan", action="store_true", help="list nearby supported devices (driver, address, RSSI)")
    p.add_argument("--scan-seconds", type=float, default=8.0, help="how long --scan listens (default 8)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until SIGTERM/Ctrl-C)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from plm.config import load_settings

    if args.scan:
        return asyncio.run(_scan(args.scan_seconds))
    settings = load_settings(args.config)
    return asyncio.run(_collect(settings, args.seconds))


async def _scan(seconds: float) -> int:
    from bleak.exc import BleakError

    from .ble import bluetooth_problem, scan

    try:
        found = await scan(seconds)
    except (BleakError, OSError) as exc:
        print(f"plm collect --scan: {bluetooth_problem(exc) or f'Bluetooth unavailable: {exc}'}", file=sys.stderr)
        return 1
    if not found:
        print("no supported devices seen (is the sensor awake and not connected to a phone?)")
        return 1
    print(f"{'driver':<10} {'address':<20} {'rssi':>5}  name")
    for r in found:
        print(f"{r.driver:<10} {r.address:<20} {r.rssi:>5}  {r.name or ''}")
    return 0


async def _collect(settings, seconds: float | None) -> int:
    import asyncio

    from .ble import BluetoothUnavailable, check_bluetooth
    from .service import Collector

    try:
        collector = Collector(settings)
    except ValueError as exc:
        print(f"plm collect: {exc}")
        return 2
    try:
        await check_bluetooth()
    except BluetoothUnavailable as exc:
        print(f"plm collect: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await collector.run(stop, seconds)
    return 0
