"""The durable outbox on its own: order, durability across reopen, coalescing, dead letters."""

from __future__ import annotations

import threading

import pytest

from detector.storage.outbox import Outbox
from detector.storage.schema import movement_point, night_point


def _mv(onset: float, plm: bool, subject: str = "s1") -> str:
    return movement_point(subject, onset, 2.0, "left", "lm", plm, 20.0 if plm else None, 1 if plm else None, True)


def test_fifo_order_and_ack(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    lines = [_mv(1_700_000_000 + 20 * i, False) for i in range(10)]
    assert box.put(lines) == 10
    batch = box.peek(4)
    assert [p.line for p in batch] == lines[:4]
    box.ack(batch)
    assert box.depth() == 6
    assert [p.line for p in box.peek(100)] == lines[4:]


def test_put_is_durable_across_reopen(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    box.put([_mv(1_700_000_000, False), _mv(1_700_000_030, False)])
    box.close()  # the next process opens the same file
    again = Outbox(path)
    assert again.depth() == 2
    assert again.peek(10)[0].line == _mv(1_700_000_000, False)


def test_newer_point_with_same_identity_replaces_pending_one_and_goes_last(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.put([_mv(1_700_000_000, False), _mv(1_700_000_020, False)])
    box.put([_mv(1_700_000_000, True)])  # same series key + time, plm flipped: different field set
    box.put([_mv(1_700_000_000, True)])  # identical identity again: replaces the previous one
    pending = [p.line for p in box.peek(10)]
    assert pending == [_mv(1_700_000_000, False), _mv(1_700_000_020, False), _mv(1_700_000_000, True)]
    # a night summary updated live: only the newest version of the same field set is kept
    for plm_count in range(5):
        box.put([night_point("s1", 1_700_000_000, {"plm_count": plm_count, "plm_index": 1.0}, False)])
    nights = [p.line for p in box.peek(100) if p.line.startswith("night")]
    assert nights == [night_point("s1", 1_700_000_000, {"plm_count": 4, "plm_index": 1.0}, False)]


def test_coalescing_within_one_call_keeps_the_last(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.put([_mv(1_700_000_000, True), _mv(1_700_000_050, False), _mv(1_700_000_000, True, subject="s1")])
    assert box.depth() == 2


def test_coalescing_can_be_switched_off(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", coalesce=False)
    box.put([_mv(1_700_000_000, True)])
    box.put([_mv(1_700_000_000, True)])
    assert box.depth() == 2


def test_ack_after_coalesced_replacement_keeps_the_newer_line(tmp_path):
    """The writer may be sending a line while a newer version arrives: the newer one must survive the ack."""
    box = Outbox(tmp_path / "o.sqlite")
    box.put([_mv(1_700_000_000, True)])
    in_flight = box.peek(10)
    box.put([_mv(1_700_000_000, True)])
    box.ack(in_flight)
    assert [p.line for p in box.peek(10)] == [_mv(1_700_000_000, True)]


def test_malformed_lines_are_refused_and_nothing_of_the_call_is_queued(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    with pytest.raises(ValueError, match="line break"):
        box.put([_mv(1_700_000_000, False), "m,a=b f=1 1\nm f=2 2"])
    with pytest.raises(ValueError, match="timestamp"):
        box.put(["m f=1"])
    assert box.depth() == 0


def test_dead_letters_keep_the_error_and_can_be_requeued(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.put([_mv(1_700_000_000, False), _mv(1_700_000_020, False)])
    first = box.peek(1)
    box.dead_letter(first, "HTTP 400: field type conflict")
    assert box.depth() == 1
    (letter,) = box.dead_letters()
    assert letter.line == first[0].line and "type conflict" in letter.error
    assert box.requeue_dead_letters() == 1
    assert box.depth() == 2 and box.dead_letter_count() == 0


def test_peek_respects_byte_limit_but_returns_at_least_one(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.put([_mv(1_700_000_000 + 20 * i, False) for i in range(10)])
    assert len(box.peek(100, max_bytes=1)) == 1
    size = len(_mv(1_700_000_000, False)) + 1
    assert len(box.peek(100, max_bytes=3 * size)) == 3


def test_concurrent_puts_lose_nothing(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")

    def writer(k: int) -> None:
        for i in range(50):
            box.put([_mv(1_700_000_000 + 1000 * k + 20 * i, False, subject=f"s{k}")])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert box.depth() == 200
