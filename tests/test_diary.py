"""Sleep diary: tags from text, the MQTT payload format (fuzzed), the night a note belongs to, merging,
and a note stored in a real influxd lands on the night summary's row."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.storage import schema
from detector.storage.diary import (
    DiaryError,
    DiaryNote,
    diary_lines,
    make_note,
    merge_notes,
    night_date,
    night_start_for,
    parse_diary_payload,
    tags_from_text,
)
from plm.cli import main

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: dt.tzinfo = BERLIN) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("caffeine after 18:00", ("caffeine",)),
        ("Two coffees and a beer", ("caffeine", "alcohol")),
        ("gym, then stretched", ("exercise", "stretching")),
        ("late dinner", ("late_meal",)),
        ("started a new med (ropinirole)", ("medication",)),
        ("slept badly", ("poor_sleep",)),
        ("nothing special", ()),
        ("runner's high? no: running shoes only", ("exercise",)),
    ],
)
def test_tags_from_keywords(text: str, tags: tuple[str, ...]) -> None:
    assert tags_from_text(text) == tags


def test_explicit_tags_are_normalised_and_come_first() -> None:
    note = make_note("wine", ["Late Meal", "magnesium"])
    assert note.tags == ("late_meal", "magnesium", "alcohol")
    with pytest.raises(DiaryError, match="tag"):
        make_note("x", ["no,commas"])
    with pytest.raises(DiaryError, match="empty note"):
        make_note("   ")


def test_payload_plain_text_and_json() -> None:
    assert parse_diary_payload(b"coffee at 17:00") == DiaryNote("coffee at 17:00", ("caffeine",))
    note = parse_diary_payload(json.dumps({"text": "yoga", "tags": ["magnesium"], "time": 1_709_330_000}).encode())
    assert note == DiaryNote("yoga", ("magnesium", "stretching"), 1_709_330_000.0)
    iso = parse_diary_payload(b'{"tags": ["alcohol"], "time": "2024-03-01T21:30:00+01:00"}')
    assert iso.time_s == at("2024-03-01T21:30:00") and iso.tags == ("alcohol",)
    assert parse_diary_payload(b'"just a string"').text == "just a string"
    assert parse_diary_payload("\ufeffWein".encode()).text == "Wein"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty payload"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"text": 5}', "'text' must be a string"),
        (b'{"tags": "caffeine"}', "'tags' must be a list"),
        (b'{"text": "x", "tag": ["a"]}', "unknown key"),
        (b'{"text": "x", "time": "yesterday"}', "ISO 8601"),
        (b'{"text": "x", "time": 1709330000000}', "not ms"),
        (b'{"text": "x"', "not valid"),
        (b"[1, 2]", "must be an object"),
        (b"x" * 20_000, "at most"),
        (b'{"text": "a\\u0000b"}', "control character"),
    ],
)
def test_malformed_payloads_name_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(DiaryError, match=message):
        parse_diary_payload(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_any_bytes_give_a_note_or_a_diary_error(payload: bytes) -> None:
    try:
        note = parse_diary_payload(payload)
    except DiaryError as exc:
        assert str(exc)
        return
    assert note.text or note.tags
    for line in diary_lines("alice", note, 1_709_330_000.0):  # every accepted note can be stored
        schema.split_line(line)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["text", "tags", "time", "x"]), json_values, max_size=4))
def test_fuzz_json_objects(doc: dict) -> None:
    try:
        note = parse_diary_payload(json.dumps(doc).encode())
    except DiaryError:
        return
    assert set(doc) <= {"text", "tags", "time"}
    if isinstance(doc.get("tags"), list):
        assert all(isinstance(t, str) for t in doc["tags"])
        assert set(note.tags) >= {t.strip().lower().replace(" ", "_").replace("-", "_") for t in doc["tags"]}


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=946_684_800, max_value=4_000_000_000),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_night_anchor_is_the_latest_local_noon(t: float, tz: str) -> None:
    anchor = night_start_for(t, tz)
    local = dt.datetime.fromtimestamp(anchor, ZoneInfo(tz))
    assert (local.hour, local.minute, local.second) == (12, 0, 0)
    assert anchor <= t < anchor + 25 * 3600  # 25 h: a DST night is one hour longer
    assert night_start_for(anchor, tz) == anchor


def test_evening_and_next_morning_notes_belong_to_one_night() -> None:
    evening = night_start_for(at("2024-03-01T21:30:00"), BERLIN)
    morning = night_start_for(at("2024-03-02T07:45:00"), BERLIN)
    assert evening == morning == at("2024-03-01T12:00:00")
    assert night_date(at("2024-03-02T11:59:59"), BERLIN) == dt.date(2024, 3, 1)
    assert night_date(at("2024-03-02T12:00:00"), BERLIN) == dt.date(2024, 3, 2)


def test_merge_keeps_both_notes_and_ignores_a_redelivery() -> None:
    first = make_note("coffee at 19:00")
    second = make_note("slept badly")
    merged = merge_notes(first, second)
    assert merged.text == "coffee at 19:00\nslept badly" and merged.tags == ("caffeine", "poor_sleep")
    assert merge_notes(merged, second) == merged
    assert merge_notes(None, first) == first


@pytest.mark.services
def test_note_lands_on_the_night_row_in_influxd(influxd_factory, tmp_path, capsys) -> None:
    server = influxd_factory()
    anchor = night_start_for(at("2024-03-01T23:00:00", dt.UTC), dt.UTC)
    night = schema.night_point("bob", anchor, {"plm_index": 21.5}, final=True)
    from detector.storage.influx import InfluxSink
    from plm.config import InfluxSettings

    with InfluxSink(InfluxSettings(url=server.url, api=1, bucket="plm"), tmp_path / "o.sqlite") as sink:
        sink.put([night])
        assert sink.flush(10)
    config = tmp_path / "plm.toml"
    config.write_text(f'[influx]\nurl = "{server.url}"\napi = 1\n[detector]\nstate_dir = "{tmp_path}/state"\n')
    base = ["--config", str(config), "note", "--subject", "bob", "--tz", "UTC"]
    assert main([*base, "--time", "2024-03-01T20:00:00", "two espressos after dinner"]) == 0
    assert main([*base, "--time", "2024-03-02T08:00:00", "--tag", "leg cramps", "restless night"]) == 0
    assert "night of Fri 01 Mar 2024" in capsys.readouterr().out
    rows = server.query(
        'SELECT "plm_index", "diary_caffeine", "diary_poor_sleep", "diary_alcohol" FROM "night" '
        "WHERE \"subject\" = 'bob'",
        database="plm",
    )["results"][0]["series"][0]["values"]
    assert rows == [[int(anchor * 1000), 21.5, True, True, False]]
    text, tags = server.query('SELECT "text", "tags" FROM "diary"', database="plm")["results"][0]["series"][0][
        "values"
    ][0][1:]
    assert text == "two espressos after dinner\\nrestless night"  # stored line breaks: docs/influx-schema.md
    assert tags.split(",") == ["caffeine", "late_meal", "leg_cramps", "poor_sleep"]


def test_note_cli_dry_run_and_bad_input(capsys) -> None:
    assert main(["note", "--subject", "eve", "--tz", "UTC", "--time", "2024-03-02T08:00", "--dry-run", "beer"]) == 0
    out = capsys.readouterr().out.splitlines()
    anchor_ms = int(at("2024-03-01T12:00:00", dt.UTC) * 1000)
    assert len(out) == 2 and all(line.endswith(f" {anchor_ms}") for line in out)
    assert "diary_alcohol=true" in out[1] and out[1].startswith("night,subject=eve ")
    assert main(["note", "--subject", "eve", "--dry-run", "--tag", "bad,tag", "x"]) == 2
    assert "tag" in capsys.readouterr().err
