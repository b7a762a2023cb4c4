"""Speed and memory of scoring an 8-hour two-leg 52 Hz night, against baselines measured in the same run.

    python bench/score_speed.py [--hours 8]

Targets (issue 4): in-memory scoring <= 0.5 s and <= 5x one scipy sosfiltfilt (4th order) pass over the
same arrays; ``plm score`` from CSV <= 3 s wall; peak extra memory <= 4x the input arrays.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import signal as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.scoring.scorer import score_arrays
from simulator.api import simulate_night


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=8.0)
    args = parser.parse_args(argv)
    night = simulate_night("rls-moderate", seed=4242, rate_hz=52.0, legs="both", duration_h=args.hours)
    legs = {s: (r.t.astype(np.float64), r.xyz.astype(np.float64)) for s, r in night.legs.items()}
    input_bytes = sum(t.nbytes + x.nbytes for t, x in legs.values())
    sos = sps.butter(4, 0.5, "highpass", fs=52.0, output="sos")
    baseline = best_of(lambda: [sps.sosfiltfilt(sos, x, axis=0) for _, x in legs.values()])
    scoring = best_of(lambda: score_arrays(legs["left"], legs["right"]))
    tracemalloc.start()
    score_arrays(legs["left"], legs["right"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        paths = night.write(tmp)
        start = time.perf_counter()
        subprocess.run(
            ["plm", "score", str(paths["left"]), "--right", str(paths["right"]), "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cli = time.perf_counter() - start
    n = sum(len(t) for t, _ in legs.values())
    print(f"night: {args.hours:g} h, two legs, 52 Hz, {n} samples, input arrays {input_bytes / 1e6:.0f} MB")
    print(f"{'measure':38} {'value':>10} {'target':>12}")
    print(f"{'sosfiltfilt baseline (both legs)':38} {baseline:9.3f}s {'':>12}")
    print(f"{'score_arrays':38} {scoring:9.3f}s {'<= 0.5 s':>12}")
    print(f"{'score_arrays / sosfiltfilt':38} {scoring / baseline:9.2f}x {'<= 5x':>12}")
    print(f"{'plm score from CSV (wall)':38} {cli:9.3f}s {'<= 3 s':>12}")
    print(f"{'peak traced memory / input arrays':38} {peak / input_bytes:9.2f}x {'<= 4x':>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
