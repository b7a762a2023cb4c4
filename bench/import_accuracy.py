"""How well each recording format scores: the same simulated nights written as the project's CSV, a Polar Sensor
Logger file, an ActiGraph .gt3x and an Axivity .cwa, read back by the readers and scored by `plm score`'s scorer,
against the simulator's truth (PLM index per hour in bed, scored by the same rules from the true movements).

    python bench/import_accuracy.py                      # 6 nights of 8 h, 3 profiles
    python bench/import_accuracy.py --nights 2 --hours 4

Each format at its usual rate: CSV and PSL 52 Hz (mg), .gt3x 30 Hz (12 bits, 1/256 g), .cwa 50 Hz (1/256 g).
The CSV column scores the simulator's samples at the .gt3x/.cwa rate too, so a format's column differs from
it only by what the format and its reader do to the samples.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.recordings import read_recording
from detector.scoring.scorer import score_arrays
from simulator import simulate_night
from simulator.formats import device_grid, write_leg

FORMATS = (("psl", 52.0), ("gt3x", 30.0), ("cwa", 50.0))
PROFILES = ("rls-severe", "rls-moderate", "mild")


def run(nights: int, hours: float) -> None:
    rows: dict[str, list[tuple[float, float, float]]] = {fmt: [] for fmt, _ in FORMATS}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(nights):
            profile = PROFILES[k % len(PROFILES)]
            for fmt, rate in FORMATS:
                night = simulate_night(
                    profile, seed=100 + k, rate_hz=rate, start_unix_s=1_709_332_200.0, duration_h=hours
                )
                truth = night.truth.indices()["plm_index"] or 0.0
                csv = score_arrays(*[(leg.t, leg.xyz) for leg in night.legs.values()]).to_dict()
                legs = []
                for side, leg in night.legs.items():
                    t = leg.t if fmt == "psl" else device_grid(leg.device_ns, leg.index, rate)
                    path = write_leg(fmt, Path(tmp), side, t, leg.xyz, rate, leg.device_ns).path
                    rec = read_recording(path)
                    legs.append((rec.t, rec.xyz))
                ours = score_arrays(*legs).to_dict()
                rows[fmt].append((truth, csv["plm_index"] or 0.0, ours["plm_index"] or 0.0))
                print(
                    f"  {profile:13s} seed {100 + k} {fmt:5s}: truth {truth:5.1f}/h  CSV {csv['plm_index']:5.1f}/h  "
                    f"{fmt} {ours['plm_index']:5.1f}/h",
                    flush=True,
                )
    print(f"PLM index per hour in bed, {nights} nights of {hours:g} h (mean absolute difference):")
    for fmt, rate in FORMATS:
        r = rows[fmt]
        vs_truth = statistics.fmean(abs(o - t) for t, _, o in r)
        csv_truth = statistics.fmean(abs(c - t) for t, c, _ in r)
        vs_csv = statistics.fmean(abs(o - c) for _, c, o in r)
        print(
            f"  {fmt:5s} {rate:4.0f} Hz: format vs truth {vs_truth:4.2f}/h (CSV of the same samples vs truth "
            f"{csv_truth:4.2f}/h), format vs CSV {vs_csv:4.2f}/h"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=6)
    parser.add_argument("--hours", type=float, default=8.0)
    args = parser.parse_args(argv)
    run(args.nights, args.hours)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
