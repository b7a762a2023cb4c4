"""How long ``plm import`` takes, into a real influxd (issue 20's targets: an 8-h two-leg 52 Hz night <= 5 s,
a 7-day single-leg 30 Hz actigraph file <= 60 s, on this machine).

    python bench/import_speed.py                 # both cases
    python bench/import_speed.py --case night    # 8-h two-leg Polar Sensor Logger night
    python bench/import_speed.py --case week --days 7

Files are simulated first (not timed); the import is timed end to end in this process (reading, finding
nights, scoring through the live core, writing to influxd until the outbox is drained), with the phases
timed apart. Peak memory (ru_maxrss) is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.recordings import read_recording
from detector.recordings.nights import find_nights
from plm.cli import main
from plm.ops.localservices import Influxd1
from simulator import simulate_night
from simulator.formats import simulate_days, write_leg

START = 1_709_332_200.0


def night_files(out: Path) -> list[str]:
    night = simulate_night("rls-severe", seed=7, rate_hz=52.0, start_unix_s=START, duration_h=8.0)
    args = []
    for side, leg in night.legs.items():
        args += [f"--{side}", str(write_leg("psl", out, side, leg.t, leg.xyz, 52.0, leg.device_ns).path)]
    return args


def week_files(out: Path, days: int) -> list[str]:
    multi = simulate_days("rls-moderate", seed=3, days=days, rate_hz=30.0, legs="left")
    t, xyz = multi.legs["left"]
    return ["--left", str(write_leg("gt3x", out, "left", t, xyz, 30.0).path)]


def timed_import(influx: Influxd1, subject: str, files: list[str]) -> float:
    os.environ.update(PLM_INFLUX__URL=influx.url, PLM_INFLUX__API="1", PLM_INFLUX__BUCKET=influx.database)
    paths = files[1::2]
    t0 = time.perf_counter()
    recs = [read_recording(p) for p in paths]
    t1 = time.perf_counter()
    find_nights({side[2:]: (r.t, r.xyz) for side, r in zip(files[0::2], recs, strict=True)})
    t2 = time.perf_counter()
    print(f"  phases alone: read {t1 - t0:.2f} s, find nights {t2 - t1:.2f} s", flush=True)
    start = time.perf_counter()
    code = main(["--log-level", "WARNING", "import", "--subject", subject, *files])
    took = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"plm import exited {code}")
    return took


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("night", "week", "both"), default="both")
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Influxd1(workdir=Path(tmp) / "influxd") as influx:
        out = Path(tmp)
        if args.case in ("night", "both"):
            files = night_files(out)
            took = timed_import(influx, "benchnight", files)
            print(f"8-h two-leg 52 Hz Polar Sensor Logger night: {took:.2f} s (target <= 5 s)", flush=True)
        if args.case in ("week", "both"):
            files = week_files(out, args.days)
            took = timed_import(influx, "benchweek", files)
            print(f"{args.days}-day single-leg 30 Hz .gt3x: {took:.2f} s (target <= 60 s)", flush=True)
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
