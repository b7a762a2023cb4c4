"""Hostile ``_diary`` payloads (issue 16): the Home Assistant viewer account may publish to
``plm/v1/<subject>/_diary``, and the detector catches only :class:`DiaryError` from
``parse_diary_payload``; any other exception stopped its worker. So for any bytes the parser returns a
usable note or raises DiaryError -- never anything else -- and a note it returns can be stored.

The payloads are built as JSON *text*, not with ``json.dumps``, so they can hold what Python's encoder
cannot write: integers past the int-string limit (4,300 digits), NaN/Infinity literals, numbers beyond
the float range, raw control characters, lone surrogates, duplicate keys and deep nesting.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detector.storage import schema
from detector.storage.diary import (
    EARLIEST_S,
    LATEST_S,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    DiaryError,
    DiaryNote,
    diary_lines,
    parse_diary_payload,
)

TAG_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check(payload: bytes) -> DiaryNote | None:
    """The contract: a DiaryNote whose every field is usable as typed, or a DiaryError with a short
    message (it is logged; it must not echo a 16 KB value). Anything else propagates and fails."""
    try:
        note = parse_diary_payload(payload)
    except DiaryError as exc:
        message = str(exc)
        assert message and len(message) < 500 and "\n" not in message, message[:500]
        return None
    assert type(note) is DiaryNote
    assert isinstance(note.text, str) and len(note.text) <= MAX_TEXT_CHARS
    assert note.text == note.text.strip()
    assert not any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in note.text)
    note.text.encode("utf-8")  # no lone surrogate: the sink encodes every line
    assert note.text or note.tags
    assert all(isinstance(t, str) and TAG_RE.fullmatch(t) for t in note.tags)
    assert len(set(note.tags)) == len(note.tags) <= MAX_TAGS + len(schema.DIARY_TAGS)
    assert note.time_s is None or (type(note.time_s) is float and EARLIEST_S <= note.time_s <= LATEST_S)
    assert (note.notes, note.not_kept) == (1, 0)
    for line in diary_lines("alice", note, 1_709_330_000.0):
        schema.split_line(line)
        line.encode("utf-8")
    return note


# ----------------------------------------------------------------------------------- JSON text pieces

huge_int = st.integers(min_value=4_290, max_value=6_000).map(lambda n: "9" * n)  # around the 4,300-digit limit
numbers = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),  # past float range: float() overflows
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=EARLIEST_S - 10, max_value=LATEST_S + 10).map(repr),  # around the accepted range
    st.integers(min_value=EARLIEST_S - 10, max_value=LATEST_S + 10).map(str),
    huge_int,
    huge_int.map(lambda s: "-" + s),
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "4.9e-324", "1E+999", "-0", "0.0e0",
         "946684800", "4102444800", "4102444800.0000001", "946684799.9999999", "1709330000000", "01", "1.", ".5",
         "+1", "0x10", "1e", "--1"]
    ),
)  # fmt: skip
unicode_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=40)
strings = st.one_of(
    unicode_text.map(json.dumps),  # control characters and lone surrogates, escaped (\u0000, \ud800)
    unicode_text.filter(lambda s: '"' not in s and "\\" not in s).map(lambda s: f'"{s}"'),  # raw, unescaped
    st.integers(min_value=0, max_value=17_000).map(lambda n: json.dumps("a" * n)),  # long; > payload limit too
    st.integers(min_value=1_990, max_value=2_010).map(lambda n: json.dumps(" " + "b" * n + " ")),  # text limit
    st.from_regex(r"[A-Za-z][A-Za-z0-9 _-]{0,70}", fullmatch=True).map(json.dumps),  # tag-like, some too long
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.none() | st.integers(-1439, 1439).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
    ).map(lambda d: json.dumps(d.isoformat())),
    st.sampled_from(
        ["0001-01-01T00:00:00", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999",
         "9999-12-31T23:59:59-23:59", "2024-03-01T21:30:00+25:00", "2024-02-30", "2024-03-01T21:30:00Z", "", " ",
         "Z", "1709330000", "x" * 65]
    ).map(json.dumps),
)  # fmt: skip
deep = st.integers(min_value=1, max_value=3_000).flatmap(
    lambda d: st.sampled_from(["[" * d + "]" * d, '{"a":' * d + "1" + "}" * d, "[" * d])
)
scalars = numbers | strings | deep | st.sampled_from(["true", "false", "null", "[]", "{}", ""])
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=5).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(st.tuples(strings, kids), max_size=3).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}")
    ),
    max_leaves=10,
)
tag_lists = st.lists(strings | values, max_size=40).map(lambda xs: "[" + ",".join(xs) + "]")
fields = st.one_of(
    st.tuples(st.just('"text"'), strings | values),
    st.tuples(st.just('"tags"'), tag_lists | values),
    st.tuples(st.just('"time"'), numbers | strings | values),
    st.tuples(strings, values),  # unknown keys, any key text
)
hostile_objects = st.lists(fields, max_size=5).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}")
usable_tags = st.lists(st.from_regex(r" ?[A-Za-z][A-Za-z0-9 _-]{0,38}", fullmatch=True), max_size=MAX_TAGS + 2)
plausible_objects = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(max_size=60) | st.sampled_from(["coffee", "wine\nslept badly", None]),
        "tags": usable_tags | st.none(),
        "time": st.floats(EARLIEST_S - 1e3, LATEST_S + 1e3) | st.integers(EARLIEST_S - 9, LATEST_S + 9) | st.none(),
    },
).map(json.dumps)  # mostly valid, so the accepting path is exercised as well as the refusing one
objects = hostile_objects | plausible_objects
wrapped = st.tuples(st.sampled_from(["", " ", "\ufeff", "\n\t"]), objects | values, st.sampled_from(["", " ", "x"]))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(wrapped)
@example(("", '{"text": "x", "time": ' + "9" * 400 + "}", ""))  # float() of it: OverflowError
@example(("", '{"text": "x", "time": ' + "9" * 4_400 + "}", ""))  # json.loads: plain ValueError
@example(("", '{"text": "x", "tags": [' + "9" * 4_400 + "]}", ""))
@example(("", '"\\ud800"', ""))  # a lone surrogate as a JSON string: UnicodeEncodeError in the sink
@example(("", '{"text": "x", "time": "0001-01-01T00:00:00"}', ""))  # astimezone() past year 1
def test_structured_hostile_json_gives_a_note_or_a_diary_error(parts: tuple[str, str, str]) -> None:
    head, body, tail = parts
    check((head + body + tail).encode("utf-8", "surrogatepass"))


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"", b"{", b"[", b'"', b'{"text": "']), st.integers(0, 16_500))
def test_any_bytes_give_a_note_or_a_diary_error(payload: bytes, prefix: bytes, pad: int) -> None:
    check(prefix + payload)
    check(prefix + payload + b"a" * pad)  # up to and past the 16 KiB payload limit


@settings(max_examples=500, deadline=None)
@given(objects, st.data())
def test_mutated_json_gives_a_note_or_a_diary_error(doc: str, data: st.DataObject) -> None:
    """Byte flips, cuts and insertions in an otherwise well-formed object."""
    raw = bytearray(doc.encode("utf-8", "surrogatepass"))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(raw):
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.sampled_from([b"{", b"[", b'"', b"\\", b"9" * 4_400, b"NaN", b"\x00", b"\xff"]))
    check(bytes(raw))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"text": "x", "time": 1e400}', "finite"),
        (b'{"text": "x", "time": NaN}', "finite"),
        (b'{"text": "x", "time": -Infinity}', "finite"),
        (b'{"text": "x", "time": ' + b"9" * 400 + b"}", "not between 2000 and 2100"),
        (b'{"text": "x", "time": ' + b"9" * 4_400 + b"}", "not valid"),
        (b'{"text": "x", "time": true}', "Unix seconds or an ISO 8601"),
        (b'{"text": "x", "time": [1709330000]}', "Unix seconds or an ISO 8601"),
        (b'{"text": "x", "time": "0001-01-01T00:00:00"}', "not between 2000 and 2100"),
        (b'{"text": "x", "time": "' + b"1" * 100 + b'"}', "ISO 8601"),
        (b'{"tags": [' + b'"a",' * 40 + b'"a"]}', "41 tags given; at most 32"),
        (b'{"tags": ["' + b"a" * 100 + b'"]}', "a tag has at most 40"),
        (b'{"tags": [["caffeine"]]}', "a tag must be a string"),
        (b'{"text": ' + b"[" * 3_000 + b"]" * 3_000 + b"}", "not valid"),
        (b'{"text": "x", "' + b"k" * 5_000 + b'": 1}', "unknown key"),
        (b'"\\ud800"', "surrogate"),
        (b'{"text": "' + b"a" * 2_001 + b'"}', "refused"),
    ],
)
def test_hostile_values_are_named(payload: bytes, message: str) -> None:
    with pytest.raises(DiaryError, match=message) as info:
        parse_diary_payload(payload)
    assert type(info.value) is DiaryError and len(str(info.value)) < 200


def test_a_long_note_is_refused_not_cut() -> None:
    """The old message said "at most 2000 are kept" although nothing was: it says refused now."""
    with pytest.raises(DiaryError) as info:
        parse_diary_payload(("z" * (MAX_TEXT_CHARS + 1)).encode())
    assert "refused" in str(info.value) and "kept" not in str(info.value)
    assert check(("z" * MAX_TEXT_CHARS).encode()).text == "z" * MAX_TEXT_CHARS
