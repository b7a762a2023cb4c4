"""How long does decoding one 1-second 52 Hz batch take? Target: <= 20 us on average.

Prints the mean per-batch cost of binary decode (the hot path of the live detector), JSON decode
and binary encode, plus the ratio against ``np.frombuffer`` of the same bytes measured in the same
run -- an irreducible baseline that moves with the machine, so the ratio is comparable across runs.

    python bench/wire_speed.py [--batches 200000]
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np

from plm import wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200_000)
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    xyz = rng.normal(0, 0.05, (52, 3)).astype(np.float32)
    xyz[:, 2] += 1.0
    batch = wire.make_batch(time.time_ns(), 52.0, xyz, seq=1)
    binary = wire.encode_binary(batch)
    as_json = wire.encode_json(batch)
    now = time.time_ns()

    def per_call_us(fn, n: int) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6

    n = args.batches
    baseline = per_call_us(lambda: np.frombuffer(binary, dtype="<i2", offset=22), n)
    decode_bin = per_call_us(lambda: wire.decode(binary, now_ns=now), n)
    decode_clock = per_call_us(lambda: wire.decode(binary), n)
    encode_bin = per_call_us(lambda: wire.encode_binary(batch), n)
    decode_json = per_call_us(lambda: wire.decode(as_json, now_ns=now), max(n // 20, 1000))

    print(f"1-s 52 Hz batch: binary {len(binary)} bytes, JSON {len(as_json)} bytes")
    print(f"{'operation':<28}{'us/batch':>10}{'x baseline':>12}")
    for name, us in [
        ("np.frombuffer (baseline)", baseline),
        ("decode binary", decode_bin),
        ("decode binary (clock now)", decode_clock),
        ("encode binary", encode_bin),
        ("decode JSON", decode_json),
    ]:
        print(f"{name:<28}{us:>10.2f}{us / baseline:>12.1f}")
    verdict = "OK" if decode_bin <= 20 else "OVER TARGET"
    print(f"target: decode binary <= 20 us -> {decode_bin:.2f} us {verdict}")


if __name__ == "__main__":
    main()
