"""Per-sensor contiguous high-water marks behind the retained ``.../ack`` topic (docs/wire-format.md).

Why: mosquitto PUBACKs a QoS 1 message on receipt but writes it to disk only every autosave, so a
broker SIGKILL loses what it had acknowledged. The collector therefore keeps each batch until the
detector says the batch is in its journal. The mark may only move over data received *contiguously*,
so the collector never forgets a batch that the broker lost: a hole stops the mark until it is filled
(the collector republishes everything after the last ack, in order, after every reconnect).

Contiguous with the mark (end ``until_ns``, last ``seq``): the next ``seq`` (mod 2**32), or a start
within half a sample of ``until_ns``. A ``seq`` that goes backwards with a later start is a new stream
(a restarted collector numbers from 0 again, after republishing its old queue in order). Batches
beyond a hole are kept as merged runs and joined when the hole fills; duplicates and replays (ending
at or before the mark) change nothing. The first batch of a sensor starts its mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plm import wire

SEQ_MOD = 2**32
MAX_RUNS = 1000  # runs beyond a hole kept per sensor; more is a sender that is not ours (no seq, many holes)


def _follows(end_ns: int, seq: int, batch: wire.SampleBatch) -> bool:
    tolerance = 0.5e9 / batch.rate_hz
    return batch.end_ns > end_ns and (batch.seq == (seq + 1) % SEQ_MOD or abs(batch.start_ns - end_ns) <= tolerance)


@dataclass
class AckMark:
    until_ns: int | None = None
    seq: int = 0
    runs: list[list[int]] = field(default_factory=list)  # [start_ns, end_ns, first_seq, last_seq, rate_mhz]
    published_ns: int | None = None
    dirty: bool = False  # publish (again) when allowed: the mark moved, or a sender resent what it covers

    def add(self, batch: wire.SampleBatch) -> None:
        if self.until_ns is None:
            self.until_ns, self.seq, self.dirty = batch.end_ns, batch.seq, True
            return
        if batch.end_ns <= self.until_ns:
            self.dirty = True  # a resend: the sender is waiting for an ack that may have been lost
            return
        if _follows(self.until_ns, self.seq, batch) or (batch.seq < self.seq and batch.start_ns > self.until_ns):
            self.until_ns, self.seq, self.dirty = batch.end_ns, batch.seq, True
            self._join_runs()
            return
        self._keep_ahead(batch)

    def _join_runs(self) -> None:
        assert self.until_ns is not None
        joined = True
        while joined and self.runs:
            joined = False
            for run in list(self.runs):
                start, end, first, last, rate_mhz = run
                if end <= self.until_ns:
                    self.runs.remove(run)  # entirely covered already
                    joined = True
                    continue
                tolerance = 0.5e12 / rate_mhz
                if first == (self.seq + 1) % SEQ_MOD or abs(start - self.until_ns) <= tolerance:
                    self.until_ns, self.seq = end, last
                    self.runs.remove(run)
                    joined = True

    def _keep_ahead(self, batch: wire.SampleBatch) -> None:
        rate_mhz = max(1, round(batch.rate_hz * 1000))
        for run in self.runs:
            if _follows(run[1], run[3], batch):
                run[1], run[3] = batch.end_ns, batch.seq
                self._merge_runs()
                return
            if run[0] <= batch.start_ns and batch.end_ns <= run[1]:
                return  # a duplicate inside a run
        self.runs.append([batch.start_ns, batch.end_ns, batch.seq, batch.seq, rate_mhz])
        self._merge_runs()
        if len(self.runs) > MAX_RUNS:
            del self.runs[: len(self.runs) - MAX_RUNS]  # forget the oldest runs: they will be resent or stay holes

    def _merge_runs(self) -> None:
        self.runs.sort()
        merged: list[list[int]] = []
        for run in self.runs:
            if merged:
                prev = merged[-1]
                tolerance = 0.5e12 / run[4]
                if run[2] == (prev[3] + 1) % SEQ_MOD or abs(run[0] - prev[1]) <= tolerance:
                    prev[1], prev[3] = max(prev[1], run[1]), run[3]
                    continue
            merged.append(run)
        self.runs = merged


@dataclass
class AckTracker:
    """All marks of one detector; picklable (part of the checkpoint, so a restart keeps them)."""

    marks: dict[tuple[str, str], AckMark] = field(default_factory=dict)  # (subject, sensor) -> mark
    last_publish: dict[tuple[str, str], float] = field(default_factory=dict)  # wall clock (monotonic)

    def add(self, subject: str, sensor: str, batch: wire.SampleBatch) -> None:
        self.marks.setdefault((subject, sensor), AckMark()).add(batch)

    def resend_all(self) -> None:
        """After a (re)connect the broker may have lost the retained acks: publish every mark again."""
        for mark in self.marks.values():
            mark.dirty = mark.until_ns is not None

    def due(self, now: float, every_s: float = 1.0) -> list[tuple[str, str, int]]:
        """Acks to publish now (at most one per sensor per ``every_s``); marks them published."""
        out = []
        for key, mark in self.marks.items():
            if not mark.dirty or mark.until_ns is None or now - self.last_publish.get(key, -1e18) < every_s:
                continue
            mark.dirty = False
            mark.published_ns = mark.until_ns
            self.last_publish[key] = now
            out.append((key[0], key[1], mark.until_ns))
        return out
