"""Reorder window, duplicate and late-batch handling, and the write-ahead journal of the live detector."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.live.ingest import SensorInbox
from detector.storage.journal import Journal
from plm.wire import make_batch

T0 = 1_790_000_000 * 10**9
NOW = T0 + 10**15


def _batches(n: int, rate: float = 52.0) -> list:
    out = []
    for i in range(n):
        xyz = np.full((52, 3), i / 1000.0, dtype=np.float32)
        out.append(make_batch(T0 + i * 10**9, rate, xyz, seq=i, now_ns=NOW))
    return out


@settings(max_examples=200)
@given(st.data())
def test_shuffled_within_window_and_duplicated_comes_out_ordered_once(data):
    batches = _batches(30)
    # displace each batch by at most 3 positions (3 s < 5 s window) and repeat some
    keys = [i + data.draw(st.floats(0, 3)) for i in range(len(batches))]
    order = [b for _, b in sorted(zip(keys, batches, strict=True), key=lambda kb: kb[0])]
    dup_positions = data.draw(st.lists(st.integers(0, len(order) - 1), max_size=10))
    stream = list(order)
    for pos in sorted(dup_positions, reverse=True):
        stream.insert(min(pos + 2, len(stream)), order[pos])
    inbox = SensorInbox(window_s=5.0)
    released = []
    for batch in stream:
        released += inbox.add(batch)
    released += inbox.flush()
    assert [b.seq for b in released] == list(range(30))
    assert inbox.counts["duplicate"] == len(dup_positions)
    assert inbox.counts["late"] == 0


def test_batch_later_than_window_is_counted_and_dropped():
    batches = _batches(20)
    inbox = SensorInbox(window_s=5.0)
    released = []
    for b in batches[:3] + batches[4:]:
        released += inbox.add(b)
    released += inbox.add(batches[3])  # 16 s late: its slot was released long ago
    released += inbox.flush()
    assert [b.seq for b in released] == [0, 1, 2, *range(4, 20)]
    assert inbox.counts["late"] == 1


def test_redelivery_after_release_is_a_duplicate_not_late():
    batches = _batches(12)
    inbox = SensorInbox(window_s=2.0)
    out = []
    for b in batches:
        out += inbox.add(b)
    out += inbox.add(batches[2])
    assert inbox.counts["duplicate"] == 1 and inbox.counts["late"] == 0
    assert [b.seq for b in out + inbox.flush()] == list(range(12))


def test_gap_in_data_passes_through_and_nothing_is_held_forever():
    inbox = SensorInbox(window_s=5.0)
    first = _batches(3)
    later = make_batch(T0 + 600 * 10**9, 52.0, np.zeros((52, 3)), seq=99, now_ns=NOW)
    out = []
    for b in first:
        out += inbox.add(b)
    out += inbox.add(later)
    assert [b.seq for b in out] == [0, 1, 2]
    assert inbox.held == 1
    assert [b.seq for b in inbox.flush()] == [99]


def test_journal_group_commit_replay_and_checkpoint(tmp_path):
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    ids = journal.append([("t/a", b"one"), ("t/b", b"two"), ("t/c", b"three")])
    assert ids == sorted(ids) and len(set(ids)) == 3
    journal.checkpoint(ids[0], {"state": 1})
    journal.close()

    reopened = Journal(path)
    applied, state = reopened.load_checkpoint()
    assert applied == ids[0] and state == {"state": 1}
    assert [(t, p) for _, t, p in reopened.replay(applied)] == [("t/b", b"two"), ("t/c", b"three")]
    assert reopened.depth() == 2
    reopened.checkpoint(ids[2], {"state": 3})
    assert reopened.depth() == 0 and list(reopened.replay(ids[2])) == []


def test_journal_replays_in_pages(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.append([("t", str(i).encode()) for i in range(4500)])
    assert [int(p) for _, _, p in journal.replay(0)] == list(range(4500))
    assert journal.load_checkpoint() is None
