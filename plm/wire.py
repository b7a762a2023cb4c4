"""The MQTT wire format: the one contract between sensors, collector, simulator and detector.

Everything that crosses the broker is defined here and nowhere else, so a third-party device
(an ESP32 publishing JSON, say) and our own collector are held to the same rules. The byte layout
and topics are documented for outsiders in ``docs/wire-format.md``; keep the two in step.

Topics (``<subject>`` and ``<sensor>`` are validated ids, see :func:`validate_id`)::

    plm/v1/<subject>/<sensor>/acc      sample batches                QoS 1, not retained
    plm/v1/<subject>/<sensor>/status   sensor status, Last Will      QoS 1, retained
    plm/v1/<subject>/<sensor>/ack      detector's journal high-water QoS 1, retained
    plm/v1/<subject>/_movement         each scored movement          QoS 1, not retained
    plm/v1/<subject>/_night            night summary                 QoS 1, retained
    plm/v1/<subject>/_diary            sleep-diary notes (inbound)   QoS 1, not retained
    plm/v1/<subject>/_owner            the detector receiving it     QoS 1, retained
    plm/v1/_detector/<instance>        detector health               QoS 1, retained

Ids cannot start with ``_``, so the reserved ``_name`` levels never collide with a subject or sensor.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

TOPIC_ROOT = "plm/v1"
SAMPLES_WILDCARD = f"{TOPIC_ROOT}/+/+/acc"
STATUS_WILDCARD = f"{TOPIC_ROOT}/+/+/status"
ACK_WILDCARD = f"{TOPIC_ROOT}/+/+/ack"

MAX_PAYLOAD_BYTES = 64 * 1024
MIN_RATE_HZ = 1.0
MAX_RATE_HZ = 1000.0
EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z: nothing real is older
MAX_FUTURE_NS = 86_400 * 10**9  # a clock more than a day ahead is broken, not early
MILLI_G_LIMIT = 32_767  # int16 milli-g: +-32.767 g, far beyond any ankle

BINARY_MAGIC = 0x50  # "P"
BINARY_VERSION = 1
# magic u8, version u8, flags u16, seq u32, start ns i64, rate f32, count u16 -- little-endian
_HEADER = struct.Struct("<BBHIqfH")
BINARY_HEADER_BYTES = _HEADER.size
MAX_SAMPLES_PER_BATCH = (MAX_PAYLOAD_BYTES - BINARY_HEADER_BYTES) // 6

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_SIDES = ("left", "right")


class WireFormatError(ValueError):
    """A payload or topic that does not follow the wire format; the message says what is wrong."""


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe topic level: 1-32 chars of letters, digits, ``_`` and ``-``,
    starting with a letter or digit. Wildcards and slashes would let one device write another's topics."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise WireFormatError(
            f"invalid {what} {value!r}: expected 1-32 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return value


def acc_topic(subject: str, sensor: str) -> str:
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/{validate_id(sensor, 'sensor')}/acc"


def status_topic(subject: str, sensor: str) -> str:
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/{validate_id(sensor, 'sensor')}/status"


def ack_topic(subject: str, sensor: str) -> str:
    """Retained application-level acknowledgement of a sensor's batches (see :func:`encode_ack`)."""
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/{validate_id(sensor, 'sensor')}/ack"


def movement_topic(subject: str) -> str:
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/_movement"


def night_topic(subject: str) -> str:
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/_night"


def diary_topic(subject: str) -> str:
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/_diary"


def owner_topic(subject: str) -> str:
    """Retained: a detector subscribed to this subject's samples (see :func:`encode_owner`)."""
    return f"{TOPIC_ROOT}/{validate_id(subject, 'subject')}/_owner"


def detector_status_topic(instance: str) -> str:
    # four levels, so it never matches the sensors' ``plm/v1/+/+/status`` subscription
    return f"{TOPIC_ROOT}/_detector/{validate_id(instance, 'detector instance')}"


@dataclass(frozen=True, slots=True)
class SensorTopic:
    subject: str
    sensor: str
    kind: str  # "acc" | "status"


def parse_sensor_topic(topic: str) -> SensorTopic:
    """Split ``plm/v1/<subject>/<sensor>/<acc|status>``; anything else is a :class:`WireFormatError`."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or parts[4] not in ("acc", "status"):
        raise WireFormatError(f"not a sensor topic: {topic!r} (expected {TOPIC_ROOT}/<subject>/<sensor>/acc|status)")
    return SensorTopic(validate_id(parts[2], "subject"), validate_id(parts[3], "sensor"), parts[4])


@dataclass(frozen=True, eq=False, slots=True)
class SampleBatch:
    """Consecutive samples of one sensor at a nominal rate.

    The sample times are implied (``start_ns + i / rate``) so a batch is compact on the wire; a
    sender that loses samples starts a new batch rather than stretching time over the hole.
    ``seq`` counts batches per sensor stream (wrapping at 2**32) so receivers can spot loss and
    redelivery without trusting clocks.
    """

    start_ns: int
    rate_hz: float
    xyz: np.ndarray  # float32, shape (n, 3), in g
    seq: int = 0
    # time just after the last sample (= start of the next contiguous batch); computed once, since the
    # reorder buffer, the ack marks and the scorer hand-off ask for it several times per batch
    end_ns: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "end_ns", self.start_ns + round(self.xyz.shape[0] * 1e9 / self.rate_hz))

    def __getstate__(self) -> tuple[int, float, np.ndarray, int]:
        return (self.start_ns, self.rate_hz, self.xyz, self.seq)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(("start_ns", "rate_hz", "xyz", "seq"), state, strict=True):
            object.__setattr__(self, name, value)
        self.__post_init__()

    @property
    def count(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def timestamps_ns(self) -> np.ndarray:
        return self.start_ns + np.round(np.arange(self.count) * (1e9 / self.rate_hz)).astype(np.int64)

    def timestamps_s(self) -> np.ndarray:
        return self.start_ns / 1e9 + np.arange(self.count) / self.rate_hz


def make_batch(start_ns: int, rate_hz: float, xyz: Any, seq: int = 0, *, now_ns: int | None = None) -> SampleBatch:
    """Build a validated batch; every constructor path (decoders, simulator, collector) goes through here."""
    if isinstance(start_ns, bool) or not isinstance(start_ns, int | np.integer):
        raise WireFormatError(f"start time must be an integer of ns since the Unix epoch, got {start_ns!r}")
    start_ns = int(start_ns)
    now = time.time_ns() if now_ns is None else now_ns
    if start_ns < EARLIEST_NS:
        raise WireFormatError(f"start time {start_ns} ns is before 2000-01-01: not a Unix-epoch timestamp in ns")
    if start_ns > now + MAX_FUTURE_NS:
        raise WireFormatError(f"start time {start_ns} ns is more than a day in the future")
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, int | float | np.floating | np.integer):
        raise WireFormatError(f"sample rate must be a number, got {rate_hz!r}")
    try:
        rate = float(rate_hz)
    except OverflowError:
        rate = math.inf
    if not (MIN_RATE_HZ <= rate <= MAX_RATE_HZ):  # also false for NaN
        raise WireFormatError(f"sample rate {rate_hz!r} Hz outside {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
    if isinstance(seq, bool) or not isinstance(seq, int | np.integer) or not 0 <= seq < 2**32:
        raise WireFormatError(f"seq must be an integer in 0..2**32-1, got {seq!r}")
    try:
        arr = np.asarray(xyz, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireFormatError(f"samples are not numbers in range: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise WireFormatError(f"samples must be a list of [x, y, z] triples, got shape {arr.shape}")
    if not 1 <= arr.shape[0] <= MAX_SAMPLES_PER_BATCH:
        raise WireFormatError(f"sample count {arr.shape[0]} outside 1..{MAX_SAMPLES_PER_BATCH}")
    if not np.isfinite(arr).all():
        raise WireFormatError("samples contain NaN or infinity")
    if np.abs(arr).max() > MILLI_G_LIMIT / 1000:
        raise WireFormatError(
            f"sample magnitude {float(np.abs(arr).max()):.3f} beyond +-{MILLI_G_LIMIT / 1000} g: "
            "samples must be in g (not m/s^2 or raw counts)"
        )
    return SampleBatch(start_ns, rate, arr, int(seq))


# ----------------------------------------------------------------------------- binary


def encode_binary(batch: SampleBatch) -> bytes:
    """Compact encoding: 22-byte header then int16 milli-g x,y,z triples (6 bytes a sample)."""
    milli_g = np.clip(np.rint(batch.xyz * 1000.0), -MILLI_G_LIMIT, MILLI_G_LIMIT).astype("<i2")
    header = _HEADER.pack(BINARY_MAGIC, BINARY_VERSION, 0, batch.seq, batch.start_ns, batch.rate_hz, batch.count)
    return header + milli_g.tobytes()


def _decode_binary(payload: bytes, now_ns: int | None) -> SampleBatch:
    if len(payload) < BINARY_HEADER_BYTES:
        raise WireFormatError(f"truncated binary batch: {len(payload)} bytes, header needs {BINARY_HEADER_BYTES}")
    _magic, version, _flags, seq, start_ns, rate, count = _HEADER.unpack_from(payload)
    if version != BINARY_VERSION:
        raise WireFormatError(f"unknown binary wire version {version} (this decoder reads version {BINARY_VERSION})")
    expected = BINARY_HEADER_BYTES + 6 * count
    if len(payload) != expected:
        raise WireFormatError(
            f"sample count mismatch: header says {count} samples ({expected} bytes), payload has {len(payload)} bytes"
        )
    if count == 0:
        raise WireFormatError("batch holds no samples")
    if not (MIN_RATE_HZ <= rate <= MAX_RATE_HZ):
        raise WireFormatError(f"sample rate {rate!r} Hz outside {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
    now = time.time_ns() if now_ns is None else now_ns
    if start_ns < EARLIEST_NS:
        raise WireFormatError(f"start time {start_ns} ns is before 2000-01-01: not a Unix-epoch timestamp in ns")
    if start_ns > now + MAX_FUTURE_NS:
        raise WireFormatError(f"start time {start_ns} ns is more than a day in the future")
    raw = np.frombuffer(payload, dtype="<i2", offset=BINARY_HEADER_BYTES).reshape(count, 3)
    xyz = raw.astype(np.float32)
    xyz *= np.float32(0.001)
    return SampleBatch(start_ns, float(rate), xyz, seq)


# ----------------------------------------------------------------------------- JSON


def encode_json(batch: SampleBatch) -> bytes:
    """Human-writable encoding for DIY devices: ``{"v":1,"t0":ns,"rate":Hz,"seq":n,"acc":[[x,y,z],...]}`` in g."""
    doc = {
        "v": 1,
        "t0": batch.start_ns,
        "rate": batch.rate_hz,
        "seq": batch.seq,
        "acc": np.round(batch.xyz.astype(np.float64), 4).tolist(),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _reject_constant(name: str) -> float:
    raise WireFormatError(f"JSON holds {name}: samples must be finite numbers")


def _json_document(payload: bytes, what: str) -> Any:
    """``json.loads`` that raises only :class:`WireFormatError`.

    Besides syntax errors, ``json.loads`` raises a plain ValueError for an integer longer than Python's
    int-string limit (4,300 digits) and RecursionError for deep nesting: either, uncaught, once stopped the
    detector's worker on a message any publisher could send."""
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise WireFormatError(f"{what} is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise WireFormatError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise WireFormatError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # the int-string limit (or our own _reject_constant's WireFormatError)
        if isinstance(exc, WireFormatError):
            raise
        raise WireFormatError(f"{what}: a number out of range ({str(exc)[:80]})") from None


def _decode_json(payload: bytes, now_ns: int | None) -> SampleBatch:
    doc = _json_document(payload, "JSON batch")
    if not isinstance(doc, dict):
        raise WireFormatError("JSON batch must be an object")
    missing = [k for k in ("v", "t0", "rate", "acc") if k not in doc]
    if missing:
        raise WireFormatError(f"JSON batch lacks field(s) {', '.join(missing)}")
    if doc["v"] != 1 or isinstance(doc["v"], bool):
        raise WireFormatError(f"unknown JSON wire version {doc['v']!r} (this decoder reads version 1)")
    acc = doc["acc"]
    if not isinstance(acc, list) or not all(
        isinstance(s, list) and len(s) == 3 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in s)
        for s in acc
    ):
        raise WireFormatError('"acc" must be a list of [x, y, z] number triples')
    if "n" in doc and doc["n"] != len(acc):
        raise WireFormatError(f'sample count mismatch: "n" says {doc["n"]!r}, "acc" holds {len(acc)} samples')
    for name in ("t0", "rate", "seq"):
        value = doc.get(name, 0)
        if isinstance(value, float) and not math.isfinite(value):
            raise WireFormatError(f'"{name}" is not finite')
    return make_batch(doc["t0"], doc["rate"], acc if acc else np.zeros((0, 3)), doc.get("seq", 0), now_ns=now_ns)


def decode(payload: bytes, *, now_ns: int | None = None) -> SampleBatch:
    """Decode either encoding (binary starts with the magic byte, JSON with ``{``).

    Raises :class:`WireFormatError` -- and nothing else -- for any malformed payload.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireFormatError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireFormatError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    if not payload:
        raise WireFormatError("empty payload")
    if payload[0] == BINARY_MAGIC:
        return _decode_binary(payload, now_ns)
    if payload.lstrip()[:1] in (b"{", b"["):
        return _decode_json(payload, now_ns)
    raise WireFormatError(f"unknown encoding: first byte 0x{payload[0]:02x} is neither the binary magic 0x50 nor '{{'")


# ----------------------------------------------------------------------------- status


SENSOR_STATES = ("online", "offline", "lost")
MAX_STATUS_BYTES = 4096  # a status is a handful of numbers; the collector's is ~350 bytes
MAX_ACK_BYTES = 256
MAX_COUNT = 2**63 - 1  # counters are written to InfluxDB as int64
MAX_TEXT = 200  # model names, last errors
MAX_EXTRA_FIELDS = 32
RSSI_RANGE_DBM = (-150.0, 30.0)  # BLE reports -127..+20 dBm; wider is a broken or hostile sender

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
ShortText = Annotated[str, Field(max_length=MAX_TEXT)]
Scalar = bool | Annotated[int, Field(ge=-MAX_COUNT - 1, le=MAX_COUNT)] | float | ShortText | None
"""A diagnostic extra of a status: any JSON scalar within int64 / finite / 200 characters."""


class _Payload(BaseModel):
    """Strict JSON schema of one inbound payload kind.

    Strict: no coercion (``"80"`` is not a number, ``1.5`` is not a count, ``true`` is neither); no NaN or
    infinity; every number and string bounded. Validation happens on the raw bytes in pydantic's Rust JSON
    parser, which also refuses integers past the int-string limit and deep nesting with its own error, so a
    payload either becomes a model whose every field is usable as typed, or a :class:`WireFormatError`."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class StatusPayload(_Payload):
    """``plm/v1/<subject>/<sensor>/status``. Unknown keys are kept as diagnostics (the collector adds
    ``samples_lost``, ``reconnects``, ``last_error``, ...) but must be scalars, and at most 32 of them."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Scalar]

    state: Literal["online", "offline", "lost"]
    side: Literal["left", "right"] | None = None
    model: ShortText | None = None
    battery_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    rssi_dbm: Annotated[float, Field(ge=RSSI_RANGE_DBM[0], le=RSSI_RANGE_DBM[1])] | None = None
    rate_hz: Annotated[float, Field(ge=MIN_RATE_HZ, le=MAX_RATE_HZ)] | None = None
    frames_received: Count | None = None
    frames_dropped: Count | None = None
    queue_depth: Count | None = None
    time_ns: Annotated[int, Field(ge=EARLIEST_NS, le=MAX_COUNT)] | None = None  # and not in the future: below


class AckPayload(_Payload):
    """``plm/v1/<subject>/<sensor>/ack``: keys other than ``until_ns`` are ignored (newer detectors may add)."""

    model_config = ConfigDict(extra="ignore")
    until_ns: Annotated[int, Field(ge=0, le=MAX_COUNT)]


def _schema_error(what: str, exc: ValidationError) -> WireFormatError:
    """One line naming the first offending field, without echoing the (possibly huge) value."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = first["loc"]
    if first["type"] == "json_invalid":
        return WireFormatError(f"{what} is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}")
    if not loc:
        return WireFormatError(f"{what} must be a JSON object ({first['msg']})")
    name = str(loc[0])
    same_field = [e for e in errors if e["loc"][:1] == loc[:1]]
    if len(same_field) > 1:  # a union (an extra, an optional number): each branch complains; say it once
        finite = [e for e in same_field if e["type"] in ("finite_number", "less_than_equal", "greater_than_equal")]
        detail = (finite or same_field)[0]["msg"] if finite else "wrong type"
        return WireFormatError(f"{what} field {name!r}: {detail}")
    return WireFormatError(f"{what} field {name!r}: {first['msg']}")


@dataclass(frozen=True, slots=True)
class SensorStatus:
    """Retained per-sensor status. ``lost`` is the Last Will: the link died without a goodbye."""

    state: str
    side: str | None = None
    model: str | None = None
    battery_pct: float | None = None
    rssi_dbm: float | None = None
    rate_hz: float | None = None
    frames_received: int | None = None
    frames_dropped: int | None = None
    queue_depth: int | None = None
    time_ns: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode_status(status: SensorStatus) -> bytes:
    doc = {k: getattr(status, k) for k in SensorStatus.__slots__ if k != "extra"}
    doc = {k: v for k, v in doc.items() if v is not None}
    doc.update(status.extra)
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_status(payload: bytes | bytearray | memoryview, *, now_ns: int | None = None) -> SensorStatus:
    """Validate a status payload against :class:`StatusPayload`; ``time_ns`` obeys the sample-time rules.

    Raises :class:`WireFormatError` -- and nothing else -- for any payload that is not a valid status."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireFormatError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_STATUS_BYTES:
        raise WireFormatError(f"status payload of {len(payload)} bytes exceeds the {MAX_STATUS_BYTES}-byte limit")
    try:
        doc = StatusPayload.model_validate_json(bytes(payload))
    except ValidationError as exc:
        raise _schema_error("status", exc) from None
    extra = doc.__pydantic_extra__ or {}
    if len(extra) > MAX_EXTRA_FIELDS:
        raise WireFormatError(f"status has {len(extra)} unknown fields; at most {MAX_EXTRA_FIELDS}")
    if doc.time_ns is not None:
        now = time.time_ns() if now_ns is None else now_ns
        if doc.time_ns > now + MAX_FUTURE_NS:
            raise WireFormatError(f"status time {doc.time_ns} ns is more than a day in the future")
    known = {name: getattr(doc, name) for name in StatusPayload.model_fields}
    return SensorStatus(**known, extra=dict(extra))


# ----------------------------------------------------------------------------- acknowledgement


def encode_ack(until_ns: int) -> bytes:
    """``{"until_ns": n}``: every batch of the sensor whose samples end at or before ``n`` (its ``end_ns``)
    is committed to the detector's durable journal, so a sender may forget it. The detector advances ``n``
    only over batches it received contiguously (next ``seq`` or next start time), never over a hole."""
    return json.dumps({"until_ns": int(until_ns)}, separators=(",", ":")).encode()


def decode_ack(payload: bytes | bytearray | memoryview) -> int:
    """Validate an ack against :class:`AckPayload`; raises :class:`WireFormatError` and nothing else."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireFormatError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_ACK_BYTES:
        raise WireFormatError(f"ack payload of {len(payload)} bytes exceeds the {MAX_ACK_BYTES}-byte limit")
    try:
        return AckPayload.model_validate_json(bytes(payload)).until_ns
    except ValidationError as exc:
        raise _schema_error("ack", exc) from None


# ----------------------------------------------------------------------------- owner


class OwnerPayload(_Payload):
    """``plm/v1/<subject>/_owner``: which detector receives the subject's samples, since when."""

    model_config = ConfigDict(extra="ignore")
    instance: Annotated[str, Field(pattern=rf"^{_ID_RE.pattern}$", max_length=32)]  # anchored: a pattern searches
    shard: Annotated[str, Field(pattern=r"^\d{1,6}/\d{1,6}$", max_length=13)]
    time_ns: Annotated[int, Field(ge=0, le=MAX_COUNT)]


def encode_owner(instance: str, shard: tuple[int, int], time_ns: int) -> bytes:
    """A detector has subscribed to the subject's samples: from now on the broker keeps them for it (its
    session is persistent). A sender should publish a subject's batches only once it has seen this -- for a
    subject no detector has subscribed to yet, the broker would drop them -- and publish again what is not
    acknowledged when a newer announcement comes (a replica taking the subject over)."""
    return json.dumps(
        {
            "instance": validate_id(instance, "detector instance"),
            "shard": f"{shard[0]}/{shard[1]}",
            "time_ns": int(time_ns),
        },
        separators=(",", ":"),
    ).encode()


def decode_owner(payload: bytes | bytearray | memoryview) -> OwnerPayload:
    """Validate an owner announcement; raises :class:`WireFormatError` and nothing else."""
    if len(payload) > MAX_ACK_BYTES:
        raise WireFormatError(f"owner payload of {len(payload)} bytes exceeds the {MAX_ACK_BYTES}-byte limit")
    try:
        return OwnerPayload.model_validate_json(bytes(payload))
    except ValidationError as exc:
        raise _schema_error("owner", exc) from None
