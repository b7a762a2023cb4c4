"""A night's diary is bounded (issue 16: 45 notes made a 92,308-character field, rewritten on every note).

merge_notes keeps the first notes up to MAX_NIGHT_NOTES notes / MAX_NIGHT_CHARS characters of stored text
/ MAX_NIGHT_TAGS tags, refuses every later note that adds something, counts the refused ones once each
(redeliveries included) and says so in a marker line of the stored text. The oracle below restates that
rule with plain lists, independently of the implementation's bookkeeping.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.storage import schema
from detector.storage.diary import (
    MARKER_RESERVE,
    MAX_NIGHT_CHARS,
    MAX_NIGHT_NOTES,
    MAX_NIGHT_TAGS,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    REFUSED_MEMORY,
    DiaryError,
    DiaryNote,
    diary_lines,
    make_note,
    merge_notes,
    not_kept_marker,
    read_back,
)
from plm.cli import main

TAG_POOL = [f"own{i}" for i in range(100)]


def note_or_none(text: str, tags: list[str]) -> DiaryNote | None:
    try:
        return make_note(text, tags)
    except DiaryError:  # an empty note
        return None


texts = st.one_of(
    st.just(""),
    st.sampled_from(["coffee at 19:00", "slept badly", "a\nb", "b", "a", "wine\nslept badly", "b\na"]),
    st.integers(min_value=1, max_value=MAX_TEXT_CHARS).map(lambda n: "x" * n),  # reach the character bound
    st.text(alphabet="ab \n", min_size=1, max_size=12),
)
tag_lists = st.one_of(
    st.just([]), st.lists(st.sampled_from(TAG_POOL), max_size=2), st.lists(st.sampled_from(TAG_POOL), max_size=MAX_TAGS)
)
notes = st.builds(note_or_none, texts, tag_lists).filter(bool)
# (note, delivered twice in a row?): QoS 1 redelivers; the second copy must change nothing
sequences = st.integers(min_value=0, max_value=REFUSED_MEMORY - 4).flatmap(  # long ones too: reach every bound
    lambda n: st.lists(st.tuples(notes, st.booleans()), min_size=n, max_size=n)
)


@dataclass
class Oracle:
    """The rule in plain words: keep whole notes in order while all three bounds hold (the note bound
    counts notes with a text); after the first note that does not fit, keep nothing more and count each
    distinct later note that adds something."""

    texts: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    kept: int = 0
    full: bool = False
    refused: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)

    def adds_something(self, note: DiaryNote) -> tuple[bool, list[str]]:
        lines = "\n".join(self.texts).split("\n") if self.texts else []
        mine = note.text.split("\n")
        inside = any(lines[i : i + len(mine)] == mine for i in range(len(lines) - len(mine) + 1))
        new_tags = [t for t in note.tags if t not in self.tags]
        return bool(note.text) and not inside, new_tags

    def add(self, note: DiaryNote) -> None:
        new_text, new_tags = self.adds_something(note)
        if not new_text and not new_tags:
            return
        if not self.full:
            texts = self.texts + ([note.text] if new_text else [])
            if (
                self.kept + new_text <= MAX_NIGHT_NOTES
                and len("\n".join(texts)) <= MAX_NIGHT_CHARS - MARKER_RESERVE
                and len(self.tags) + len(new_tags) <= MAX_NIGHT_TAGS
            ):
                self.texts, self.tags, self.kept = texts, self.tags + new_tags, self.kept + new_text
                return
            self.full = True
        self.refused.add((note.text, note.tags))


def merge_all(notes_: list[DiaryNote], start: DiaryNote | None = None) -> DiaryNote | None:
    merged = start
    for note in notes_:
        merged = merge_notes(merged, note)
    return merged


@settings(max_examples=300, deadline=None)
@given(sequences)
def test_any_sequence_of_notes_stays_within_the_bounds_and_says_what_was_not_kept(seq) -> None:
    delivered = [n for n, twice in seq for n in ([n, n] if twice else [n])]
    merged = merge_all(delivered)
    if merged is None:
        return
    oracle = Oracle()
    for note, _ in seq:
        oracle.add(note)

    stored = merged.stored_text
    assert len(stored) <= MAX_NIGHT_CHARS
    assert merged.notes <= MAX_NIGHT_NOTES and len(merged.tags) <= MAX_NIGHT_TAGS
    # the first notes are kept, whole and in order; tags of refused notes are not set
    assert merged.text == "\n".join(oracle.texts) and list(merged.tags) == oracle.tags
    assert merged.notes == oracle.kept
    # every refused note counted once, redeliveries included, and said in the stored text
    assert merged.not_kept == len(oracle.refused)
    if oracle.refused:
        assert stored.endswith("\n" + not_kept_marker(len(oracle.refused))) or stored == not_kept_marker(
            len(oracle.refused)
        )
        assert stored.startswith(merged.text)
    else:
        assert stored == merged.text
    # redelivering every note once more changes nothing
    assert merge_all([n for n, _ in seq], merged) == merged
    for line in diary_lines("alice", merged, 1_709_330_000.0):
        schema.split_line(line)


@settings(max_examples=150, deadline=None)
@given(sequences, notes)
def test_a_night_read_back_from_influxdb_keeps_its_bounds(seq, extra) -> None:
    """``plm note`` merges into the stored text: read_back recovers the marker's count and never
    counts fewer notes than were kept, so a night stays bounded across both paths."""
    merged = merge_all([n for n, _ in seq])
    if merged is None:
        return
    back = read_back(DiaryNote(merged.stored_text, merged.tags))
    assert back.text == merged.text and back.tags == merged.tags
    assert back.not_kept == merged.not_kept
    assert back.notes >= merged.notes
    if "\n" not in "".join(n.text for n, _ in seq):
        assert back.notes == merged.notes  # one line per note: counted exactly
    after = merge_notes(back, extra)
    assert len(after.stored_text) <= MAX_NIGHT_CHARS and after.notes <= max(MAX_NIGHT_NOTES, back.notes)
    assert after.not_kept in (back.not_kept, back.not_kept + 1)
    assert after.stored_text.startswith(back.text)


@given(st.integers(min_value=1, max_value=10**18 - 1))
def test_the_marker_fits_its_reserve_and_reads_back(count: int) -> None:
    marker = not_kept_marker(count)
    assert len(marker) <= MARKER_RESERVE
    assert read_back(DiaryNote(f"coffee\n{marker}", ())).not_kept == count
    assert read_back(DiaryNote(marker, ("caffeine",))) == DiaryNote("", ("caffeine",), notes=0, not_kept=count)


def test_the_issue_flood_of_45_long_notes() -> None:
    """Issue 16's measurement: 45 notes of ~2000 characters made one 92,308-character field."""
    flood = [make_note(f"note {i:02d} " + "x" * (MAX_TEXT_CHARS - 8)) for i in range(45)]
    merged = merge_all(flood)
    assert merged.notes == 4 and merged.not_kept == 41
    assert merged.text.split("\n") == [n.text for n in flood[:4]]
    assert merged.stored_text.endswith(
        "\n[41 more notes not kept: at most 20 notes / 8200 characters / 64 tags a night]"
    )
    assert len(merged.stored_text) <= MAX_NIGHT_CHARS


def test_short_notes_stop_at_the_note_bound_and_a_full_night_refuses_even_a_short_note() -> None:
    merged = merge_all([make_note(f"note {i}") for i in range(MAX_NIGHT_NOTES + 3)])
    assert merged.notes == MAX_NIGHT_NOTES and merged.not_kept == 3
    assert (
        merged.stored_text.splitlines()[-1]
        == not_kept_marker(3)
        == "[3 more notes not kept: " + ("at most 20 notes / 8200 characters / 64 tags a night]")
    )
    long_first = merge_all([make_note("a" * MAX_TEXT_CHARS) for _ in range(1)] + [make_note("b" * MAX_TEXT_CHARS)])
    long_first = merge_all([make_note(c * MAX_TEXT_CHARS) for c in "cdef"], long_first)  # the 5th long one
    assert long_first.notes == 4 and long_first.not_kept == 2
    assert merge_notes(long_first, make_note("slept badly")).not_kept == 3, "the night is full: a short note too"


def test_a_note_is_kept_with_all_its_tags_or_not_at_all() -> None:
    first = make_note("x", TAG_POOL[:MAX_TAGS])
    second = make_note("y", TAG_POOL[MAX_TAGS : 2 * MAX_TAGS])
    third = make_note("z", ["extra", "wine"])
    merged = merge_all([first, second, third])
    assert len(merged.tags) == 2 * MAX_TAGS == MAX_NIGHT_TAGS
    assert merged.text == "x\ny" and "extra" not in merged.tags and "alcohol" not in merged.tags
    assert merged.not_kept == 1


def test_redeliveries_do_not_duplicate_kept_or_refused_notes() -> None:
    multi = make_note("took magnesium\nstretched 10 min")
    merged = merge_all([multi, multi])
    assert merged.text == multi.text and merged.notes == 1, "a note with a line break, delivered twice"
    full = merge_all([make_note(f"n{i}") for i in range(MAX_NIGHT_NOTES)])
    late = make_note("late one")
    assert merge_all([late, late, late], full).not_kept == 1
    assert merge_notes(merge_notes(full, late), make_note("another")).not_kept == 2


def test_digests_of_refused_notes_are_bounded() -> None:
    full = merge_all([make_note(f"n{i}") for i in range(MAX_NIGHT_NOTES)])
    flooded = merge_all([make_note(f"spam {i}") for i in range(3 * REFUSED_MEMORY)], full)
    assert flooded.not_kept == 3 * REFUSED_MEMORY and len(flooded.refused) == REFUSED_MEMORY
    assert flooded.text == full.text


@pytest.mark.services
def test_plm_note_into_a_full_night_says_not_kept(influxd_factory, tmp_path, capsys) -> None:
    """The ``plm note`` path merges into the stored text: a full night refuses the note, says so with
    exit 1, and the stored marker counts it."""
    server = influxd_factory()
    config = tmp_path / "plm.toml"
    config.write_text(f'[influx]\nurl = "{server.url}"\napi = 1\n[detector]\nstate_dir = "{tmp_path}/state"\n')
    base = ["--config", str(config), "note", "--subject", "carol", "--tz", "UTC", "--time", "2024-03-01T21:00"]
    anchor = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC).timestamp()
    from detector.storage.influx import InfluxSink
    from plm.config import InfluxSettings

    full = merge_all([make_note(f"note {i}") for i in range(MAX_NIGHT_NOTES)])
    with InfluxSink(InfluxSettings(url=server.url, api=1, bucket="plm"), tmp_path / "o.sqlite") as sink:
        sink.put(diary_lines("carol", full, anchor, dt.UTC))
        assert sink.flush(10)
    capsys.readouterr()
    assert main([*base, "one too many"]) == 1
    assert "not kept" in capsys.readouterr().err
    assert main([*base, "note 3"]) == 0, "a note already there adds nothing and is not refused"
    rows = server.query('SELECT "text" FROM "diary"', database="plm")["results"][0]["series"][0]["values"]
    stored = rows[0][1].replace("\\n", "\n")
    assert stored == full.text + "\n" + not_kept_marker(1)
