"""The short fault-injection soak (bench/soak.py at a CI budget): two 20-minute nights streamed at
high speed from the collector's publishers (kept until the detector's ack) through real mosquitto, a
`plm detect` child process and real influxd, while mosquitto is SIGKILLed (it loses what it acknowledged
but had not saved: the acks make that lossless), influxd is down for a third of the night and the
detector is SIGKILLed and restarted, with duplicated,
reordered and clock-jumped batches. Nothing may be lost or doubled, and the stored nights must
equal offline scoring of the same batches."""

from __future__ import annotations

import pytest

from bench.soak import SoakConfig, _arrays, _night_batches, format_report, run_soak
from detector.scorer import NightScorer, score_arrays
from plm.rules import WASM2016

pytestmark = pytest.mark.services


def test_short_soak_loses_and_doubles_nothing(mosquitto, tmp_path) -> None:  # mosquitto: skip if not installed
    report = run_soak(
        SoakConfig(
            subjects=2,
            minutes=20,
            seed=1,
            batches_per_s=400,
            mosquitto_kills=1,
            influx_outages=1,
            influx_outage_fraction=0.3,
            detector_kills=1,
            duplicates=0.02,
            swaps=0.02,
            late=0,
            clock_jumps=2,
            workdir=tmp_path,
        )
    )
    text = format_report(report)
    print(text)
    kinds = sorted(f.kind for f in report.faults)
    assert kinds == ["detector_kill", "influx_outage", "mosquitto_kill"], text
    assert all(f.recovery_s is not None for f in report.faults), text
    assert report.movements_expected > 20, "a severe night has movements: the comparison is not vacuous"
    assert report.movements_lost == 0 and report.movements_extra == 0 and report.movements_duplicated == 0, text
    assert report.summaries_equal, text
    assert report.bad_by_detector.get("clock") == 1 and report.bad_by_detector.get("late") == 1, text
    assert report.detector_restarts == 1
    assert report.publisher_dropped == 0, text


def test_scorer_is_chunk_invariant_as_the_soak_needs() -> None:
    """Found by the soak: with batches arriving one by one the live night differed from `plm score`."""
    from simulator import simulate_night

    night = simulate_night("rls-severe", seed=100, duration_h=20 / 60, jitter_ms=0, gap=False, start_unix_s=1.7e9)
    per_side = _night_batches(night)
    whole = score_arrays(_arrays(per_side["left"]), _arrays(per_side["right"]))
    chunked = NightScorer(WASM2016, sides=("left", "right"))
    for k in range(len(per_side["left"])):
        for side in ("left", "right"):
            if k < len(per_side[side]):
                chunked.feed(side, *_arrays(per_side[side][k : k + 1]))
    got = chunked.finish()
    key = lambda e: (round(e.onset * 1000), e.side, e.kind, e.plm)  # noqa: E731
    assert sorted(map(key, got.events)) == sorted(map(key, whole.events))
