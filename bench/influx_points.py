"""InfluxDB sizing: what one subject's night costs the database, for docs/deploy-scale.md.

A simulated 8-h two-leg 52 Hz night per profile goes through the live detector's core (detector/live/core.py,
the code path of ``plm detect`` and ``plm import``) in the groups a service reads, with the clock ticking every
second of data. Counted, per measurement: the lines written (the write load: live summaries and minutes are
rewritten as the night goes on) and the distinct points stored (measurement + tags + timestamp; a rewrite
replaces a point), plus the line-protocol bytes written. No server needed: points are what the core emits.

    python -m bench.influx_points [--hours 8] [--profiles healthy,rls-moderate,rls-severe]

Measures the software; it does not diagnose anyone.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.live.core import DetectorCore
from detector.storage.schema import point_key
from plm import wire
from plm.config import Settings
from simulator import batches as simulator_batches
from simulator import simulate_night

GROUP = 40  # messages per group, as the service reads them under light load
FAR_FUTURE_NS = 2**62


def count_night(profile: str, hours: float, seed: int) -> tuple[Counter[str], Counter[str], int]:
    night = simulate_night(profile, seed=seed, duration_h=hours)
    per_side = simulator_batches.night_batches(night, 1.0, now_ns=FAR_FUTURE_NS)
    stream = sorted(((b.start_ns, side, b) for side, bs in per_side.items() for b in bs), key=lambda x: x[:2])
    core = DetectorCore(Settings(), publish_results=True)
    lines: list[str] = []
    for i in range(0, len(stream), GROUP):
        group = stream[i : i + GROUP]
        messages = [(wire.acc_topic("sizing", f"{side}-ankle"), wire.encode_binary(b)) for _, side, b in group]
        wall = group[-1][0] / 1e9 + 1.0
        lines += core.handle(messages, wall).points
        lines += core.tick(wall).points
    lines += core.end_all_nights().points
    written = Counter(line.split(",", 1)[0].split(" ", 1)[0] for line in lines)
    stored = Counter(key[0].split(",", 1)[0] for key in {point_key(line) for line in lines})
    return written, stored, sum(len(line) + 1 for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--profiles", default="healthy,rls-moderate,rls-severe")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    for profile in args.profiles.split(","):
        written, stored, size = count_night(profile, args.hours, args.seed)
        print(f"\n{profile}, {args.hours:g} h, two legs at 52 Hz: {sum(stored.values())} points stored, "
              f"{sum(written.values())} lines written ({size / 1e6:.2f} MB of line protocol)")  # fmt: skip
        print(f"  {'measurement':<16} {'stored':>8} {'written':>8}")
        for name in sorted(written, key=lambda n: -stored[n]):
            print(f"  {name:<16} {stored[name]:>8} {written[name]:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
