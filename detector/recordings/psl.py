"""Polar Sensor Logger accelerometer files (the Android app's ``..._ACC.txt``).

The header is exactly ``Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]`` (some versions add a
trailing space); each line is one sample: the phone's local date-time when the packet arrived (shared by
the samples of a packet), the sensor's time in nanoseconds since 2000-01-01T00:00Z (Polar's epoch, the
sensor's clock as the phone set it), and x, y, z in milli-g (integers).

Sample times are the sensor's (per sample, not the packet-sized steps of the phone's). Refused with the fix:
a sensor clock that was never set (it then counts from 2017 or 2019 while the phone says otherwise) and a
sensor time that goes back by more than half a second (the sensor restarted mid-file). Samples a packet
boundary repeats (the same time again, or a few milliseconds back) are dropped, keeping the first.

Parsing: pandas' C parser when pandas is installed (the ``fast-csv`` extra), else ``np.loadtxt``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np

from detector.recordings import PSL_ACC_HEADER, Recording, RecordingError, sensor_id_from

POLAR_EPOCH_UNIX_S = 946_684_800  # 2000-01-01T00:00:00Z
POLAR_EPOCH_UNIX_NS = POLAR_EPOCH_UNIX_S * 1_000_000_000
NOMINAL_RATES_HZ = (25.0, 26.0, 50.0, 52.0, 100.0, 104.0, 200.0, 208.0, 416.0)  # Verity Sense, H10, OH1
MAX_BACKWARDS_S = 0.5  # a packet boundary may repeat a few samples; more is a restarted sensor clock
CLOCK_AGREEMENT_S = 36 * 3600.0  # sensor and phone clocks further apart (beyond any time zone): clock not set
_DEVICE_ID = re.compile(r"Polar_[A-Za-z0-9]+_([0-9A-Fa-f]{6,10})_")


def read_psl(path: Path) -> Recording:
    raw = path.read_bytes()
    newline = raw.find(b"\n")
    header = (raw if newline < 0 else raw[:newline]).decode("utf-8", "replace").strip().lstrip("\ufeff")
    if header != PSL_ACC_HEADER:
        raise RecordingError(
            f"{path}: a Polar Sensor Logger file, but not an accelerometer one (header {header[:70]!r}); give the "
            f"file whose name ends in _ACC.txt (header {PSL_ACC_HEADER!r})"
        )
    body = raw[newline + 1 :] if newline >= 0 else b""
    if not body.strip():
        raise RecordingError(f"{path}: no samples after the header")
    phone, sensor_ns, mg = _parse(path, body)
    t, xyz = _sensor_times(path, sensor_ns, mg)
    _check_clock(path, phone, float(t[0]))
    match = _DEVICE_ID.search(path.name)
    sensor_id = sensor_id_from(match.group(1), "polar-") if match else sensor_id_from(path.stem.split("_ACC")[0])
    return Recording(path, "psl", t, xyz, sensor_id, nominal_rate(t))


def _parse(path: Path, body: bytes) -> tuple[str, np.ndarray, np.ndarray]:
    """The first line's phone time, the sensor times (int64 ns) and the samples (int mg)."""
    first_line = body.split(b"\n", 1)[0].decode("utf-8", "replace")
    phone = first_line.split(";", 1)[0].strip()
    try:
        import pandas as pd
    except ImportError:
        pd = None
    try:
        if pd is not None:
            import io

            frame = pd.read_csv(
                io.BytesIO(body),
                sep=";",
                header=None,
                usecols=[1, 2, 3, 4],
                dtype=np.int64,
                engine="c",
                skip_blank_lines=True,
            )
            values = frame.to_numpy(dtype=np.int64)
        else:
            values = np.loadtxt(
                body.decode("utf-8", "replace").splitlines(),
                delimiter=";",
                usecols=(1, 2, 3, 4),
                dtype=np.int64,
                ndmin=2,
            )
    except (ValueError, TypeError, OverflowError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise RecordingError(
            f"{path}: a line is not 'phone time;sensor ns;x mg;y mg;z mg' with whole numbers ({reason}); "
            "give the file as the app wrote it"
        ) from None
    if values.ndim != 2 or values.shape[1] != 4 or values.shape[0] == 0:
        raise RecordingError(f"{path}: no samples after the header")
    return phone, values[:, 0], values[:, 1:]


def _sensor_times(path: Path, sensor_ns: np.ndarray, mg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steps = np.diff(sensor_ns)
    back = np.flatnonzero(steps <= 0)
    if back.size:
        worst = int(back[np.argmin(steps[back])])
        if -int(steps[worst]) > MAX_BACKWARDS_S * 1e9:
            raise RecordingError(
                f"{path}: line {worst + 3}: the sensor time goes back by {-int(steps[worst]) / 1e9:,.1f} s (the sensor "
                "restarted during the recording): split the file at that line and import the parts"
            )
    t = (sensor_ns + POLAR_EPOCH_UNIX_NS).astype(np.float64) / 1e9
    if back.size or np.any(t[1:] <= t[:-1]):
        # keep each sample whose time (as seconds: ns apart may be one double) is after every earlier one,
        # so a packet edge that repeats samples keeps its first copy
        keep = np.ones(t.shape[0], dtype=bool)
        keep[1:] = t[1:] > np.maximum.accumulate(t)[:-1]
        t, mg = t[keep], mg[keep]
    if np.abs(mg).max(initial=0) > 32_767:
        raise RecordingError(f"{path}: values beyond +-32.767 g: X/Y/Z must be milli-g as the app writes them")
    return t, mg.astype(np.float64) / 1000.0


def _check_clock(path: Path, phone: str, sensor_first_s: float) -> None:
    """Refuse a sensor clock that the phone never set (it counts from the sensor's factory date)."""
    try:
        phone_time = dt.datetime.fromisoformat(phone.replace(" ", "T", 1)) if phone else None
    except ValueError:
        phone_time = None
    if phone_time is None:
        if sensor_first_s < dt.datetime(2019, 6, 1, tzinfo=dt.UTC).timestamp():
            raise RecordingError(
                f"{path}: the sensor's clock reads {_when(sensor_first_s)}: it was not set; connect the sensor to "
                "the app (which sets its clock) before recording"
            )
        return
    phone_s = (phone_time if phone_time.tzinfo else phone_time.replace(tzinfo=dt.UTC)).timestamp()
    if abs(phone_s - sensor_first_s) > CLOCK_AGREEMENT_S:
        raise RecordingError(
            f"{path}: the sensor's clock reads {_when(sensor_first_s)} while the phone wrote {phone!r}: the "
            "sensor's clock was not set, so the night cannot be dated; record again with the sensor connected "
            "to the app from the start"
        )


def _when(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def nominal_rate(t: np.ndarray) -> float:
    """The nominal rate within 3 % of the median step's, else the median step's rate itself."""
    if t.shape[0] < 2:
        return 0.0
    step = float(np.median(np.diff(t[: min(t.shape[0], 200_001)])))
    measured = 1.0 / step if step > 0 else 0.0
    nearest = min(NOMINAL_RATES_HZ, key=lambda r: abs(r - measured))
    return nearest if abs(nearest - measured) <= 0.03 * nearest else measured
