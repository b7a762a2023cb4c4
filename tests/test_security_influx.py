"""InfluxDB least privilege on a real influxd 1.x with authentication: the detector's user can only
write the plm database, Grafana's user can only read it, and nobody without credentials can do
either. (2.x tokens and 3.x are documented in docs/security.md.)"""

from __future__ import annotations

import urllib.error

import pytest

from detector.reporting.data import InfluxQL, ReportDataError
from detector.storage import schema
from detector.storage.influx import InfluxSink, V1Writer, WriteError
from plm.config import InfluxSettings

pytestmark = pytest.mark.services

DETECTOR_PW = "detector-write-only-pw-81f3"
GRAFANA_PW = "grafana-read-only-pw-2c9a"


@pytest.fixture
def secured(influxd_factory):
    influxd = influxd_factory(auth=True)
    db = influxd.database
    for statement in (
        f"CREATE USER detector WITH PASSWORD '{DETECTOR_PW}'",
        f'GRANT WRITE ON "{db}" TO detector',
        f"CREATE USER grafana WITH PASSWORD '{GRAFANA_PW}'",
        f'GRANT READ ON "{db}" TO grafana',
    ):
        answer = influxd.query(statement)
        assert "error" not in answer["results"][0], answer
    return influxd


def _settings(influxd, user: str | None, password: str | None) -> InfluxSettings:
    return InfluxSettings(url=influxd.url, api=1, bucket=influxd.database, username=user, password=password)


def _query_as(influxd, q: str, auth: tuple[str, str] | None) -> tuple[int, dict | str]:
    """(HTTP status, answer); influxd 1.x answers 401/403 for refused credentials or privileges."""
    try:
        return 200, influxd.query(q, database=influxd.database, auth=auth)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _refused(status: int, answer: dict | str) -> bool:
    if status in (401, 403):
        return True
    return status == 200 and isinstance(answer, dict) and "error" in answer["results"][0]


LINE = schema.line("movement", {"subject": "sec01", "side": "left", "kind": "lm"},
                   {"duration_s": 1.5, "plm": True}, 1_700_000_000_000)  # fmt: skip


def test_detector_user_writes_but_cannot_read(secured, tmp_path) -> None:
    sink = InfluxSink(_settings(secured, "detector", DETECTOR_PW), tmp_path / "outbox.sqlite")
    try:
        sink.put([LINE])
        assert sink.flush(20), f"the write-only user could not write: {sink.metrics()}"
    finally:
        sink.close()
    # the point is there (admin reads it) ...
    status, answer = _query_as(secured, "SELECT duration_s FROM movement WHERE subject = 'sec01'", secured.admin)
    assert status == 200 and answer["results"][0]["series"][0]["values"] == [[1_700_000_000_000, 1.5]]
    # ... but the detector's own credentials cannot read anything back
    status, answer = _query_as(secured, "SELECT * FROM movement", ("detector", DETECTOR_PW))
    assert _refused(status, answer), f"write-only user could read: {status} {answer}"
    # nor administer
    for q in ("SHOW USERS", "DROP DATABASE plm", "CREATE USER evil WITH PASSWORD 'x' WITH ALL PRIVILEGES"):
        status, answer = _query_as(secured, q, ("detector", DETECTOR_PW))
        assert _refused(status, answer), f"{q!r} allowed for the detector: {answer}"


def test_grafana_user_reads_but_cannot_write(secured, tmp_path) -> None:
    V1Writer(_settings(secured, "detector", DETECTOR_PW)).write(LINE)
    reader = InfluxQL(_settings(secured, "grafana", GRAFANA_PW))
    series = reader.query("SELECT duration_s FROM movement WHERE subject = 'sec01'")
    assert series and series[0]["values"][0][1] == 1.5
    with pytest.raises(WriteError) as refused:
        V1Writer(_settings(secured, "grafana", GRAFANA_PW)).write(LINE.replace("sec01", "forged"))
    assert refused.value.kind == "auth"
    assert not reader.query("SELECT duration_s FROM movement WHERE subject = 'forged'")
    for q in ("DROP MEASUREMENT movement", "SHOW USERS"):
        status, answer = _query_as(secured, q, ("grafana", GRAFANA_PW))
        assert _refused(status, answer), f"{q!r} allowed for grafana: {answer}"
    assert reader.query("SELECT count(duration_s) FROM movement")[0]["values"][0][1] == 1


def test_no_credentials_or_wrong_ones_get_nothing(secured, tmp_path) -> None:
    with pytest.raises(WriteError) as anonymous:
        V1Writer(_settings(secured, None, None)).write(LINE)
    assert anonymous.value.kind == "auth"
    with pytest.raises(WriteError) as wrong:
        V1Writer(_settings(secured, "detector", "not-the-password")).write(LINE)
    assert wrong.value.kind == "auth" and "not-the-password" not in str(wrong.value)
    with pytest.raises(ReportDataError):
        InfluxQL(_settings(secured, None, None)).query("SELECT * FROM movement")
    with pytest.raises(ReportDataError):
        InfluxQL(_settings(secured, "grafana", "guess")).query("SELECT * FROM movement")


def test_refused_writes_stay_in_the_outbox(secured, tmp_path) -> None:
    """A credential problem must not lose data: lines wait in the outbox until the credentials are fixed."""
    outbox = tmp_path / "outbox.sqlite"
    sink = InfluxSink(_settings(secured, "grafana", GRAFANA_PW), outbox, auth_backoff_s=0.2)
    try:
        sink.put([LINE])
        assert not sink.flush(2)
        assert sink.depth() == 1 and sink.metrics().sent == 0
    finally:
        sink.close()
    fixed = InfluxSink(_settings(secured, "detector", DETECTOR_PW), outbox)
    try:
        assert fixed.flush(20)
    finally:
        fixed.close()
    _status, answer = _query_as(secured, "SELECT count(duration_s) FROM movement", secured.admin)
    assert answer["results"][0]["series"][0]["values"][0][1] == 1
