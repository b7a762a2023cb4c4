"""Axivity AX3/AX6 ``.cwa`` files, read by scikit-digital-health's ``ReadCwa`` (Pfizer's maintained reader).

scikit-digital-health decodes the 512-byte blocks (packed or unpacked samples, per-block timestamps)
in its compiled extension and returns acceleration in g with a time per sample; nothing of the format is
parsed here except the device id, two bytes of the 1024-byte header that ReadCwa does not return. The
device's clock keeps local time: ``timezone`` (IANA name; default this machine's zone) converts it to Unix
time. Install with ``pip install 'plm-monitor[cwa]'`` (it brings scikit-learn and lightgbm with it: the
package is a whole analysis toolkit, of which only the reader is used).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from pathlib import Path

import numpy as np

from detector.recordings import MissingReader, Recording, RecordingError, local_to_unix, zone_of

_ONE_AT_A_TIME = threading.Lock()
"""scikit-digital-health's compiled reader is Fortran with a fixed I/O unit: two files read at once in two
threads end the whole process ("Fortran runtime error: POS=specifier not allowed", exit code 2)."""


def read_cwa(path: Path, *, timezone: str | None = None) -> Recording:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from skdh.io import ReadCwa
    except ImportError:
        raise MissingReader(
            f"{path}: reading Axivity .cwa files needs scikit-digital-health: pip install 'plm-monitor[cwa]'"
        ) from None
    logging.getLogger("skdh").setLevel(logging.ERROR)
    try:
        with _ONE_AT_A_TIME, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            data = ReadCwa(ext_error="skip" if path.suffix.lower() != ".cwa" else "warn").predict(file=path)
    except Exception as exc:  # a compiled reader: any failure is "cannot read this file", said in one line
        raise RecordingError(
            f"{path}: scikit-digital-health cannot read this .cwa file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(data, dict) or "accel" not in data or "time" not in data:
        raise RecordingError(f"{path}: the .cwa file holds no acceleration samples")
    local = np.asarray(data["time"], dtype=np.float64)
    xyz = np.asarray(data["accel"], dtype=np.float64)
    if local.shape[0] == 0:
        raise RecordingError(f"{path}: the .cwa file holds no acceleration samples")
    t = local_to_unix(local, zone_of(timezone))
    keep = np.ones(t.shape[0], dtype=bool)
    keep[1:] = t[1:] > np.maximum.accumulate(t)[:-1]
    return Recording(path, "cwa", t[keep], xyz[keep], _device_id(path), float(data.get("fs") or 0.0))


def _device_id(path: Path) -> str:
    """``ax-<deviceId>``: the header's device identifier (offset 5, u16 little-endian)."""
    with path.open("rb") as fh:
        header = fh.read(7)
    return f"ax-{int.from_bytes(header[5:7], 'little')}" if len(header) == 7 else "axivity"
