"""A simulated night as the wire batches a collector would publish, and back to what a detector sees.

One definition for the tests, the soak and the benchmarks: a batch holds a contiguous run of the
device's sample counter, at most ``batch_s`` long, and a new batch starts after every loss (a batch's
sample times are implied by its start and rate, so it may not span a hole).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plm import wire


def leg_batches(leg: Any, batch_s: float = 1.0, now_ns: int | None = None) -> list[wire.SampleBatch]:
    """One simulated leg (``t``, ``xyz``, ``index``, ``rate_hz``) cut into wire batches, seq from 0.

    ``now_ns``: the clock the batches are validated against (simulated nights may lie in the future
    of the machine's clock; tests pass a far-future value)."""
    per_batch = max(1, round(leg.rate_hz * batch_s))
    breaks = np.flatnonzero(np.diff(leg.index) != 1) + 1
    batches: list[wire.SampleBatch] = []
    for run in np.split(np.arange(len(leg.t)), breaks):
        for start in range(0, len(run), per_batch):
            idx = run[start : start + per_batch]
            start_ns = round(float(leg.t[idx[0]]) * 1e9)
            seq = len(batches) % 2**32
            batches.append(wire.make_batch(start_ns, leg.rate_hz, leg.xyz[idx], seq, now_ns=now_ns))
    return batches


def night_batches(night: Any, batch_s: float = 1.0, now_ns: int | None = None) -> dict[str, list[wire.SampleBatch]]:
    """Every leg of a simulated night as wire batches (see :func:`leg_batches`)."""
    return {side: leg_batches(leg, batch_s, now_ns) for side, leg in night.legs.items()}


def batches_as_arrays(batches: list[wire.SampleBatch], now_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What a detector sees of one leg: the batches encoded, decoded, in start order, concatenated."""
    decoded = sorted((wire.decode(wire.encode_binary(b), now_ns=now_ns) for b in batches), key=lambda b: b.start_ns)
    return np.concatenate([b.timestamps_s() for b in decoded]), np.concatenate([b.xyz for b in decoded])
