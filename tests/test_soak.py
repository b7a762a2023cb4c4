"""The short fault-injection soak (bench/soak.py at a CI budget): two 20-minute nights streamed at
high speed from the collector's publishers (kept until the detector's ack) through real mosquitto, a
`plm detect` child process and real influxd, while mosquitto is SIGKILLed (it loses what it acknowledged
but had not saved: the acks make that lossless), influxd is down for a third of the night and the
detector is SIGKILLed and restarted, with duplicated,
reordered and clock-jumped batches. Nothing may be lost or doubled, and the stored nights must
equal offline scoring of the same batches.

A third subject comes over BLE: scripted Polar peripherals replaying a simulated night's PMD frames
-> the real bleak client -> a `Collector` child process (SIGKILLed once and restarted on the same
queue directory) -> the same pipeline, with scripted link drops. What the sensors measured but the
collector never published (drops, collector downtime) must show as gaps; what it published must be
scored exactly as offline scoring of the published batches."""

from __future__ import annotations

import pytest

from bench.soak import SoakConfig, format_report, run_soak
from detector.scoring.scorer import NightScorer, score_arrays
from plm.rules import WASM2016
from simulator.batches import batches_as_arrays, night_batches

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
            ble=True,
            ble_drops=2,
            collector_kills=1,
            workdir=tmp_path,
        )
    )
    text = format_report(report)
    print(text)
    kinds = sorted(f.kind for f in report.faults)
    assert kinds == ["collector_kill", "detector_kill", "influx_outage", "mosquitto_kill"], text
    assert all(f.recovery_s is not None for f in report.faults), text
    assert report.movements_expected > 20, "a severe night has movements: the comparison is not vacuous"
    assert report.movements_lost == 0 and report.movements_extra == 0 and report.movements_duplicated == 0, text
    assert report.summaries_equal, text
    # one injected clock jump and one injected late batch; the BLE subject can add a few "late" refusals of
    # its own (collector timestamps that step back by tens of ms while its clock mapping settles: counted,
    # and left out of the expected results by the harness), so "late" is at least the injected one
    assert report.bad_by_detector.get("clock") == 1 and report.bad_by_detector.get("late", 0) >= 1, text
    assert report.detector_restarts == 1
    assert report.publisher_dropped == 0, text

    # ---- the BLE subject
    ble = report.ble
    assert ble is not None and ble.collector_runs == 2 and ble.collector_kills == 1, text
    assert ble.link_drops >= 1, text
    assert 0 < ble.samples_published < ble.samples_measured, text
    # every sample lost at the sensor or in the collector's downtime is a hole in the published times
    assert ble.samples_lost_at_sensor <= round(ble.gap_s_in_published * 52) + ble.gaps_in_published, text
    assert ble.gaps_in_published >= 2 + ble.link_drops, text  # the collector's downtime: a gap on each leg
    # a restarted collector's not-yet-connected sensors are "lost", not "offline" (the clean goodbye that
    # ends a night): found by this soak, fixed in collector/service.py
    assert ble.final_nights == 1 and ble.offline_statuses == 2, text
    assert ble.movements_expected > 10, text
    # collector batches never step back over the one before (they did by up to 51 ms while the clock
    # mapping settled, and the detector refused them whole): fixed in collector/batcher.py
    assert ble.overlapping_batches == 0, text
    assert ble.movements_lost == 0 and ble.movements_extra == 0 and ble.movements_duplicated == 0, text
    assert not ble.summary_mismatches, text


def test_scorer_is_chunk_invariant_as_the_soak_needs() -> None:
    """Found by the soak: with batches arriving one by one the live night differed from `plm score`."""
    from simulator import simulate_night

    night = simulate_night("rls-severe", seed=100, duration_h=20 / 60, jitter_ms=0, gap=False, start_unix_s=1.7e9)
    per_side = night_batches(night)
    whole = score_arrays(batches_as_arrays(per_side["left"]), batches_as_arrays(per_side["right"]))
    chunked = NightScorer(WASM2016, sides=("left", "right"))
    for k in range(len(per_side["left"])):
        for side in ("left", "right"):
            if k < len(per_side[side]):
                chunked.feed(side, *batches_as_arrays(per_side[side][k : k + 1]))
    got = chunked.finish()
    key = lambda e: (round(e.onset * 1000), e.side, e.kind, e.plm)  # noqa: E731
    assert sorted(map(key, got.events)) == sorted(map(key, whole.events))
