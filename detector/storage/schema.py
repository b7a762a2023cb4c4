"""InfluxDB schema of the detector: pure builders that turn scorer output into line-protocol lines.

Every measurement, tag and field is documented in docs/influx-schema.md; this module is its single
implementation. Why line-protocol strings rather than client objects: the durable outbox stores
text, both write paths (v1 ``/write`` and v2 ``/api/v2/write``) send text, and a string is easy to
test and to compare.

Rules the builders enforce, because InfluxDB enforces them later and silently or loudly:

- Tags are only low-cardinality labels (subject, side, kind, instance). Each measurement has a
  fixed tag set, so a point rewritten later (a movement whose PLM flag flips, a night summary that
  updates live) lands on the same series key and timestamp and overwrites itself.
- A field always has one type (InfluxDB 1.x rejects a type change with HTTP 400): counts are
  integers, indices and durations floats, whatever Python type the caller passes.
- ``None`` means "unknown" and the field is left out; NaN and infinities are refused.
- Timestamps are integer milliseconds since the Unix epoch (writes use ``precision=ms``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

MOVEMENT = "movement"
LEG_STATE = "leg_state"
SERIES = "plm_series"
ACTIVITY = "activity"
HOURLY = "hourly"
NIGHT = "night"
DIARY = "diary"
SENSOR_STATUS = "sensor_status"
DETECTOR_HEALTH = "detector_health"
NONWEAR = "nonwear"
"""A span when a leg's sensor was off the ankle (detector.scoring.nonwear), at its start."""
NIGHT_WEAR_FIELDS = ("nonwear_h", "worn_fraction", "wear_insufficient")
"""Fields :func:`night_wear_point` adds to the ``night`` point (same series key and time)."""

MOVEMENT_SIDES = ("left", "right", "bilateral")
SENSOR_SIDES = ("left", "right")
MOVEMENT_KINDS = ("lm", "long", "twitch")
"""``lm``: 0.5-10 s (15 s bilateral); ``long``: longer; ``twitch``: shorter than the minimum LM."""

DIARY_TAGS = ("caffeine", "alcohol", "exercise", "stretching", "late_meal", "medication", "poor_sleep")
"""Known diary tags: each is a boolean field ``diary_<tag>`` that is always written (true or false)."""

NIGHT_FLOAT_FIELDS = (
    "plm_index",
    "plms_index",
    "plmw_index",
    "periodicity_index",
    "time_in_bed_h",
    "sleep_h",
    "missing_fraction",
)
NIGHT_INT_FIELDS = (
    "lm_count",
    "plm_count",
    "clm_count",
    "series_count",
    "twitch_count",
    "long_movement_count",
)
HOURLY_INT_FIELDS = ("lm_count", "clm_count", "plm_count", "long_movement_count", "twitch_count")
HOURLY_FLOAT_FIELDS = ("plm_index", "recorded_h", "missing_fraction")

_FIELD_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")


class Float(float):
    """Marks a value that must be written as a float field even when it is integral."""


class Int(int):
    """Marks a value that must be written as an integer field (``123i``)."""


# ------------------------------------------------------------------ escaping (line-protocol spec)


def _check_identifier(value: str, what: str) -> None:
    if not isinstance(value, str) or value == "":
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if "\\" in value:
        # InfluxDB versions disagree on backslash escapes in names and tags (1.x keeps "\\" as two
        # characters, a trailing one escapes the separator): refuse instead of storing a surprise.
        raise ValueError(f"{what} {value!r} contains a backslash, which line protocol cannot carry unambiguously")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{what} {value!r} contains a control character (e.g. a line break)")


def escape_measurement(name: str) -> str:
    """Escape a measurement name: commas and spaces get a backslash."""
    _check_identifier(name, "measurement")
    if name.startswith("#"):
        raise ValueError(f"measurement {name!r} would be read as a comment line")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(value: str, what: str = "tag key/value") -> str:
    """Escape a tag key, tag value or field key: commas, equals signs and spaces get a backslash."""
    _check_identifier(value, what)
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def escape_string_field(value: str) -> str:
    """Quote a string field value: backslashes and double quotes are escaped.

    Line protocol cannot carry a line break inside a value, so CR, LF and CRLF are stored as the two
    characters ``\\n`` (readable in Grafana, and a line stays one line).
    """
    if not isinstance(value, str):
        raise ValueError(f"string field value must be a str, got {type(value).__name__}")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _LINE_BREAKS.sub(r"\\\\n", escaped) + '"'


def stored_string(value: str) -> str:
    """What InfluxDB returns for a string field written with :func:`escape_string_field`."""
    return _LINE_BREAKS.sub(r"\\n", value)


def _format_field(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Int):
        return f"{int(value)}i"
    if isinstance(value, Float | float):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"field {key!r} must be a finite number, got {value!r}")
        return repr(number)
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, str):
        return escape_string_field(value)
    raise ValueError(f"field {key!r}: unsupported value type {type(value).__name__}")


def to_ms(seconds: float) -> int:
    """Seconds since the epoch (float) to integer milliseconds, refusing NaN and infinities."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ValueError(f"timestamp must be a finite number of seconds, got {seconds!r}")
    return round(seconds * 1000)


_SERIES_KEY = re.compile(r"(?:[^ \\]|\\.)*")  # up to the first space no backslash escapes


def point_key(text: str) -> tuple[str, str]:
    """(series key, timestamp) of one of our lines: what InfluxDB keeps one point per (a later line with the same
    key replaces the point's fields). Every line we build ends with its timestamp."""
    match = _SERIES_KEY.match(text)
    assert match is not None  # the pattern matches the empty string at least
    return match.group(), text.rsplit(" ", 1)[-1]


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], time_ms: int) -> str:
    """One line of line protocol. Tags are sorted (InfluxDB's canonical order); ``None`` fields are left out."""
    present = {k: v for k, v in fields.items() if v is not None}
    if not present:
        raise ValueError(f"{measurement}: a point needs at least one field")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise ValueError(f"timestamp must be integer milliseconds, got {time_ms!r}")
    head = escape_measurement(measurement)
    for key in sorted(tags):
        head += f",{escape_key(key, 'tag key')}={escape_key(tags[key], f'tag {key!r} value')}"
    body = ",".join(f"{escape_key(k, 'field key')}={_format_field(k, v)}" for k, v in present.items())
    return f"{head} {body} {time_ms}"


def series_key(line_text: str) -> str:
    """The identity of a point for overwrite purposes: series key, field-key set and timestamp.

    Two pending lines with the same identity are interchangeable in the outbox: the newer one
    overwrites every field of the older one, so the older one need not be sent at all.
    """
    head, fields, timestamp = split_line(line_text)
    return f"{head} {','.join(sorted(key for key, _ in fields))} {timestamp}"


def split_line(text: str) -> tuple[str, list[tuple[str, str]], str]:
    """Split a line like InfluxDB's scanner: (measurement+tags, [(field key, raw value)], timestamp).

    Spaces, commas and equals signs count unless escaped with a backslash; a double quote opens a
    string only at the start of a field *value* (in names and tags it is an ordinary character).
    """
    head_end = _find_unescaped(text, " ", 0)
    if head_end <= 0:
        raise ValueError(f"not a line-protocol line: {text[:200]!r}")
    fields: list[tuple[str, str]] = []
    key_start = i = head_end + 1
    value_start = -1
    escaped = quoted = False
    while i < len(text):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == "=" and value_start < 0:
            value_start = i + 1
        elif ch == '"' and i == value_start:
            quoted = True
        elif ch in ", ":
            if value_start < 0:
                raise ValueError(f"field without a value in line: {text[:200]!r}")
            fields.append((text[key_start : value_start - 1], text[value_start:i]))
            key_start, value_start = i + 1, -1
            if ch == " ":
                break
        i += 1
    else:
        raise ValueError(f"line has no timestamp: {text[:200]!r}")
    timestamp = text[i + 1 :]
    if not timestamp or not fields or any(not k or not v for k, v in fields):
        raise ValueError(f"not a line with fields and a timestamp: {text[:200]!r}")
    return text[:head_end], fields, timestamp


def _find_unescaped(text: str, sep: str, start: int) -> int:
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            return i
    return -1


# ------------------------------------------------------------------ helpers for the builders


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _opt_float(value: Any, what: str) -> Float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return Float(value)


def _opt_int(value: Any, what: str) -> Int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return Int(int(value))


def _get(source: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a mapping or an object (dataclass, ScoredMovement, ...)."""
    if isinstance(source, Mapping):
        return source.get(name, default)
    return getattr(source, name, default)


# ------------------------------------------------------------------ point builders


def movement_point(
    subject: str,
    onset_s: float,
    duration_s: float,
    side: str,
    kind: str,
    plm: bool,
    imi_s: float | None = None,
    series_id: int | None = None,
    candidate: bool | None = None,
    parts: int | None = None,
) -> str:
    """One leg movement, at its onset. Rewritten (same tags, same time) when its PLM flag changes,
    so ``side`` and ``kind`` must be final when the movement is first written."""
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    onset_ms = to_ms(onset_s)
    end_ms = to_ms(onset_s + duration_s)
    fields: dict[str, Any] = {
        "duration_s": Float(duration_s),
        "end_ms": Int(end_ms),
        "plm": bool(plm),
        "plm_n": Int(1 if plm else 0),
        "candidate": None if candidate is None else bool(candidate),
        "imi_s": _opt_float(imi_s, "imi_s"),
        "series_id": _opt_int(series_id, "series_id"),
        "parts": _opt_int(parts, "parts"),
    }
    tags = {
        "subject": subject,
        "side": _choice(side, MOVEMENT_SIDES, "side"),
        "kind": _choice(kind, MOVEMENT_KINDS, "kind"),
    }
    return line(MOVEMENT, tags, fields, onset_ms)


def movement_from(subject: str, movement: Any) -> str:
    """:func:`movement_point` from a ``plm.rules.ScoredMovement`` or its ``to_dict()``."""
    return movement_point(
        subject,
        _get(movement, "onset"),
        _get(movement, "duration"),
        _get(movement, "side"),
        _get(movement, "kind"),
        bool(_get(movement, "plm", False)),
        _get(movement, "imi"),
        _get(movement, "series_id"),
        _get(movement, "candidate"),
        _get(movement, "parts"),
    )


def leg_state_points(subject: str, onset_s: float, duration_s: float, side: str, kind: str, plm: bool) -> list[str]:
    """Two points for Grafana's state timeline: the state at onset (``plm``, ``lm``, ``long`` or
    ``twitch``) and ``rest`` at the end (a state lasts until the next value). Rewritten with the
    movement when its PLM flag changes."""
    _choice(side, MOVEMENT_SIDES, "side")
    state = "plm" if plm else _choice(kind, MOVEMENT_KINDS, "kind")
    tags = {"subject": subject, "side": side}
    code = {"rest": 0, "twitch": 1, "lm": 2, "long": 3, "plm": 4}
    return [
        line(LEG_STATE, tags, {"state": state, "code": Int(code[state])}, to_ms(onset_s)),
        line(LEG_STATE, tags, {"state": "rest", "code": Int(0)}, to_ms(onset_s + duration_s)),
    ]


def series_point(
    subject: str,
    series_id: int,
    start_s: float,
    end_s: float,
    count: int,
    mean_imi_s: float | None = None,
    final: bool | None = None,
) -> str:
    """One PLM series, at the onset of its first movement; rewritten as it grows.
    ``end_ms`` is the TimeEnd column of a Grafana region annotation."""
    if end_s < start_s:
        raise ValueError(f"series end {end_s!r} is before its start {start_s!r}")
    fields = {
        "series_id": _opt_int(series_id, "series_id"),
        "end_ms": Int(to_ms(end_s)),
        "duration_s": Float(end_s - start_s),
        "count": _opt_int(count, "count"),
        "mean_imi_s": _opt_float(mean_imi_s, "mean_imi_s"),
        "final": final,
    }
    return line(SERIES, {"subject": subject}, fields, to_ms(start_s))


def series_from(subject: str, series: Any, mean_imi_s: float | None = None, final: bool | None = None) -> str:
    """:func:`series_point` from a ``plm.rules.Series`` or its ``to_dict()``."""
    return series_point(
        subject,
        _get(series, "series_id"),
        _get(series, "start"),
        _get(series, "end"),
        _get(series, "count"),
        mean_imi_s,
        final,
    )


def activity_point(
    subject: str,
    side: str,
    minute_start_s: float,
    *,
    activity_g: float | None = None,
    active_s: float | None = None,
    movement_count: int | None = None,
    posture: str | None = None,
    tilt_deg: float | None = None,
    missing_fraction: float | None = None,
) -> str:
    """Activity and posture of one leg during one minute, at the minute's start.

    ``activity_g``: mean dynamic acceleration (gravity removed); ``active_s``: seconds inside
    movements; ``posture``: a short label such as ``supine``/``prone``/``left``/``right``/``upright``."""
    fields = {
        "activity_g": _opt_float(activity_g, "activity_g"),
        "active_s": _opt_float(active_s, "active_s"),
        "movement_count": _opt_int(movement_count, "movement_count"),
        "posture": posture,
        "tilt_deg": _opt_float(tilt_deg, "tilt_deg"),
        "missing_fraction": _opt_float(missing_fraction, "missing_fraction"),
    }
    return line(
        ACTIVITY, {"subject": subject, "side": _choice(side, SENSOR_SIDES, "side")}, fields, to_ms(minute_start_s)
    )


def hourly_point(subject: str, hour_start_s: float, counts: Mapping[str, Any]) -> str:
    """Counts of one clock hour, at the hour's start; rewritten while the hour is open.
    Keys: see :data:`HOURLY_INT_FIELDS` and :data:`HOURLY_FLOAT_FIELDS`."""
    return line(
        HOURLY,
        {"subject": subject},
        _typed(counts, HOURLY_INT_FIELDS, HOURLY_FLOAT_FIELDS, "hourly"),
        to_ms(hour_start_s),
    )


def night_point(subject: str, night_start_s: float, summary: Mapping[str, Any], final: bool) -> str:
    """The night summary: one point per subject per night at the night's start, rewritten as it updates.

    Optional extra keys: ``end_s`` (written as ``end_ms``), ``rules`` (rule set name)."""
    fields = _typed(summary, NIGHT_INT_FIELDS, NIGHT_FLOAT_FIELDS, "night", extra=("end_s", "rules"))
    if summary.get("end_s") is not None:
        fields["end_ms"] = Int(to_ms(summary["end_s"]))
    if summary.get("rules") is not None:
        fields["rules"] = str(summary["rules"])
    fields["final"] = bool(final)
    return line(NIGHT, {"subject": subject}, fields, to_ms(night_start_s))


def nonwear_point(subject: str, side: str, start_s: float, end_s: float, final: bool) -> str:
    """One span of one leg's sensor off the ankle, at its start; rewritten while it grows (live, the span of a
    sensor still on the table ends at its latest sample). ``end_ms`` is the TimeEnd of a Grafana region."""
    if end_s < start_s:
        raise ValueError(f"non-wear end {end_s!r} is before its start {start_s!r}")
    fields = {"end_ms": Int(to_ms(end_s)), "duration_s": Float(end_s - start_s), "final": bool(final)}
    return line(NONWEAR, {"subject": subject, "side": _choice(side, SENSOR_SIDES, "side")}, fields, to_ms(start_s))


def night_wear_point(
    subject: str, night_start_s: float, nonwear_h: float, worn_fraction: float | None, wear_insufficient: bool
) -> str:
    """Wear of the night on the ``night`` point (same series key and time as :func:`night_point`, so InfluxDB
    keeps one row): hours with no sensor on the ankle, the worn fraction, and whether too little was worn for
    an index (then the night point carries no ``plm_index``: read ``wear_insufficient`` first, because a value
    written live before the sensor came off stays on the point)."""
    fields = {
        "nonwear_h": Float(nonwear_h),
        "worn_fraction": _opt_float(worn_fraction, "worn_fraction"),
        "wear_insufficient": bool(wear_insufficient),
    }
    return line(NIGHT, {"subject": subject}, fields, to_ms(night_start_s))


def diary_points(subject: str, night_start_s: float, text: str = "", tags: Iterable[str] = ()) -> list[str]:
    """A diary entry for the night starting at ``night_start_s``: two lines.

    1. ``diary``: the free text, the tag list as a comma list, and one boolean per known tag.
    2. the same booleans as ``diary_<tag>`` fields on the ``night`` point (same series key and time):
       InfluxDB keeps the union of fields written to one point, so the night summary and its diary
       flags live on one row and ``WHERE diary_caffeine = true`` compares nights in InfluxQL, which
       has no joins. Known tags not given are written as false, so "without" is queryable too.
    """
    cleaned = []
    for tag in tags:
        norm = str(tag).strip().lower().replace(" ", "_").replace("-", "_")
        if norm and norm not in cleaned:
            cleaned.append(norm)
    flags = {f"diary_{known}": known in cleaned for known in DIARY_TAGS}
    ts = to_ms(night_start_s)
    diary_fields: dict[str, Any] = {"text": text, "tags": ",".join(cleaned), **flags}
    return [line(DIARY, {"subject": subject}, diary_fields, ts), line(NIGHT, {"subject": subject}, flags, ts)]


def diary_point(subject: str, night_start_s: float, text: str = "", tags: Iterable[str] = ()) -> str:
    """Only the ``diary`` line of :func:`diary_points` (prefer that one: it also flags the night)."""
    return diary_points(subject, night_start_s, text, tags)[0]


def sensor_status_point(
    subject: str,
    side: str,
    time_s: float,
    *,
    state: str,
    sensor_id: str | None = None,
    battery_pct: float | None = None,
    rssi_dbm: float | None = None,
    rate_hz: float | None = None,
    dropped_samples: int | None = None,
    late_batches: int | None = None,
) -> str:
    """Status of one sensor: ``state`` is ``online``, ``offline`` or ``lost`` (the MQTT will)."""
    fields = {
        "state": state,
        "online": state == "online",
        "sensor_id": sensor_id,
        "battery_pct": _opt_float(battery_pct, "battery_pct"),
        "rssi_dbm": _opt_float(rssi_dbm, "rssi_dbm"),
        "rate_hz": _opt_float(rate_hz, "rate_hz"),
        "dropped_samples": _opt_int(dropped_samples, "dropped_samples"),
        "late_batches": _opt_int(late_batches, "late_batches"),
    }
    tags = {"subject": subject, "side": _choice(side, SENSOR_SIDES, "side")}
    return line(SENSOR_STATUS, tags, fields, to_ms(time_s))


def detector_health_point(
    instance: str,
    time_s: float,
    *,
    outbox_depth: int | None = None,
    late_batches: int | None = None,
    bad_payloads: Mapping[str, int] | None = None,
    dead_letters: int | None = None,
    sent_points: int | None = None,
    write_retries: int | None = None,
    messages_dead_lettered: int | None = None,
) -> str:
    """Health of one detector instance. ``bad_payloads`` maps a reason (``decode``, ``schema``,
    ``clock``, ...) to a running count, written as ``bad_<reason>`` integer fields. ``dead_letters``: points
    InfluxDB refused (the outbox's); ``messages_dead_lettered``: MQTT messages (or one subject's scoring step)
    that raised while being applied and were set aside in the journal's dead-letter table."""
    fields: dict[str, Any] = {
        "outbox_depth": _opt_int(outbox_depth, "outbox_depth"),
        "late_batches": _opt_int(late_batches, "late_batches"),
        "dead_letters": _opt_int(dead_letters, "dead_letters"),
        "messages_dead_lettered": _opt_int(messages_dead_lettered, "messages_dead_lettered"),
        "sent_points": _opt_int(sent_points, "sent_points"),
        "write_retries": _opt_int(write_retries, "write_retries"),
    }
    for reason, count in (bad_payloads or {}).items():
        key = f"bad_{reason}"
        if not _FIELD_KEY_RE.fullmatch(key):
            raise ValueError(f"bad payload reason {reason!r}: use lower-case letters, digits and '_'")
        fields[key] = _opt_int(count, key)
    return line(DETECTOR_HEALTH, {"instance": instance}, fields, to_ms(time_s))


def _typed(
    values: Mapping[str, Any],
    int_keys: tuple[str, ...],
    float_keys: tuple[str, ...],
    what: str,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    unknown = set(values) - set(int_keys) - set(float_keys) - set(extra)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {}
    for key in int_keys:
        fields[key] = _opt_int(values.get(key), key)
    for key in float_keys:
        fields[key] = _opt_float(values.get(key), key)
    return fields
