"""The durable InfluxDB sink: outbox on disk, a writer thread, and two write paths.

    put(lines) -> SQLite outbox (durable) -> writer thread -> v2 /api/v2/write or v1 /write

``influx.api = 2`` (the default) writes through ``/api/v2/write``, which InfluxDB 1.8+, 2.x and 3.x serve.
Older 1.x servers (Debian's InfluxDB is 1.6) answer it with 404: when ``/ping`` then reports a 1.x
version (its ``X-Influxdb-Version`` header), the sink says so once and writes through ``/write``
instead -- the setting ``influx.api = 1`` (``PLM_INFLUX__API=1``) skips that check.

Why not influxdb-client's batching WriteApi: its buffer lives in memory and a batch is dropped to an
error callback once its retries are used up. Here every line waits on disk until the database said
yes; the v2 path uses the client's *synchronous* WriteApi so each request's outcome is known.

Errors are sorted by what retrying can fix:

- transient (connection refused, timeout, 5xx, 429): retry forever, exponential backoff up to ~30 s;
- credentials (401/403) and a missing database/bucket (404): log which setting to fix (never the
  secret) and retry slowly -- the data stays queued until someone fixes the configuration;
- malformed data (400, 413, 422): bisect the batch to find the refused line(s), move those to the
  dead-letter table, deliver the rest. Re-sending the good half is harmless: points are idempotent.
"""

from __future__ import annotations

import base64
import http.client
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from detector.storage.outbox import Outbox, Pending
from plm.config import InfluxSettings
from plm.logs import RateLimitedLog

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 5000
MAX_REJECTS_IN_A_ROW = 50
"""After this many single lines refused with no line accepted in between, stop dead-lettering."""


class WriteError(Exception):
    """One write request failed. ``kind``: ``transient``, ``auth``, ``config`` or ``rejected``."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def classify_status(status: int) -> str:
    if status in (400, 413, 422):
        return "rejected"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "config"
    return "transient"  # 429, 5xx, and anything unexpected: retrying cannot hurt an idempotent write


class _Redactor:
    """Removes every configured secret (and its Basic-auth encoding) from a text."""

    def __init__(self, settings: InfluxSettings) -> None:
        secrets = [s.get_secret_value() for s in (settings.token, settings.password) if s is not None]
        secrets = [s for s in secrets if s]
        extra = []
        for secret in secrets:
            for user in {settings.username or "", "plm"}:
                extra.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
            extra.append(urllib.parse.quote(secret, safe=""))
        self._secrets = sorted(set(secrets + extra), key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out


class V1Writer:
    """InfluxDB 1.x ``/write`` (also served by 1.8+, 2.x and 3.x): plain HTTP, Basic auth, precision=ms."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._settings = settings
        self._redact = _Redactor(settings)
        query = urllib.parse.urlencode({"db": settings.bucket, "precision": "ms"})
        self._url = f"{settings.url}/write?{query}"
        secret = settings.password or settings.token
        self._auth: str | None = None
        if secret is not None:
            user = settings.username or "plm"
            self._auth = "Basic " + base64.b64encode(f"{user}:{secret.get_secret_value()}".encode()).decode()
        self.secret_setting = "influx.password" if settings.password is not None else "influx.token"

    def write(self, body: str) -> None:
        request = urllib.request.Request(self._url, data=body.encode(), method="POST")
        request.add_header("Content-Type", "text/plain; charset=utf-8")
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self._settings.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode(errors="replace").strip()
            raise WriteError(classify_status(exc.code), self._redact(f"HTTP {exc.code}: {detail}"), exc.code) from None
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise WriteError("transient", self._redact(f"{type(exc).__name__}: {reason}")) from None

    def close(self) -> None:
        pass


class V2Writer:
    """``/api/v2/write`` through influxdb-client's synchronous WriteApi (1.8+, 2.x, 3.x)."""

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._settings = settings
        self._redact = _Redactor(settings)
        if settings.token is not None:
            token = settings.token.get_secret_value()
            self.secret_setting = "influx.token"
        elif settings.username is not None and settings.password is not None:
            token = f"{settings.username}:{settings.password.get_secret_value()}"  # InfluxDB 1.8's v2 API
            self.secret_setting = "influx.username/influx.password"
        else:
            token = None
            self.secret_setting = "influx.token"
        self._client = InfluxDBClient(
            url=settings.url,
            token=token,  # type: ignore[arg-type]  # None (no credentials) is what the client's own default is
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            retries=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: str) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._api.write(
                bucket=self._settings.bucket,
                org=self._settings.org,
                record=body,
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # the client's own constant (a str)
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            detail = (exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or ""))[:2000]
            raise WriteError(
                classify_status(status), self._redact(f"HTTP {status}: {detail}".strip()), status
            ) from None
        except Exception as exc:  # urllib3 connection/timeouts errors come in many classes
            raise WriteError("transient", self._redact(f"{type(exc).__name__}: {exc}")) from None

    def close(self) -> None:
        self._api.close()
        self._client.close()


def make_writer(settings: InfluxSettings) -> V1Writer | V2Writer:
    return V1Writer(settings) if settings.api == 1 else V2Writer(settings)


def server_version(settings: InfluxSettings) -> str | None:
    """The version InfluxDB reports on ``/ping`` (its ``X-Influxdb-Version`` header), or None."""
    try:
        with urllib.request.urlopen(f"{settings.url}/ping", timeout=settings.timeout_s) as resp:
            return resp.headers.get("X-Influxdb-Version")
    except urllib.error.HTTPError as exc:
        return exc.headers.get("X-Influxdb-Version")
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException):
        return None


def is_v1_only(settings: InfluxSettings) -> str | None:
    """After a 404 from ``/api/v2/write``: the server's version if it is a 1.x (no v2 write API before
    1.8, and 1.8 may have it switched off), else None."""
    version = server_version(settings)
    return version if version is not None and version.lstrip("v").startswith("1.") else None


@dataclass(frozen=True, slots=True)
class SinkMetrics:
    sent: int
    retries: int
    dead_letters: int
    depth: int
    last_error: str | None
    last_success: float | None


class InfluxSink:
    """Durable sink: :meth:`put` commits to the outbox, a writer thread drains it to InfluxDB."""

    def __init__(
        self,
        settings: InfluxSettings,
        outbox_path: Path,
        *,
        batch_lines: int = MAX_BATCH_LINES,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        auth_backoff_s: float = 30.0,
        coalesce: bool = True,
    ) -> None:
        self.settings = settings
        self.outbox = Outbox(outbox_path, coalesce=coalesce)
        self._writer = make_writer(settings)
        self._redact = _Redactor(settings)
        self._batch_lines = batch_lines
        self._initial_backoff = initial_backoff_s
        self._max_backoff = max_backoff_s
        self._auth_backoff = auth_backoff_s
        self._wake = threading.Event()  # new data
        self._kick = threading.Event()  # retry now (flush/close)
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._rate_log = RateLimitedLog(log, 60.0)
        self._sent = 0
        self._retries = 0
        self._rejects_in_a_row = 0
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._thread = threading.Thread(target=self._run, name="influx-sink", daemon=True)
        self._thread.start()
        if self.outbox.depth():
            log.info("outbox %s holds %d line(s) from before; draining", outbox_path, self.outbox.depth())

    # ------------------------------------------------------------------ public API
    def put(self, lines: Iterable[str]) -> int:
        """Queue lines durably (committed to SQLite when this returns) and wake the writer."""
        count = self.outbox.put(lines)
        if count:
            self._wake.set()
        return count

    def depth(self) -> int:
        return self.outbox.depth()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Retry now and wait until the outbox is empty; False if it is not empty after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._kick.set()
        self._wake.set()
        with self._idle:
            while self.outbox.depth() > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(remaining, 0.2))
        return True

    def metrics(self) -> SinkMetrics:
        return SinkMetrics(
            sent=self._sent,
            retries=self._retries,
            dead_letters=self.outbox.dead_letter_count(),
            depth=self.outbox.depth(),
            last_error=self._last_error,
            last_success=self._last_success,
        )

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def retries(self) -> int:
        return self._retries

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def dead_letters(self):
        return self.outbox.dead_letters()

    def close(self, flush_timeout_s: float = 0.0) -> None:
        """Stop the writer (after trying to drain for ``flush_timeout_s``); queued lines stay on disk."""
        if flush_timeout_s > 0:
            self.flush(flush_timeout_s)
        self._stop.set()
        self._kick.set()
        self._wake.set()
        self._thread.join(self.settings.timeout_s + 5)
        self._writer.close()
        self.outbox.close()

    def __enter__(self) -> InfluxSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        backoff = self._initial_backoff
        while not self._stop.is_set():
            try:
                batch = self.outbox.peek(self._batch_lines)
            except Exception as exc:  # a broken outbox must be visible, not a dead thread
                log.error("cannot read outbox: %s", exc)
                self._sleep(5.0)
                continue
            if not batch:
                with self._idle:
                    self._idle.notify_all()
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                failure = self._deliver(batch)
            except Exception as exc:  # e.g. the outbox cannot be updated (disk full): keep trying
                log.error("influx sink: %s", self._redact(exc))
                failure = WriteError("transient", self._redact(exc))
            if failure is None:
                backoff = self._initial_backoff
                continue
            self._retries += 1
            delay = self._auth_backoff if failure.kind in ("auth", "config") else backoff
            self._sleep(delay)
            backoff = min(backoff * 2, self._max_backoff)

    def _sleep(self, seconds: float) -> None:
        self._kick.wait(seconds)
        self._kick.clear()

    def _deliver(self, batch: Sequence[Pending]) -> WriteError | None:
        """Send a batch; on a 'rejected' answer bisect it down to the bad lines. Returns the error that
        should make the writer wait (transient/auth/config), or None when the batch is settled."""
        try:
            self._writer.write("\n".join(p.line for p in batch))
        except WriteError as err:
            if err.status == 404 and self._use_v1_api():
                return self._deliver(batch)
            self._last_error = err.args[0]
            if err.kind != "rejected":
                self._report(err)
                return err
            if len(batch) == 1 and self._rejects_in_a_row >= MAX_REJECTS_IN_A_ROW:
                # Nothing has been accepted for a while and every line is refused: more likely a
                # misconfiguration (e.g. a proxy answering 400) than a night of bad points. Keep them.
                err = WriteError("config", err.args[0], err.status)
                self._report(err)
                return err
            if len(batch) == 1:
                self._rejects_in_a_row += 1
                log.error(
                    "InfluxDB refused a line; moved to dead letters: %s | line: %s", err.args[0], batch[0].line[:500]
                )
                self.outbox.dead_letter(batch, err.args[0])
                return None
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                failure = self._deliver(part)
                if failure is not None:
                    return failure
            return None
        self.outbox.ack(batch)
        self._rejects_in_a_row = 0
        self._sent += len(batch)
        self._last_success = time.time()
        return None

    def _use_v1_api(self) -> bool:
        """Switch to the 1.x ``/write`` API if the v2 write answered 404 and the server is a 1.x."""
        if not isinstance(self._writer, V2Writer):
            return False
        version = is_v1_only(self.settings)
        if version is None:
            return False
        log.info(
            "InfluxDB %s at %s has no v2 write API (/api/v2/write answered 404): writing through its 1.x /write "
            "API; set influx.api = 1 (PLM_INFLUX__API=1) to skip this check",
            version,
            self.settings.url,
        )
        self._writer.close()
        self._writer = V1Writer(self.settings)
        return True

    def _report(self, err: WriteError) -> None:
        if err.kind == "auth":
            self._rate_log.warning(
                "auth",
                "InfluxDB at %s refused the credentials (HTTP %s): check %s; %d line(s) stay queued",
                self.settings.url,
                err.status,
                self._writer.secret_setting + (" and influx.username" if self.settings.username else ""),
                self.outbox.depth(),
            )
        elif err.kind == "config":
            self._rate_log.warning(
                "config",
                "InfluxDB at %s refuses every write to %r (check influx.bucket, influx.org, influx.url): %s; "
                "lines stay queued",
                self.settings.url,
                self.settings.bucket,
                err.args[0],
            )
        else:
            self._rate_log.warning(
                "transient",
                "InfluxDB write failed, will retry: %s (%d line(s) queued)",
                err.args[0],
                self.outbox.depth(),
            )
