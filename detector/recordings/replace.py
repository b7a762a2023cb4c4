"""``plm import --replace``: delete what a subject has stored for a night before its corrected points are written.

Points are keyed by subject, series and time, so importing a file again writes over its own points; but a
corrected file can have fewer movements, series or minutes than the first one, and those points would stay.
With ``--replace`` each imported night's time (from the hour it starts, one hour either side) is deleted for
that subject from every measurement a night writes, and the night's summary point at its anchor, before the
new points are written. Nothing else is touched: other subjects, diary notes, detector health.

InfluxDB 1.x: ``DELETE FROM ... WHERE subject = '...' AND time ...`` through ``/query``; 1.8+, 2.x and 3.x:
``/api/v2/delete`` through influxdb-client (a 1.x server without it is told apart as the sink does, by its
``/ping`` version). The credentials must allow deleting (the detector's write-only token may not).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request

from detector.recordings import RecordingError
from detector.storage import schema
from plm.config import InfluxSettings

MARGIN_S = 3600.0
NIGHT_MEASUREMENTS = tuple(
    getattr(schema, name)
    for name in ("MOVEMENT", "LEG_STATE", "ACTIVITY", "HOURLY", "SERIES", "SENSOR_STATUS", "NONWEAR")
    if hasattr(schema, name)
)


def delete_night(settings: InfluxSettings, subject: str, start_s: float, end_s: float, anchor_s: float) -> None:
    """Delete ``subject``'s points of one night (RecordingError with the reason when the server refuses)."""
    lo = (start_s // 3600) * 3600 - MARGIN_S
    hi = end_s + MARGIN_S
    from detector.storage.influx import is_v1_only

    if settings.api == 1 or is_v1_only(settings):
        _delete_v1(settings, subject, lo, hi, anchor_s)
    else:
        _delete_v2(settings, subject, lo, hi, anchor_s)


def _delete_v1(settings: InfluxSettings, subject: str, lo: float, hi: float, anchor_s: float) -> None:
    who = f"\"subject\" = '{subject}'"  # a wire id: letters, digits, '_' and '-' only
    statements = [
        f'DELETE FROM "{m}" WHERE {who} AND time >= {int(lo * 1000)}ms AND time <= {int(hi * 1000)}ms'
        for m in NIGHT_MEASUREMENTS
    ]
    at = int(anchor_s * 1000)
    statements.append(f'DELETE FROM "{schema.NIGHT}" WHERE {who} AND time >= {at}ms AND time <= {at}ms')
    body = urllib.parse.urlencode({"q": "; ".join(statements), "db": settings.bucket}).encode()
    request = urllib.request.Request(f"{settings.url}/query", data=body, method="POST")
    secret = settings.password or settings.token
    if secret is not None:
        token = base64.b64encode(f"{settings.username or 'plm'}:{secret.get_secret_value()}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s) as resp:
            doc = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise RecordingError(_refused(settings, f"HTTP {exc.code}")) from None
    except (OSError, ValueError) as exc:
        raise RecordingError(_refused(settings, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")) from None
    errors = [r["error"] for r in doc.get("results", []) if "error" in r]
    if errors or "error" in doc:
        raise RecordingError(_refused(settings, (errors or [doc.get("error")])[0]))


def _delete_v2(settings: InfluxSettings, subject: str, lo: float, hi: float, anchor_s: float) -> None:
    from influxdb_client import InfluxDBClient

    token = settings.token.get_secret_value() if settings.token is not None else None
    if token is None and settings.username is not None and settings.password is not None:
        token = f"{settings.username}:{settings.password.get_secret_value()}"
    spans = [(m, lo, hi) for m in NIGHT_MEASUREMENTS] + [(schema.NIGHT, anchor_s, anchor_s + 0.001)]
    try:
        with InfluxDBClient(
            url=settings.url,
            token=token,  # type: ignore[arg-type]  # None (no credentials) is the client's own default
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
        ) as c:
            api = c.delete_api()
            for measurement, a, b in spans:
                api.delete(
                    dt.datetime.fromtimestamp(a, dt.UTC),
                    dt.datetime.fromtimestamp(b, dt.UTC),
                    f'_measurement="{measurement}" AND subject="{subject}"',
                    bucket=settings.bucket,
                    org=settings.org,
                )
    except Exception as exc:  # the client's errors come in many classes; one line says which
        status = getattr(exc, "status", None)
        raise RecordingError(
            _refused(settings, f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}")
        ) from None


def _refused(settings: InfluxSettings, reason: str) -> str:
    return (
        f"InfluxDB at {settings.url} did not delete the night's old points ({reason}); --replace needs credentials "
        "that may delete in the bucket (the detector's token may only write); this night and the ones after it were "
        "not written"
    )
