"""Sleep diary: short notes ("caffeine after 18:00") tagged with what is known to change leg twitching.

A note arrives from ``plm note`` or from MQTT (``plm/v1/<subject>/_diary``, for phone shortcuts or
Home Assistant) and is stored by :func:`detector.schema.diary_points` as a ``diary`` point plus
``diary_<tag>`` flags on the ``night`` point, so InfluxQL can compare nights with and without a tag.

Which night a note belongs to: people write notes in the evening before a night ("had wine") or
the morning after ("slept badly"). A note written between 12:00 local time on day D and 12:00 on
day D+1 belongs to the night that starts on the evening of day D. That night's *anchor* is 12:00
local time on day D (:func:`night_start_for`); the night summary point must be written at the same
anchor, because InfluxDB merges fields only into a point with the same series key and timestamp.

Tags are derived from keywords in the text (see :data:`KEYWORDS`) plus any given explicitly. A
keyword match is a convenience, not understanding: "no coffee today" still tags ``caffeine``; the
explicit ``--tag`` and the JSON ``tags`` list are there for precise entries.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from detector.schema import DIARY_TAGS

MAX_TEXT_CHARS = 2000
MAX_PAYLOAD_BYTES = 16_384
MAX_TAGS = 32
NIGHT_ANCHOR_HOUR = 12
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
    """One diary note. ``time_s``: when it was written (Unix s), None = when it is received."""

    text: str
    tags: tuple[str, ...] = field(default=())
    time_s: float | None = None


def normalise_tag(tag: str) -> str:
    """Lower case, spaces and dashes to ``_`` (the same normalisation as schema.diary_points)."""
    if not isinstance(tag, str):
        raise DiaryError(f"a tag must be a string, got {type(tag).__name__}")
    norm = tag.strip().lower().replace(" ", "_").replace("-", "_")
    if not _TAG_RE.fullmatch(norm):
        raise DiaryError(
            f"tag {tag!r} is not usable: use letters, digits, spaces, '-' or '_' (max 40), starting with a letter"
        )
    return norm


def tags_from_text(text: str) -> tuple[str, ...]:
    """Known tags whose keywords appear in ``text``, in the order of schema.DIARY_TAGS."""
    return tuple(tag for tag in DIARY_TAGS if _KEYWORD_RES[tag].search(text))


def make_note(text: str, tags: Iterable[str] = (), time_s: float | None = None) -> DiaryNote:
    """Validate a note and add the tags its text implies. Raises :class:`DiaryError`."""
    if not isinstance(text, str):
        raise DiaryError(f"the note text must be a string, got {type(text).__name__}")
    text = text.strip()
    if any((ord(ch) < 32 and ch not in "\n\t") or ord(ch) == 127 for ch in text):
        raise DiaryError("the note text contains a control character")
    if len(text) > MAX_TEXT_CHARS:
        raise DiaryError(f"the note text is {len(text)} characters long; at most {MAX_TEXT_CHARS} are kept")
    if isinstance(tags, str):
        raise DiaryError("tags must be a list of strings, not one string")
    explicit = [normalise_tag(t) for t in tags]
    if len(explicit) > MAX_TAGS:
        raise DiaryError(f"{len(explicit)} tags given; at most {MAX_TAGS}")
    if not text and not explicit:
        raise DiaryError("an empty note: give a text or at least one tag")
    if time_s is not None:
        if isinstance(time_s, bool) or not isinstance(time_s, int | float) or not math.isfinite(time_s):
            raise DiaryError(f"time must be Unix seconds or an ISO 8601 date-time, got {time_s!r}")
        if not 946_684_800 <= time_s <= 4_102_444_800:  # 2000-01-01 .. 2100-01-01
            raise DiaryError(f"time {time_s!r} is not between 2000 and 2100 (Unix seconds expected, not ms)")
    merged: list[str] = []
    for tag in (*explicit, *tags_from_text(text)):
        if tag not in merged:
            merged.append(tag)
    return DiaryNote(text, tuple(merged), None if time_s is None else float(time_s))


def _parse_time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise DiaryError(f"time {value!r} is not an ISO 8601 date-time (e.g. 2024-03-01T21:30:00+01:00)") from None
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()  # a naive time is the local time of the machine that stores it
        return parsed.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DiaryError(f"time must be Unix seconds or an ISO 8601 string, got {type(value).__name__}")
    return float(value)


def parse_diary_payload(payload: bytes) -> DiaryNote:
    """The MQTT diary message: JSON ``{"text": ..., "tags": [...], "time": optional}`` or plain UTF-8 text.

    ``time``: Unix seconds or ISO 8601. A JSON string (``"caffeine"``) is taken as text. Anything else
    raises :class:`DiaryError` naming what was wrong, so the service can count and log it.
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
    if stripped[0] not in '{["':
        return make_note(stripped)
    try:
        doc = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError) as exc:
        if stripped[0] == '"' or stripped[0] == "[":  # "quoted words" or [brackets] in plain prose
            return make_note(stripped)
        raise DiaryError(f"payload looks like JSON but is not valid: {getattr(exc, 'msg', exc)}") from None
    if isinstance(doc, str):
        return make_note(doc)
    if not isinstance(doc, dict):
        raise DiaryError(f"JSON payload must be an object with 'text'/'tags'/'time', got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"text", "tags", "time"})
    if unknown:
        raise DiaryError(f"unknown key(s) {', '.join(map(repr, unknown))}; expected 'text', 'tags', 'time'")
    body = doc.get("text", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise DiaryError(f"'text' must be a string, got {type(body).__name__}")
    tags = doc.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list):
        raise DiaryError(f"'tags' must be a list of strings, got {type(tags).__name__}")
    return make_note(body, tags, _parse_time(doc.get("time")))


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
    """Line protocol for a note: written at ``note.time_s`` if given, else when received."""
    from detector.schema import diary_points

    when = note.time_s if note.time_s is not None else received_s
    return diary_points(subject, night_start_for(when, tz), note.text, note.tags)


def merge_notes(earlier: DiaryNote | None, later: DiaryNote) -> DiaryNote:
    """Two notes of one night as one: texts joined, tags united.

    A night has one ``diary`` point and one set of ``diary_<tag>`` flags (a rewrite replaces every
    field it carries), so a second note must be merged with the first before it is written, or the
    first note's text and tags would be lost.
    """
    if earlier is None:
        return later
    texts = [t for t in (earlier.text, later.text) if t]
    if len(texts) == 2 and texts[1] in texts[0].split("\n"):
        texts = texts[:1]  # the same note delivered twice (MQTT QoS 1 may redeliver)
    tags = list(earlier.tags)
    tags += [t for t in later.tags if t not in tags]
    return DiaryNote("\n".join(texts), tuple(tags), later.time_s if later.time_s is not None else earlier.time_s)
