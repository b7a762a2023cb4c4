"""The live summary is rebuilt every minute; points that did not change are not written again
(detector/live/core.py ``_write_summary``). InfluxDB must end up with exactly the points it would hold if every
line had been written -- only the number of writes may differ."""

from __future__ import annotations

from collections import Counter

from detector.live.core import DetectorCore
from detector.storage.schema import point_key
from plm import wire
from plm.config import Settings
from simulator import simulate_night
from tests.live_helpers import interleave, night_batches

GROUP = 40


def _run(*, dedup: bool) -> list[str]:
    night = simulate_night("rls-severe", seed=8, duration_h=1.5, start_unix_s=1.7e9, jitter_ms=0, gap=False)
    stream = interleave(night_batches(night))
    core = DetectorCore(Settings(), publish_results=False)
    lines: list[str] = []
    for i in range(0, len(stream), GROUP):
        group = stream[i : i + GROUP]
        messages = [(wire.acc_topic("w", f"{side}-ankle"), wire.encode_binary(b)) for side, b in group]
        wall = group[-1][1].start_ns / 1e9 + 1.0
        lines += core.handle(messages, wall).points + core.tick(wall).points
        if not dedup:  # forget what was written: every summary line is written again, as before
            for state in core.subjects.values():
                state.summary_written.clear()
    return lines + core.end_all_nights().points


def _stored(lines: list[str]) -> dict[tuple[str, str], str]:
    return {point_key(line): line for line in lines}  # a later line with the same key replaces the point


def test_unchanged_summary_points_are_not_rewritten_and_the_stored_points_are_the_same() -> None:
    every, fewer = _run(dedup=False), _run(dedup=True)
    assert _stored(fewer) == _stored(every)
    measurement = lambda line: line.split(",", 1)[0]  # noqa: E731
    before, after = Counter(map(measurement, every)), Counter(map(measurement, fewer))
    assert after["plm_series"] * 2 < before["plm_series"], (before, after)  # closed series are not rewritten
    assert after["night"] < before["night"] and after["hourly"] <= before["hourly"], (before, after)
    assert after["movement"] == before["movement"] and after["activity"] == before["activity"]


def test_point_key_splits_at_the_first_unescaped_space() -> None:
    assert point_key('night,subject=a\\ b final=true,note="x y" 123') == ("night,subject=a\\ b", "123")
    assert point_key("hourly,side=left,subject=s lm=1i 99") == ("hourly,side=left,subject=s", "99")
