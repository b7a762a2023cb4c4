"""Sleep diary: short notes ("caffeine after 18:00") tagged with what is known to change leg twitching.

A note arrives from ``plm note`` or from MQTT (``plm/v1/<subject>/_diary``, for phone shortcuts or
Home Assistant) and is stored by :func:`detector.storage.schema.diary_points` as a ``diary`` point plus
``diary_<tag>`` flags on the ``night`` point, so InfluxQL can compare nights with and without a tag.

Which night a note belongs to: people write notes in the evening before a night ("had wine") or
the morning after ("slept badly"). A note written between 12:00 local time on day D and 12:00 on
day D+1 belongs to the night that starts on the evening of day D. That night's *anchor* is 12:00
local time on day D (:func:`night_start_for`); the night summary point must be written at the same
anchor, because InfluxDB merges fields only into a point with the same series key and timestamp.

Tags are derived from keywords in the text (see :data:`KEYWORDS`) plus any given explicitly. A
keyword match is a convenience, not understanding: "no coffee today" still tags ``caffeine``; the
explicit ``--tag`` and the JSON ``tags`` list are there for precise entries.

The payload comes from outside (the Home Assistant viewer account may publish it), so
:func:`parse_diary_payload` raises :class:`DiaryError` and nothing else for any bytes: an exception
of another type would stop the detector's worker. A night's diary is bounded (:func:`merge_notes`):
one sender, or a runaway phone shortcut, cannot grow the point that is rewritten on every note.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from detector.storage.schema import DIARY_TAGS

MAX_TEXT_CHARS = 2000
"""One note's text. Longer is refused whole (cutting a note could cut off what matters)."""
MAX_PAYLOAD_BYTES = 16_384
MAX_TAGS = 32
"""Explicit tags of one note."""
MAX_TAG_INPUT_CHARS = 64
"""A tag as sent, before normalising (which allows 40 characters): spaces around it are harmless."""
MAX_TIME_CHARS = 64
"""An ISO 8601 time string (``2024-03-01T21:30:00.123456+01:00`` is 32)."""
EARLIEST_S = 946_684_800  # 2000-01-01
LATEST_S = 4_102_444_800  # 2100-01-01
NIGHT_ANCHOR_HOUR = 12

MAX_NIGHT_NOTES = 20
"""Notes with a text kept per night (notes of tags alone are bounded by MAX_NIGHT_TAGS). People write one
to three (evening, morning); twenty is room for a diligent diarist and a wall against a flood."""
MAX_NIGHT_CHARS = 8200
"""Characters of a night's stored text, the marker line included: room for four notes of the longest kind
(4 x 2000 and their line breaks) and the marker. At most 4 bytes a character as UTF-8 line protocol (an
escaped character takes 2), so ~33 KB, under InfluxDB's 64 KiB string field; a rewrite is a few KB."""
MAX_NIGHT_TAGS = 64
"""Distinct tags per night (two fully tagged notes); each known tag is also a field of the night row."""
MARKER_RESERVE = 120
"""Characters kept free for the marker line, so kept notes + marker stay within MAX_NIGHT_CHARS."""
REFUSED_MEMORY = 64
"""How many of the latest refused notes are remembered (as digests), so that a redelivery of one is not
counted twice. QoS 1 redelivers within seconds, long before 64 other notes arrive."""
_TAG_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")

KEYWORDS: dict[str, tuple[str, ...]] = {
    "caffeine": ("caffeine", "coffee", "espresso", "cola", "energy drink", "black tea", "green tea"),
    "alcohol": ("alcohol", "wine", "beer", "whisky", "whiskey", "vodka", "gin", "cocktail", "drinks"),
    "exercise": ("exercise", "run", "ran", "running", "jog", "gym", "workout", "cycling", "swim", "hike"),
    "stretching": ("stretching", "stretch", "stretched", "yoga", "massage"),
    "late_meal": ("late meal", "late dinner", "dinner late", "ate late", "late snack", "dinner after", "dinner"),
    "medication": ("medication", "new med", "new meds", "started", "medicine", "pill", "dose", "prescription"),
    "poor_sleep": ("poor sleep", "slept badly", "bad sleep", "slept poorly", "insomnia", "woke up", "restless"),
}
"""Keyword (whole words, case-insensitive) -> tag. Every tag here is one of schema.DIARY_TAGS."""

_KEYWORD_RES = {
    tag: re.compile(r"\b(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words) + r")(?:e?s)?\b", re.I)
    for tag, words in KEYWORDS.items()
}


class DiaryError(ValueError):
    """A diary note that cannot be stored; the message says what was wrong with it."""


@dataclass(frozen=True)
class DiaryNote:
    """One diary note, or the notes of one night merged by :func:`merge_notes`.

    ``text``: the kept notes, each on its own line(s); ``time_s``: when it was written (Unix s), None =
    when it is received. The rest is a merged night's bookkeeping, so its bounds hold note after note:
    ``notes``, how many kept notes brought a text (a note of tags alone is bounded by the tag bound, and
    so a night read back from InfluxDB can be counted by its lines); ``not_kept``, notes refused because
    the night was full; ``refused``, digests of the latest refused notes, so that a redelivered one is not
    counted twice. What is written to InfluxDB is :attr:`stored_text`, which says what was not kept.
    """

    text: str
    tags: tuple[str, ...] = field(default=())
    time_s: float | None = None
    notes: int = 1
    not_kept: int = 0
    refused: tuple[str, ...] = field(default=(), repr=False)

    @property
    def stored_text(self) -> str:
        """``text``, and when notes were not kept a last line saying how many and why (:func:`not_kept_marker`):
        whoever reads the night on the dashboard or in the report must not take it for everything written."""
        if not self.not_kept:
            return self.text
        return "\n".join(t for t in (self.text, not_kept_marker(self.not_kept)) if t)


def not_kept_marker(count: int) -> str:
    """The marker line of a full night, e.g. ``[3 more notes not kept: at most 20 notes / ...]``."""
    return (
        f"[{count} more {'note' if count == 1 else 'notes'} not kept: at most {MAX_NIGHT_NOTES} notes / "
        f"{MAX_NIGHT_CHARS} characters / {MAX_NIGHT_TAGS} tags a night]"
    )


_MARKER_RE = re.compile(r"(?:\A|\n)\[(\d{1,18}) more notes? not kept: [^\]\n]*\]\Z")


def _show(value: object) -> str:
    """A value for an error message, short. ``repr`` of an integer past 4,300 digits raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def normalise_tag(tag: str) -> str:
    """Lower case, spaces and dashes to ``_`` (the same normalisation as schema.diary_points)."""
    if not isinstance(tag, str):
        raise DiaryError(f"a tag must be a string, got {type(tag).__name__}")
    norm = tag.strip().lower().replace(" ", "_").replace("-", "_")
    if not _TAG_RE.fullmatch(norm):
        raise DiaryError(
            f"tag {_show(tag)} is not usable: use letters, digits, spaces, '-' or '_' (max 40), starting with a letter"
        )
    return norm


def tags_from_text(text: str) -> tuple[str, ...]:
    """Known tags whose keywords appear in ``text``, in the order of schema.DIARY_TAGS."""
    return tuple(tag for tag in DIARY_TAGS if _KEYWORD_RES[tag].search(text))


def make_note(text: str, tags: Iterable[str] = (), time_s: float | None = None) -> DiaryNote:
    """Validate a note and add the tags its text implies. Raises :class:`DiaryError`, and nothing else,
    for any argument values: ``plm note`` and the MQTT payload both end here."""
    if not isinstance(text, str):
        raise DiaryError(f"the note text must be a string, got {type(text).__name__}")
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise DiaryError(
            f"the note text is {len(text)} characters long, more than the {MAX_TEXT_CHARS} a note may have: refused"
        )
    if any((ord(ch) < 32 and ch not in "\n\t") or ord(ch) == 127 for ch in text):
        raise DiaryError("the note text contains a control character")
    try:
        text.encode("utf-8")  # a lone surrogate ("\ud800" in JSON) would fail only when the line is sent
    except UnicodeEncodeError:
        raise DiaryError("the note text contains a lone surrogate (not valid Unicode)") from None
    if isinstance(tags, str):
        raise DiaryError("tags must be a list of strings, not one string")
    try:
        given = list(tags)
    except TypeError:
        raise DiaryError(f"tags must be a list of strings, got {type(tags).__name__}") from None
    if len(given) > MAX_TAGS:
        raise DiaryError(f"{len(given)} tags given; at most {MAX_TAGS}")
    explicit = [normalise_tag(t) for t in given]
    if not text and not explicit:
        raise DiaryError("an empty note: give a text or at least one tag")
    if time_s is not None:
        if isinstance(time_s, bool) or not isinstance(time_s, int | float):
            raise DiaryError(f"time must be Unix seconds or an ISO 8601 date-time, got {type(time_s).__name__}")
        if isinstance(time_s, float) and not math.isfinite(time_s):
            raise DiaryError(f"time must be a finite number of Unix seconds, got {time_s!r}")
        if not EARLIEST_S <= time_s <= LATEST_S:  # compared as given: float() of a huge int raises OverflowError
            raise DiaryError(f"time {_show(time_s)} is not between 2000 and 2100 (Unix seconds expected, not ms)")
    merged: list[str] = []
    for tag in (*explicit, *tags_from_text(text)):
        if tag not in merged:
            merged.append(tag)
    return DiaryNote(text, tuple(merged), None if time_s is None else float(time_s))


def _parse_time(value: object) -> float | None:
    """An ISO 8601 string as Unix seconds; numbers and None pass through (:func:`make_note` checks them)."""
    if not isinstance(value, str):
        return value  # type: ignore[return-value]
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DiaryError(f"time {_show(value)} is not an ISO 8601 date-time (e.g. 2024-03-01T21:30:00+01:00)") from None
    try:
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()  # a naive time is the local time of the machine that stores it
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):  # year 1 or 9999 shifted past the calendar's ends
        raise DiaryError(f"time {_show(value)} is not between 2000 and 2100") from None


@functools.cache
def _payload_model() -> Any:
    """The one strict schema of the JSON-object form ``{"text": ..., "tags": [...], "time": ...}``.

    Strict (no coercion: ``5`` is not a text, ``true`` is not a time), no unknown keys, no NaN or
    infinity, every string and the tag list bounded, a numeric time within 2000..2100. pydantic
    validates the raw text in its Rust parser, which also refuses integers past Python's int-string
    limit and deep nesting as invalid JSON -- ``json.loads`` raised a plain ValueError or RecursionError
    there, and ``math.isfinite`` of a 400-digit time an OverflowError, none of them a DiaryError.
    Built on first use: pydantic takes ~70 ms to import, which ``plm --help`` and the report need not pay.
    """
    from typing import Annotated

    from pydantic import ConfigDict, Field, create_model

    tag = Annotated[str, Field(max_length=MAX_TAG_INPUT_CHARS)]
    return create_model(
        "DiaryPayload",
        __config__=ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True),
        text=(Annotated[str, Field(max_length=MAX_PAYLOAD_BYTES)] | None, None),  # make_note: MAX_TEXT_CHARS
        tags=(Annotated[list[tag], Field(max_length=MAX_TAGS)] | None, None),
        time=(
            Annotated[int, Field(ge=EARLIEST_S, le=LATEST_S)]
            | Annotated[float, Field(ge=EARLIEST_S, le=LATEST_S)]
            | Annotated[str, Field(max_length=MAX_TIME_CHARS)]
            | None,
            None,
        ),
    )


def _json_type(value: object) -> str:
    for kind, name in ((bool, "boolean"), (int | float, "number"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _schema_error(exc: Any) -> DiaryError:
    """The first problem pydantic found, in the words of the earlier hand-written checks, without echoing
    a long value."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind, loc, value = first["type"], first["loc"], first.get("input")
    if kind == "json_invalid":
        return DiaryError(f"payload looks like JSON but is not valid: {first['msg'].removeprefix('Invalid JSON: ')}")
    unknown = [_show(str(e["loc"][0])) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        names = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        return DiaryError(f"unknown key(s) {names}; expected 'text', 'tags', 'time'")
    if not loc:
        return DiaryError(f"JSON payload must be an object with 'text'/'tags'/'time', got {_json_type(value)}")
    if loc[0] == "text":
        if kind == "string_too_long":
            return DiaryError(f"the note text is longer than {MAX_TEXT_CHARS} characters: refused")
        return DiaryError(f"'text' must be a string, got {_json_type(value)}")
    if loc[0] == "tags":
        if len(loc) == 1 and kind == "too_long":
            return DiaryError(f"{first.get('ctx', {}).get('actual_length', 'too many')} tags given; at most {MAX_TAGS}")
        if len(loc) == 1:
            return DiaryError(f"'tags' must be a list of strings, got {_json_type(value)}")
        if kind == "string_too_long":
            return DiaryError(f"tag {loc[1] + 1} is longer than {MAX_TAG_INPUT_CHARS} characters; a tag has at most 40")
        return DiaryError(f"a tag must be a string, got {_json_type(value)}")
    # time is a union: every branch complains; the range or finiteness complaint is the telling one
    kinds = {e["type"] for e in errors if e["loc"][:1] == ("time",)}
    if kinds & {"greater_than_equal", "less_than_equal"}:
        return DiaryError(f"time {_show(value)} is not between 2000 and 2100 (Unix seconds expected, not ms)")
    if "finite_number" in kinds:
        return DiaryError("time must be a finite number of Unix seconds, not NaN or infinity")
    if "string_too_long" in kinds:
        return DiaryError(f"time {_show(value)} is not an ISO 8601 date-time (e.g. 2024-03-01T21:30:00+01:00)")
    return DiaryError(f"time must be Unix seconds or an ISO 8601 string, got {_json_type(value)}")


def parse_diary_payload(payload: bytes) -> DiaryNote:
    """The MQTT diary message: JSON ``{"text": ..., "tags": [...], "time": optional}`` or plain UTF-8 text.

    ``time``: Unix seconds or ISO 8601. A JSON string (``"caffeine"``) is taken as text, and so is
    prose that merely starts with a quote or a bracket. Anything else raises :class:`DiaryError` naming
    what was wrong -- and for any bytes nothing but DiaryError, since the detector counts and logs that
    and anything else once stopped its worker (issue 16; the Home Assistant viewer may publish here).
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise DiaryError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DiaryError(f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiaryError(f"payload is not UTF-8 (byte {exc.start})") from None
    text = text.removeprefix("\ufeff")
    stripped = text.strip()
    if not stripped:
        raise DiaryError("empty payload: send a text or a JSON object with 'text' and/or 'tags'")
    if stripped[0] == "{":
        from pydantic import ValidationError

        try:
            doc = _payload_model().model_validate_json(stripped)
        except ValidationError as exc:
            raise _schema_error(exc) from None
        return make_note(doc.text or "", doc.tags or (), _parse_time(doc.time))
    if stripped[0] not in '["':
        return make_note(stripped)
    try:
        doc = json.loads(stripped)
    except (ValueError, RecursionError):  # "quoted words" or [brackets] in plain prose
        return make_note(stripped)
    if isinstance(doc, str):
        return make_note(doc)
    raise DiaryError(f"JSON payload must be an object with 'text'/'tags'/'time', got {_json_type(doc)}")


def zone_of(tz: str | dt.tzinfo | None) -> dt.tzinfo:
    if tz is None:
        local = dt.datetime.now().astimezone().tzinfo
        return local if local is not None else dt.UTC
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except Exception:  # ZoneInfoNotFoundError, ValueError for odd keys
            raise DiaryError(f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)") from None
    return tz


def night_start_for(time_s: float, tz: str | dt.tzinfo | None = None) -> float:
    """The anchor (Unix s) of the night a moment belongs to: the latest local 12:00 at or before it.

    Used for diary notes *and* night summary points, so that both land on one InfluxDB point.
    ``tz`` defaults to the machine's local zone (an IANA name or tzinfo may be given).
    """
    zone = zone_of(tz)
    local = dt.datetime.fromtimestamp(time_s, zone)
    anchor_day = local.date() if local.hour >= NIGHT_ANCHOR_HOUR else local.date() - dt.timedelta(days=1)
    anchor = dt.datetime.combine(anchor_day, dt.time(NIGHT_ANCHOR_HOUR), zone)
    return anchor.timestamp()


def night_date(time_s: float, tz: str | dt.tzinfo | None = None) -> dt.date:
    """The calendar date of the evening a night starts on (the night of 1-2 March is 1 March)."""
    return dt.datetime.fromtimestamp(night_start_for(time_s, tz), zone_of(tz)).date()


def anchor_of_date(day: dt.date, tz: str | dt.tzinfo | None = None) -> float:
    """The anchor of the night starting on the evening of ``day``."""
    return dt.datetime.combine(day, dt.time(NIGHT_ANCHOR_HOUR), zone_of(tz)).timestamp()


def diary_lines(subject: str, note: DiaryNote, received_s: float, tz: str | dt.tzinfo | None = None) -> list[str]:
    """Line protocol for a note (its :attr:`~DiaryNote.stored_text`): written at ``note.time_s`` if given,
    else when received."""
    from detector.storage.schema import diary_points

    when = note.time_s if note.time_s is not None else received_s
    return diary_points(subject, night_start_for(when, tz), note.stored_text, note.tags)


def _digest(note: DiaryNote) -> str:
    return hashlib.blake2b(
        "\0".join((note.text, *note.tags)).encode("utf-8", "surrogatepass"), digest_size=8
    ).hexdigest()


def merge_notes(earlier: DiaryNote | None, later: DiaryNote) -> DiaryNote:
    """The night so far (``earlier``: a previous result, or :func:`read_back` of the stored note) and one
    new note (``later``) as one note, within the night's bounds.

    A night has one ``diary`` point and one set of ``diary_<tag>`` flags (a rewrite replaces every
    field it carries), so a second note must be merged with the first before it is written, or the
    first note's text and tags would be lost. Texts are joined with line breaks, tags united.

    Bounds: at most :data:`MAX_NIGHT_NOTES` notes, :data:`MAX_NIGHT_TAGS` tags and :data:`MAX_NIGHT_CHARS`
    characters of stored text a night, so one sender (a runaway phone shortcut, or whoever holds the
    viewer password) cannot grow the point that is rewritten on every note. The *first* notes are kept:
    what was written stays as written (yesterday's dashboard and report still agree), the evening's notes
    ("had wine") come first and are the ones that can explain a night, and a flood cannot push the real
    notes out. A note is kept whole or not at all -- tags included -- since a cut note can lose the word
    that matters. Once a note does not fit the night is full and later notes are not kept either, even
    short ones: "the first N" stays true and a user can predict it. What was not kept is said:
    ``not_kept`` counts the refused notes and :attr:`DiaryNote.stored_text` ends with a marker such as
    "[3 more notes not kept: at most 20 notes / 8200 characters / 64 tags a night]".

    A note that adds nothing -- its text already there as whole lines, its tags already set -- returns
    ``earlier`` unchanged: MQTT QoS 1 may deliver a note twice, and the same note twice says nothing new.
    A refused note is remembered by digest (the latest :data:`REFUSED_MEMORY`), so a redelivery of it
    is not counted again.
    """
    if earlier is None:
        return replace(later, notes=int(bool(later.text)))
    new_text = bool(later.text) and f"\n{later.text}\n" not in f"\n{earlier.text}\n"
    new_tags = tuple(t for t in later.tags if t not in earlier.tags)
    if not new_text and not new_tags:
        return earlier
    text = "\n".join(t for t in (earlier.text, later.text if new_text else "") if t)
    if (
        not earlier.not_kept
        and (not new_text or earlier.notes < MAX_NIGHT_NOTES)
        and len(text) <= MAX_NIGHT_CHARS - MARKER_RESERVE
        and len(earlier.tags) + len(new_tags) <= MAX_NIGHT_TAGS
    ):
        time_s = later.time_s if later.time_s is not None else earlier.time_s
        notes = earlier.notes + int(new_text)
        return replace(earlier, text=text, tags=earlier.tags + new_tags, time_s=time_s, notes=notes)
    digest = _digest(later)
    if digest in earlier.refused:
        return earlier
    return replace(earlier, not_kept=earlier.not_kept + 1, refused=(*earlier.refused, digest)[-REFUSED_MEMORY:])


def read_back(stored: DiaryNote) -> DiaryNote:
    """A night's note as read from InfluxDB (``text`` = the stored text), ready for :func:`merge_notes`.

    ``plm note`` merges into what is stored, not into the detector's memory, so the bookkeeping is
    recovered from the text: the marker line gives ``not_kept`` back, and every non-empty line counts as
    a note. A note with line breaks cannot be told from several notes, so this may count more notes than
    were kept -- never fewer (every counted note brought a line), so the bound holds. Refused digests are
    not stored: a refused note sent again through ``plm note`` is counted again.
    """
    match = _MARKER_RE.search(stored.text)
    body = stored.text[: match.start()] if match else stored.text
    lines = sum(1 for line in body.split("\n") if line.strip())
    return DiaryNote(
        body,
        tuple(stored.tags),
        stored.time_s,
        notes=lines,
        not_kept=int(match.group(1)) if match else 0,
    )
