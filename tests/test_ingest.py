"""Reorder window, seq holes, duplicate and late-batch handling, and the write-ahead journal of the live detector."""

from __future__ import annotations

import pickle

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


def test_batch_later_than_window_and_hole_wait_is_counted_and_dropped():
    batches = _batches(40)
    inbox = SensorInbox(window_s=5.0, hole_wait_s=10.0)
    released = []
    for b in batches[:3] + batches[4:]:
        released += inbox.add(b)
    assert inbox.counts["holes_given_up"] == 1  # batch 3 never came within 10 s of data past it
    released += inbox.add(batches[3])  # 36 s late: its slot was released
    released += inbox.flush()
    assert [b.seq for b in released] == [0, 1, 2, *range(4, 40)]
    assert inbox.counts["late"] == 1 and inbox.counts["duplicate"] == 0


def test_seq_hole_is_waited_for_and_filled_by_a_late_redelivery():
    """NATS sends an unacknowledged batch again after its ack_wait, behind newer ones: 30 s of data later here,
    far past the 5-s window, yet inside the hole wait -- nothing is late, the stream comes out whole."""
    batches = _batches(80)
    inbox = SensorInbox(window_s=5.0, hole_wait_s=60.0)
    released = []
    for b in batches[:10] + batches[11:40]:
        released += inbox.add(b)
    assert [b.seq for b in released] == list(range(10))  # held behind the hole
    assert inbox.waiting_for_hole
    released += inbox.add(batches[10])
    for b in batches[40:]:
        released += inbox.add(b)
    released += inbox.flush()
    assert [b.seq for b in released] == list(range(80))
    assert inbox.counts["late"] == 0 and inbox.counts["holes_given_up"] == 0


def test_ble_dropout_is_a_time_gap_with_contiguous_seq_and_is_not_waited_for():
    """A sensor out of radio range for 10 minutes: its next batch has the next seq, so the inbox releases as it
    would without any hole handling (no added latency)."""
    inbox = SensorInbox(window_s=5.0, hole_wait_s=60.0)
    first = _batches(10)
    after = [make_batch(T0 + (600 + i) * 10**9, 52.0, np.zeros((52, 3)), seq=10 + i, now_ns=NOW) for i in range(10)]
    out = []
    for b in first + after:
        out += inbox.add(b)
    assert [b.seq for b in out] == list(range(16))  # everything starting 5 s before the newest end
    assert inbox.counts["holes_given_up"] == 0


def test_unnumbered_sender_and_restarted_collector_make_no_hole():
    """seq always 0 (a DIY sender that does not count) and a seq that starts again from 0 (a restarted
    collector): no wait."""
    for seqs in ([0] * 20, [*range(500, 510), *range(10)]):
        inbox = SensorInbox(window_s=2.0, hole_wait_s=60.0)
        out = []
        for i, seq in enumerate(seqs):
            out += inbox.add(make_batch(T0 + i * 10**9, 52.0, np.zeros((52, 3)), seq=seq, now_ns=NOW))
        assert len(out) == 19 and not inbox.waiting_for_hole  # all but the last 2 s


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
    later = make_batch(T0 + 600 * 10**9, 52.0, np.zeros((52, 3)), seq=3, now_ns=NOW)
    out = []
    for b in first:
        out += inbox.add(b)
    out += inbox.add(later)
    assert [b.seq for b in out] == [0, 1, 2]
    assert inbox.held == 1
    assert [b.seq for b in inbox.flush()] == [3]


def _deliver(inbox: SensorInbox, stream: list, cut: int | None = None) -> tuple[list, SensorInbox]:
    released = []
    for i, batch in enumerate(stream):
        if i == cut:
            inbox = pickle.loads(pickle.dumps(inbox))  # a checkpoint and a restart from it
        released += inbox.add(batch)
    return released + inbox.flush(), inbox


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_delivery_order_with_redeliveries_within_the_hole_wait_gives_the_same_stream(data):
    """Each batch comes first after a delay: most within the reorder window (3 s), some -- a broker's redelivery
    after its ack_wait, a collector's resend -- up to 55 s of data later (the hole wait is 60 s); any batch may
    come again at any later point (QoS 1 duplicates, before or after its release). Whatever the order, the
    released stream is every batch once, in order: nothing late, no hole given up. A checkpoint (pickle) at any
    point changes nothing."""
    n = 80
    batches = _batches(n)
    delays = [
        data.draw(st.one_of(st.floats(0, 3), st.floats(0, 55)) if i else st.just(0.0)) for i in range(n)
    ]  # the first batch first: what comes before it in time is another stream's business
    keyed = [(i + d, i, b) for i, (d, b) in enumerate(zip(delays, batches, strict=True))]
    repeats = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.floats(0, 120)), max_size=15))
    keyed += [(i + delays[i] + extra + 1e-6, i, batches[i]) for i, extra in repeats]
    stream = [b for _, _, b in sorted(keyed, key=lambda k: (k[0], k[1]))]
    inbox = SensorInbox(window_s=5.0, hole_wait_s=60.0)
    cut = data.draw(st.integers(0, len(stream)))
    released, inbox = _deliver(inbox, stream, cut)
    assert [b.seq for b in released] == list(range(n))
    assert inbox.counts["late"] == 0 and inbox.counts["holes_given_up"] == 0
    assert inbox.counts["duplicate"] == len(repeats)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 39), max_size=8), st.lists(st.integers(0, 39), max_size=8))
def test_without_seq_holes_the_hole_wait_adds_no_latency(gaps, swaps):
    """In-order senders (mosquitto resends a session's messages in order) and BLE dropouts (time gaps, seq
    contiguous): every add releases exactly what it released without any hole handling."""
    batches, t = [], T0
    for i in range(40):
        t += (120 if i in gaps else 1) * 10**9
        batches.append(make_batch(t, 52.0, np.zeros((52, 3)), seq=i, now_ns=NOW))
    for i in swaps:  # neighbours swapped: within the window the next one is there before anything is due
        if i + 1 < len(batches) and i + 1 not in gaps:
            batches[i], batches[i + 1] = batches[i + 1], batches[i]
    waiting, plain = SensorInbox(5.0, hole_wait_s=60.0), SensorInbox(5.0, hole_wait_s=0.0)
    for b in batches:
        assert [x.seq for x in waiting.add(b)] == [x.seq for x in plain.add(b)]
    assert [x.seq for x in waiting.flush()] == [x.seq for x in plain.flush()]
    assert waiting.counts["holes_given_up"] == 0


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
