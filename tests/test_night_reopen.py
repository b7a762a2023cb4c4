"""One night per subject per anchor (detector/live/night.py): data that comes back on the anchor of a night
that ended -- after silence, a goodbye or the configured end -- reopens that night instead of starting a
second one whose summary would overwrite the first one's point at the same anchor."""

from __future__ import annotations

import json
import pickle

from detector.live.core import DetectorCore, Effects
from detector.scoring.scorer import score_arrays
from detector.storage.diary import night_start_for
from plm import wire
from plm.config import Settings
from simulator import simulate_night
from tests.live_helpers import batches_as_arrays, interleave, night_batches

SUBJECT = "reopen"
IDLE_END_S = 600.0


def _night(start_s: float, hours: float, seed: int = 5) -> dict[str, list[wire.SampleBatch]]:
    night = simulate_night("rls-severe", seed=seed, duration_h=hours, start_unix_s=start_s, jitter_ms=0, gap=False)
    return night_batches(night)


def _without(batches: dict[str, list[wire.SampleBatch]], lo_s: float, hi_s: float) -> dict[str, list[wire.SampleBatch]]:
    """A hole in both legs' data (the sensors out of range): no batch starting in [lo_s, hi_s). The collector
    numbers the batches it publishes, so ``seq`` stays contiguous across the hole (a hole in ``seq`` would be
    batches in transit, which the detector waits for)."""
    kept = {side: [b for b in bs if not lo_s <= b.start_ns / 1e9 < hi_s] for side, bs in batches.items()}
    return {
        side: [wire.make_batch(b.start_ns, b.rate_hz, b.xyz, seq) for seq, b in enumerate(bs)]
        for side, bs in kept.items()
    }


def _stream(core: DetectorCore, batches: dict[str, list[wire.SampleBatch]], *, tick_every_s: float = 60.0) -> Effects:
    """Feed the batches live (wall clock = data time), with the clock ticks a service gives every minute."""
    out = Effects()
    next_tick = None
    for side, batch in interleave(batches):
        wall = batch.start_ns / 1e9 + 1.0
        next_tick = wall + tick_every_s if next_tick is None else next_tick
        while wall >= next_tick:
            _add(out, core.tick(next_tick))
            next_tick += tick_every_s
        topic = wire.acc_topic(SUBJECT, f"{side}-ankle")
        _add(out, core.handle([(topic, wire.encode_binary(batch))], wall))
    return out


def _add(into: Effects, effects: Effects) -> None:
    into.points += effects.points
    into.publishes += effects.publishes
    assert not effects.dead_letters, effects.dead_letters


def _nights(effects: Effects) -> list[dict]:
    return [json.loads(p.payload) for p in effects.publishes if p.topic == wire.night_topic(SUBJECT)]


def _movements(effects: Effects) -> list[bytes]:
    return [p.payload for p in effects.publishes if p.topic == wire.movement_topic(SUBJECT)]


def _evening(anchor_from: float) -> float:
    """23:00 local on an anchor day: an hour-long night with a hole stays on one anchor in any time zone."""
    return night_start_for(anchor_from) + 11 * 3600


def test_data_back_after_the_night_ended_reopens_it_and_the_night_equals_offline_scoring() -> None:
    start = _evening(1.7e9)
    hole = (start + 1500, start + 1500 + 2 * IDLE_END_S)  # silence longer than the idle end
    batches = _without(_night(start, 1.0), *hole)
    core = DetectorCore(Settings(), publish_results=True, idle_end_s=IDLE_END_S)
    effects = _stream(core, batches)
    _add(effects, core.end_all_nights())

    assert core.stats.nights_reopened == 1, "the silence should have ended the night, and the data reopened it"
    nights = _nights(effects)
    assert sum(n["final"] for n in nights) == 2  # final once at the silence, and again at the end
    offline = score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"]))
    last = nights[-1]
    for key in ("lm_count", "plm_count", "plm_index"):
        assert last[key] == offline.fields[key], key
    # every movement written once, and the stored set is offline scoring's
    assert len(_movements(effects)) == len(set(_movements(effects)))
    stored = {line.split(" ")[-1] for line in effects.points if line.startswith("movement,")}
    assert stored == {str(round(e.onset * 1000)) for e in offline.events}


def test_a_long_hole_on_the_same_anchor_is_a_gap_in_the_night_not_a_new_night() -> None:
    start = _evening(1.7e9)
    batches = _without(_night(start, 3.5), start + 1800, start + 1800 + 2.5 * 3600)  # 2.5 h: past NIGHT_GAP_S
    core = DetectorCore(Settings(), publish_results=True, idle_end_s=10 * 3600)
    effects = _stream(core, batches)
    assert core.stats.nights_finished == 0 and core.stats.nights_reopened == 0
    _add(effects, core.end_all_nights())
    offline = score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"]))
    assert _nights(effects)[-1]["lm_count"] == offline.fields["lm_count"]


def test_data_of_a_later_anchor_starts_a_new_night() -> None:
    first = _evening(1.7e9)
    second = first + 86400
    core = DetectorCore(Settings(), publish_results=True, idle_end_s=IDLE_END_S)
    effects = _stream(core, _night(first, 0.5))
    _add(effects, core.tick(first + 1800 + 2 * IDLE_END_S))
    _add(effects, _stream(core, _night(second, 0.5, seed=6)))
    _add(effects, core.end_all_nights())
    assert core.stats.nights_reopened == 0 and core.stats.nights_finished == 2
    anchors = {line.split(" ")[-1] for line in effects.points if line.startswith("night,")}
    assert anchors == {str(round(night_start_for(t) * 1000)) for t in (first, second)}
    assert core.subjects[SUBJECT].ended_night is not None  # the second night could still be reopened today
    core.tick(night_start_for(second) + 86400)
    assert core.subjects[SUBJECT].ended_night is None, "an ended night is kept only until its day is over"


def test_an_ended_night_survives_a_checkpoint_and_reopens_after_a_restart() -> None:
    start = _evening(1.7e9)
    hole = (start + 1200, start + 1200 + 2 * IDLE_END_S)
    batches = _without(_night(start, 0.75), *hole)
    before = {s: [b for b in bs if b.start_ns / 1e9 < hole[0]] for s, bs in batches.items()}
    after = {s: [b for b in bs if b.start_ns / 1e9 >= hole[1]] for s, bs in batches.items()}
    core = DetectorCore(Settings(), publish_results=True, idle_end_s=IDLE_END_S)
    effects = _stream(core, before)
    _add(effects, core.tick(hole[0] + IDLE_END_S + 60))
    assert core.stats.nights_finished == 1
    restarted = DetectorCore(Settings(), publish_results=True, idle_end_s=IDLE_END_S)
    restarted.restore(pickle.loads(pickle.dumps(core.snapshot())), hole[1])
    _add(effects, _stream(restarted, after))
    _add(effects, restarted.end_all_nights())
    assert restarted.stats.nights_reopened == 1
    offline = score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"]))
    assert _nights(effects)[-1]["plm_count"] == offline.fields["plm_count"]
    assert len(_movements(effects)) == len(set(_movements(effects)))


def test_a_night_worn_on_after_the_configured_end_is_reopened_once_and_ends_on_silence() -> None:
    start = _evening(1.7e9)  # 23:00 local
    batches = _night(start, 1.75)  # until 00:45
    core = DetectorCore(Settings(detector={"night_end_local": "00:30"}), publish_results=True, idle_end_s=IDLE_END_S)
    effects = _stream(core, batches)
    assert core.stats.nights_finished == 1 and core.stats.nights_reopened == 1  # no end/reopen churn
    _add(effects, core.tick(start + 1.75 * 3600 + IDLE_END_S + 60))
    assert core.stats.nights_finished == 2
    offline = score_arrays(batches_as_arrays(batches["left"]), batches_as_arrays(batches["right"]))
    assert _nights(effects)[-1]["lm_count"] == offline.fields["lm_count"]
    assert len({line.split(" ")[-1] for line in effects.points if line.startswith("night,")}) == 1
