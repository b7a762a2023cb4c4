"""Defence in depth below the wire boundary (issue #16): what still raises while being applied is set aside
with its error, counted, and processing goes on -- live and in journal replay, so no journal blocks a start.

The faults are injected (a method replaced by one that raises): input that reaches them is a bug the
validation missed, and the point here is what the service does then."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.live.core import DetectorCore
from detector.live.service import LiveDetector
from detector.storage.journal import Journal
from detector.storage.outbox import OutboxError
from plm import wire
from plm.config import InfluxSettings, Settings
from simulator import simulate_night
from tests.live_helpers import night_batches


@pytest.fixture(scope="module")
def batches():
    night = simulate_night("rls-severe", seed=77, duration_h=0.25, jitter_ms=0, gap=False)
    return night_batches(night)


def _settings(state_dir: Path) -> Settings:
    return Settings(influx=InfluxSettings(url="http://127.0.0.1:9", api=1), detector={"state_dir": state_dir})


def _acc(subject: str, batch: wire.SampleBatch, side: str = "left") -> tuple[str, bytes]:
    return wire.acc_topic(subject, f"{side}-ankle"), wire.encode_binary(batch)


POISON = (wire.status_topic("poison", "left-ankle"), b'{"state":"online","side":"left"}')


def _raise_for_poison(original):
    def apply_status(self, parsed, status, wall):
        if parsed.subject == "poison":
            raise RuntimeError("injected fault")
        return original(self, parsed, status, wall)

    return apply_status


def _close(detector: LiveDetector) -> None:
    detector.sink.close()
    detector.journal.close()


def test_a_message_that_raises_is_dead_lettered_and_the_rest_goes_on(tmp_path, batches, monkeypatch):
    monkeypatch.setattr(DetectorCore, "_apply_status", _raise_for_poison(DetectorCore._apply_status))
    detector = LiveDetector(_settings(tmp_path), publish_results=False)
    good = [_acc("healthy", b) for b in batches["left"][:120]]
    detector.apply_many([POISON, *good[:60], POISON, *good[60:]], ids=[1, *range(2, 62), 62, *range(63, 123)])
    assert detector.journal.dead_letter_total == 2
    assert (
        detector.subjects["healthy"].last_t["left"] >= batches["left"][100].start_ns / 1e9
    )  # minus the reorder window
    [_newest, oldest] = detector.journal.dead_letters()
    assert oldest["topic"] == POISON[0] and bytes(oldest["payload"]) == POISON[1]
    assert oldest["stage"] == "message" and "RuntimeError: injected fault" in oldest["error"]
    assert "injected fault" in oldest["traceback"] and "_apply_status" in oldest["traceback"]
    # a redelivery or replay of the same journal row is not filed twice
    detector.apply_many([POISON], ids=[1])
    assert detector.journal.dead_letter_total == 2
    health = []
    detector.sink.put = health.extend  # capture the detector_health point it writes
    detector._publish_status("online")
    assert any("messages_dead_lettered=2i" in line for line in health), health
    _close(detector)


def test_a_journal_row_that_raises_cannot_block_a_start(tmp_path, batches, monkeypatch):
    journal = Journal(tmp_path / "detector-journal.sqlite")
    journal.append([POISON, *(_acc("healthy", b) for b in batches["left"][:30])])
    journal.close()
    monkeypatch.setattr(DetectorCore, "_apply_status", _raise_for_poison(DetectorCore._apply_status))
    first = LiveDetector(_settings(tmp_path), publish_results=False)
    first.recover()  # replays the journal, as start() does
    assert first.journal.dead_letter_total == 1
    assert "healthy" in first.subjects
    _close(first)  # no checkpoint: the next start replays the same rows
    second = LiveDetector(_settings(tmp_path), publish_results=False)
    second.recover()
    assert second.journal.dead_letter_total == 1, "the same row was filed again"
    _close(second)


def test_a_scorer_that_raises_loses_one_subject_not_all(tmp_path, batches):
    detector = LiveDetector(_settings(tmp_path), publish_results=False)
    left = batches["left"]
    detector.apply_many([_acc("broken", left[0]), _acc("healthy", left[0])])

    def fail(*_args, **_kwargs):
        raise ZeroDivisionError("injected scorer fault")

    detector.subjects["broken"].scorer.feed = fail
    detector.apply_many([m for b in left[1:40] for m in (_acc("broken", b), _acc("healthy", b))])
    assert detector.subjects["healthy"].last_t["left"] >= left[30].start_ns / 1e9  # minus the reorder window
    letters = detector.journal.dead_letters(1000)
    assert {row["stage"] for row in letters} == {"scoring"}
    assert detector.journal.dead_letter_total == len(letters) >= 1
    # each set-aside batch is kept as a wire payload a developer can decode (and publish again)
    kept = sorted(wire.decode(bytes(row["payload"]), now_ns=2**62).start_ns for row in letters)
    assert kept[0] >= left[0].start_ns and all(
        row["topic"] == wire.acc_topic("broken", "left-ankle") for row in letters
    )
    _close(detector)


def test_storage_failures_are_not_dead_lettered(tmp_path):
    """A full disk is not one message's fault: dead-lettering it would drop what was accepted. The core does no
    I/O, so it cannot meet one; the service's write of the core's effects raises (and the worker then fails
    loudly, see test_detector_supervision)."""
    detector = LiveDetector(_settings(tmp_path), publish_results=False)

    def disk_full(_lines):
        raise OutboxError("cannot write outbox: database or disk is full")

    detector.sink.put = disk_full
    with pytest.raises(OutboxError):
        detector.apply_many([(wire.diary_topic("alice"), b"slept badly")])
    assert detector.journal.dead_letter_total == 0
    _close(detector)


def test_dead_letters_are_bounded_but_all_counted(tmp_path, monkeypatch):
    monkeypatch.setattr("detector.storage.journal.DEAD_LETTERS_KEPT", 5)
    journal = Journal(tmp_path / "j.sqlite")
    for i in range(12):
        assert journal.dead_letter("t", b"x" * 10, "E", "trace", key=f"row {i}")
    assert not journal.dead_letter("t", b"x", "E", "trace", key="row 11")  # filed before: ignored
    assert journal.dead_letter_total == 12
    assert [row["id"] for row in journal.dead_letters()] == [12, 11, 10, 9, 8]
    journal.close()
    assert Journal(tmp_path / "j.sqlite").dead_letter_total == 12  # durable
