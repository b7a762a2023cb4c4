"""Timed samples -> 1-second wire batches. A gap always closes the open batch.

A batch's sample times are implied (``start_ns + i/rate``), so a batch may only hold samples that
really are consecutive: the open batch is flushed early at any gap and a new one starts at the
first sample after it.

Time never steps back between batches. While the device-to-wall clock mapping settles, or after a
reconnect, a new batch's mapped start can fall up to tens of milliseconds before the previous batch's
last sample; a detector must refuse such an overlapping batch whole (it cannot un-score the past). So a
batch starts no earlier than half a period after the previous batch's last sample: a small step back is
absorbed at up to half a period per batch (at 52 Hz, 50 ms within 6 s), a timing error far below the
mapping's own jitter. A step back longer than ``max_backstep_s`` (the host clock was set back) is a real
discontinuity: it is passed on as it is, and the detector counts what it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plm.wire import SampleBatch, make_batch

from .timing import NS, TimedChunk


@dataclass
class Batcher:
    rate_hz: float
    batch_s: float = 1.0
    max_backstep_s: float = 1.0
    seq: int = 0
    backsteps: int = 0  # batches moved later so as not to overlap the previous one
    _last_ns: int | None = None  # time of the last sample of the previous batch
    _t: list[np.ndarray] = field(default_factory=list)
    _xyz: list[np.ndarray] = field(default_factory=list)
    _n: int = 0

    @property
    def batch_len(self) -> int:
        return max(1, round(self.rate_hz * self.batch_s))

    def add(self, chunk: TimedChunk) -> list[SampleBatch]:
        out: list[SampleBatch] = []
        if chunk.gap:
            out.extend(self.flush())
        t, xyz = chunk.t_ns, np.asarray(chunk.xyz_g, dtype=np.float32)
        start = 0
        while start < len(t):
            take = min(self.batch_len - self._n, len(t) - start)
            self._t.append(t[start : start + take])
            self._xyz.append(xyz[start : start + take])
            self._n += take
            start += take
            if self._n >= self.batch_len:
                out.extend(self.flush())
        return out

    def flush(self) -> list[SampleBatch]:
        """Emit the open (possibly short) batch."""
        if not self._n:
            return []
        t0 = int(self._t[0][0])
        xyz = np.concatenate(self._xyz) if len(self._xyz) > 1 else self._xyz[0]
        self._t.clear()
        self._xyz.clear()
        self._n = 0
        period = NS / self.rate_hz
        if self._last_ns is not None:
            earliest = self._last_ns + round(period / 2)
            if earliest - self.max_backstep_s * NS < t0 < earliest:
                t0 = earliest
                self.backsteps += 1
        self._last_ns = t0 + round((len(xyz) - 1) * period)
        batch = make_batch(t0, self.rate_hz, xyz, self.seq)
        self.seq = (self.seq + 1) % 2**32
        return [batch]
