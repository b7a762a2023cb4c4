"""WitMotion BWT901BLE / WT901BLE5.0 protocol: pure command builders and a streaming packet reader.

The device streams 20-byte ``55 61`` packets with no checksum and no timestamp. BLE notifications
do not respect packet boundaries (several packets in one, a packet split across two), and a
reconnect can start mid-packet, so the reader keeps a byte buffer and resynchronises on the
header; bytes it had to skip are counted, never silently eaten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIT_SERVICE = "0000ffe5-0000-1000-8000-00805f9a34fb"
WIT_NOTIFY = "0000ffe4-0000-1000-8000-00805f9a34fb"
WIT_WRITE = "0000ffe9-0000-1000-8000-00805f9a34fb"

PACKET_LEN = 20
HEADER = b"\x55\x61"
ACC_FULL_SCALE_G = 16.0
GYRO_FULL_SCALE_DPS = 2000.0
ANGLE_FULL_SCALE_DEG = 180.0

UNLOCK = bytes.fromhex("FFAA6988B5")
SAVE = bytes.fromhex("FFAA000000")
RATE_CODES = {10: 0x06, 20: 0x07, 50: 0x08, 100: 0x09, 200: 0x0B}


def rate_command(rate_hz: float) -> bytes:
    """``FF AA 03 <code> 00``; only the rates the firmware knows are accepted."""
    code = RATE_CODES.get(int(rate_hz)) if float(rate_hz).is_integer() else None
    if code is None:
        raise ValueError(f"WitMotion rate {rate_hz} Hz unsupported; choose one of {sorted(RATE_CODES)} Hz")
    return bytes([0xFF, 0xAA, 0x03, code, 0x00])


def decode_packet(packet: bytes) -> np.ndarray:
    """The 9 raw int16 values of one packet: acc x,y,z, gyro x,y,z, angle x,y,z."""
    if len(packet) != PACKET_LEN or packet[:2] != HEADER:
        raise ValueError(f"not a WitMotion 0x55 0x61 packet: {bytes(packet).hex(' ')}")
    return np.frombuffer(bytes(packet), dtype="<i2", offset=2).astype(np.int64)


def acc_g(raw: np.ndarray) -> np.ndarray:
    """Raw int16 acceleration (any shape, last axis x,y,z) -> g."""
    return raw * (ACC_FULL_SCALE_G / 32768.0)


@dataclass
class PacketReader:
    """Streaming reassembly of 0x55 0x61 packets from arbitrary notification chunks."""

    garbage_bytes: int = 0
    packets: int = 0

    def __post_init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> np.ndarray:
        """Append a notification; return the raw values of every complete packet, shape (n, 9)."""
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        i = 0
        n = len(buf)
        while n - i >= 2:
            if buf[i] == 0x55 and buf[i + 1] == 0x61:
                if n - i < PACKET_LEN:
                    break
                out.append(bytes(buf[i : i + PACKET_LEN]))
                i += PACKET_LEN
                continue
            j = buf.find(HEADER, i + 1)
            if j < 0:
                # keep a trailing 0x55: it may be the first half of a header
                j = n - 1 if buf[n - 1] == 0x55 else n
            self.garbage_bytes += j - i
            i = j
        del buf[:i]
        self.packets += len(out)
        if not out:
            return np.empty((0, 9), dtype=np.int64)
        return np.frombuffer(b"".join(out), dtype="<i2").reshape(-1, 10)[:, 1:].astype(np.int64)

    def reset(self) -> None:
        """Forget a partial packet (after a disconnect the rest of it will never come)."""
        self._buf.clear()
