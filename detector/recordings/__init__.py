"""Recordings from files, in one place: every reader returns the same :class:`Recording`.

    the project's CSV (detector/recordings/csvio.py)      t,x,y,z; t in Unix seconds, x/y/z in g
    Polar Sensor Logger ACC text (psl.py)      Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]
    ActiGraph .gt3x (gt3x.py)                  through ActiGraph's pygt3x (extra ``[gt3x]``)
    Axivity AX3 .cwa (cwa.py)                  through scikit-digital-health's ReadCwa (extra ``[cwa]``)

The format is recognised from the file's content (a zip with ``log.bin`` is a .gt3x, a first block
starting ``MD`` is a .cwa, the PSL header line), not from its name. A reader whose package is missing
raises :class:`MissingReader` naming the extra to install. What a reader cannot read right is refused
with :class:`RecordingError` (a :class:`detector.recordings.csvio.CsvError`, so ``plm score`` reports both alike):
one line with the reason and the fix, never a traceback.

Timestamps are Unix seconds (UTC). Devices that keep local time (.gt3x without a TimeZone line, .cwa)
are converted with ``timezone`` (an IANA name such as ``Europe/Berlin``; default: this machine's zone).
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from detector.recordings.csvio import CsvError

FORMATS = ("csv", "psl", "gt3x", "cwa")
PSL_ACC_HEADER = "Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]"
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class RecordingError(CsvError):
    """A recording that cannot be read or scored right; the message names the file, the reason and the fix."""


class MissingReader(RecordingError):
    """The format is known but its reader package is not installed."""


@dataclass
class Recording:
    """One sensor's samples: ``t`` (n,) float64 Unix seconds, strictly increasing; ``xyz`` (n, 3) float in g.

    ``sensor_id`` is the device's own id made fit for a topic (None: the file does not say: the project's CSV);
    ``rate_hz`` the rate the file declares (or, for formats that do not declare one, the nominal rate nearest
    to the samples' median step); ``side`` the leg when the file says it (a .gt3x's subject info)."""

    path: Path
    format: str
    t: np.ndarray
    xyz: np.ndarray
    sensor_id: str | None
    rate_hz: float
    side: str | None = None

    def span(self) -> tuple[float, float]:
        return float(self.t[0]), float(self.t[-1])


def sensor_id_from(text: str, prefix: str = "") -> str | None:
    """A device id as a wire id (1-32 of letters, digits, ``_``, ``-``), or None when nothing is left of it."""
    cleaned = _BAD_ID_CHARS.sub("", f"{prefix}{text}".strip())[:32].strip("_-")
    return cleaned or None


def sniff(path: Path) -> str:
    """Which reader a file needs, from its first bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile as exc:
            raise RecordingError(f"{path}: a damaged zip archive ({exc}); copy the .gt3x file again") from None
        if "info.txt" in names and ({"log.bin", "activity.bin"} & names):
            return "gt3x"
        raise RecordingError(
            f"{path}: a zip archive without the info.txt and log.bin of an ActiGraph .gt3x file; "
            "unpack it and give the recordings inside"
        )
    if head[:2] == b"MD" and len(head) >= 4 and int.from_bytes(head[2:4], "little") in (0xFFFC, 1020):
        return "cwa"
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    if first_line.startswith("Phone timestamp;"):
        return "psl"
    return "csv"


def read_recording(path: str | Path, *, timezone: str | None = None) -> Recording:
    """Read any known format (see the module doc); RecordingError / CsvError with the fix when it cannot."""
    path = Path(path)
    kind = sniff(path)
    if kind == "psl":
        from detector.recordings.psl import read_psl

        return read_psl(path)
    if kind == "gt3x":
        from detector.recordings.gt3x import read_gt3x

        return read_gt3x(path, timezone=timezone)
    if kind == "cwa":
        from detector.recordings.cwa import read_cwa

        return read_cwa(path, timezone=timezone)
    return read_csv(path)


def read_csv(path: Path) -> Recording:
    """The project's CSV, read by detector/recordings/csvio.py (the one CSV reader); the rate is the median step's."""
    from detector.recordings.csvio import read_leg_csv

    t, xyz = read_leg_csv(path)
    return Recording(path, "csv", t, xyz, None, rate_from_steps(t))


def rate_from_steps(t: np.ndarray) -> float:
    """The sample rate of the samples' steps (0 when there is only one sample).

    Steps within a quarter of the median step count (holes do not); their number over their sum is the rate.
    The median alone is not precise enough: Unix seconds as doubles carry ~0.2 us, so one step's length is
    known to ~10 ppm, and a rate off by that puts a sample a whole step off the grid after an hour."""
    if t.shape[0] < 2:
        return 0.0
    steps = np.diff(t)
    median = float(np.median(steps[: min(steps.shape[0], 200_000)]))
    if median <= 0:
        return 0.0
    regular = steps[np.abs(steps - median) <= 0.25 * median]
    return float(regular.shape[0] / regular.sum())


def zone_of(timezone: str | None) -> dt.tzinfo | None:
    """``timezone`` as a tzinfo (None: this machine's local zone); RecordingError for an unknown name."""
    if timezone is None:
        return None
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RecordingError(
            f"unknown time zone {timezone!r}: give an IANA name such as Europe/Berlin or America/New_York"
        ) from None


def local_to_unix(local_s: np.ndarray, zone: dt.tzinfo | None) -> np.ndarray:
    """Convert a device's local clock (seconds since 1970-01-01 of its wall clock) to Unix seconds.

    The zone's UTC offset is looked up once per hour of the recording (a daylight-saving change is then
    honoured to the hour: the repeated hour of autumn is read as its first pass)."""
    if local_s.shape[0] == 0:
        return local_s.astype(np.float64)
    first, last = int(np.floor(float(local_s[0]) / 3600)), int(np.floor(float(np.max(local_s)) / 3600))
    offsets = np.array([_utc_offset_s(hour * 3600, zone) for hour in range(first, last + 1)])
    index = np.floor(local_s / 3600).astype(np.int64) - first
    np.clip(index, 0, offsets.shape[0] - 1, out=index)
    return local_s - offsets[index]


def _utc_offset_s(local_s: float, zone: dt.tzinfo | None) -> float:
    naive = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=local_s)
    aware = naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()
    offset = aware.utcoffset()
    return offset.total_seconds() if offset is not None else 0.0
