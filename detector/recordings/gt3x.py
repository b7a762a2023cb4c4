"""ActiGraph ``.gt3x`` files (GT3X+, wGT3X-BT, ActiSleep+, GT9X), read by ActiGraph's own ``pygt3x``.

pygt3x reads the zip's ``log.bin`` records and ``info.txt`` and calibrates the samples to g; nothing of the
format is parsed here. Its timestamps are the device's clock, which ActiLife sets to local time: they are
converted to Unix time with the ``TimeZone`` line of ``info.txt`` when there is one, else with ``timezone``
(IANA name; default this machine's zone). Samples pygt3x fills in for the device's idle sleep mode (it
stops sampling when still and the reader repeats the last value) are dropped: they were not measured,
and a flat copy would read as a sensor without noise. The samples become missing data instead.

Install with ``pip install 'plm-monitor[gt3x]'``.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np

from detector.recordings import MissingReader, Recording, RecordingError, local_to_unix, sensor_id_from, zone_of

_OFFSET = re.compile(r"^([+-]?)(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def read_gt3x(path: Path, *, timezone: str | None = None) -> Recording:
    try:
        from pygt3x.reader import FileReader
    except ImportError:
        raise MissingReader(
            f"{path}: reading ActiGraph .gt3x files needs ActiGraph's pygt3x: pip install 'plm-monitor[gt3x]'"
        ) from None
    logging.getLogger("pygt3x").setLevel(logging.ERROR)  # its per-second warnings would flood the terminal
    try:
        with warnings.catch_warnings(), FileReader(str(path)) as reader:
            warnings.simplefilter("ignore")  # pandas' deprecation notes about pygt3x's calls are not the user's
            frame = reader.to_pandas()
            info = reader.info
    except (OSError, ValueError, KeyError, EOFError, NotImplementedError, AssertionError) as exc:
        raise RecordingError(f"{path}: pygt3x cannot read this .gt3x file ({type(exc).__name__}: {exc})") from None
    if frame.shape[0] == 0:
        raise RecordingError(f"{path}: the .gt3x file holds no acceleration samples")
    measured = ~frame["IdleSleepMode"].to_numpy(dtype=bool)
    local = frame.index.to_numpy(dtype=np.float64)[measured]
    xyz = frame[["X", "Y", "Z"]].to_numpy(dtype=np.float64)[measured]
    if local.shape[0] == 0:
        raise RecordingError(f"{path}: every sample is the device's idle sleep mode (it never moved)")
    offset = _offset_s(info.timezone)
    t = local - offset if offset is not None else local_to_unix(local, zone_of(timezone))
    keep = np.ones(t.shape[0], dtype=bool)
    keep[1:] = t[1:] > np.maximum.accumulate(t)[:-1]  # pygt3x sorts; a repeated second keeps its first copy
    side = (info.side or "").strip().lower()
    return Recording(
        path,
        "gt3x",
        t[keep],
        xyz[keep],
        sensor_id_from(info.serial_number or "") or "actigraph",
        float(info.sample_rate),
        side if side in ("left", "right") else None,
    )


def _offset_s(text: str | None) -> float | None:
    """``info.txt``'s ``TimeZone`` (``-04:00:00``) in seconds east of UTC, None when absent or unreadable."""
    match = _OFFSET.match((text or "").strip())
    if not match:
        return None
    sign = -1.0 if match.group(1) == "-" else 1.0
    return sign * (int(match.group(2)) * 3600 + int(match.group(3)) * 60 + int(match.group(4) or 0))
