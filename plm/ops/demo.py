"""`plm demo`: a whole simulated night through the real pipeline in under a minute, no Docker.

    simulator --MQTT (mosquitto, generated ACLs)--> detector --> influxd 1.x --> InfluxQL read-back

Why real servers: the demo is also a smoke test a new user can run -- it exercises the broker's
access rules, the detector's durable writer and the exact InfluxQL the dashboards and the night
report use. Servers run from a temporary directory on free loopback ports and stop at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plm import wire
from plm.config import DetectorSettings, InfluxSettings, MqttSettings, Settings
from plm.ops.broker import BrokerUser, write_broker_config
from plm.ops.localservices import Influxd1, Mosquitto, free_port

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "demo"
SUBJECT = f"{SUBJECT_PREFIX}001"
COMPARED = ("lm_count", "plm_count", "series_count", "plm_index", "time_in_bed_h", "periodicity_index")


class DemoError(RuntimeError):
    """The demo could not run; the message says which part failed."""


@dataclass
class DemoResult:
    subject: str
    stored: dict[str, Any]  # the night point read back from InfluxDB (InfluxQL)
    announced: dict[str, Any]  # the night summary the detector published on MQTT
    truth: dict[str, Any]  # the simulator's ground truth
    timings: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    report_note: str = ""
    influx_url: str = ""
    database: str = "plm"
    mqtt_url: str = ""

    @property
    def elapsed_s(self) -> float:
        return self.timings.get("total", 0.0)


@dataclass
class DemoServices:
    mosquitto: Mosquitto
    influxd: Influxd1
    passwords: dict[str, str]

    def settings(self, user: str, state_dir: Path) -> Settings:
        return Settings(
            mqtt=MqttSettings(url=self.mosquitto.url, username=user, password=self.passwords[user]),
            influx=InfluxSettings(url=self.influxd.url, api=1, bucket=self.influxd.database),
            detector=DetectorSettings(state_dir=state_dir, instance="demo"),
        )


@contextlib.contextmanager
def demo_services(workdir: Path) -> Iterator[DemoServices]:
    """mosquitto with the project's generated config (detector, simulator and viewer users) and influxd."""
    users = [
        BrokerUser("detector", "detector"),
        BrokerUser("simulator", "collector", (SUBJECT,)),
        BrokerUser("viewer", "viewer", (SUBJECT,)),
    ]
    passwords = {u.name: secrets.token_urlsafe(18) for u in users}
    port = free_port()
    files = write_broker_config(
        workdir / "mosquitto-config",
        users,
        {u.password_env: passwords[u.name] for u in users},
        port=port,
        bind="127.0.0.1",
        run_as_user="root" if os.geteuid() == 0 else None,
    )
    broker = Mosquitto(workdir=workdir / "mosquitto", port=port, config_file=files.config)
    influxd = Influxd1(workdir=workdir / "influxd", database="plm")
    broker.start()
    try:
        influxd.start()
        try:
            yield DemoServices(broker, influxd, passwords)
        finally:
            influxd.stop()
    finally:
        broker.stop()


def _night_rows(influxd: Influxd1, subject: str) -> list[dict[str, Any]]:
    answer = influxd.query(f'SELECT * FROM "night" WHERE "subject" = \'{subject}\'', database=influxd.database)
    series = answer["results"][0].get("series", [])
    return [dict(zip(s["columns"], v, strict=True)) for s in series for v in s["values"]]


class _RetainedReader:
    """The viewer's view (e.g. Home Assistant): the retained night summary on plm/v1/<subject>/_night."""

    def __init__(self, settings: Settings, subject: str) -> None:
        from plm.mqtt import connect, make_client

        self.latest: dict[str, Any] | None = None
        self.final = threading.Event()
        self.client = make_client(settings.mqtt, "plm-demo-viewer")
        self.client.on_message = self._on_message
        connect(self.client, settings.mqtt)
        self.client.subscribe(wire.night_topic(subject), qos=1)

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with contextlib.suppress(ValueError):
            self.latest = json.loads(message.payload)
            if self.latest.get("final"):
                self.final.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_demo(
    out_dir: Path,
    *,
    hours: float = 4.0,
    speed: float = 1000.0,
    profile: str = "rls-severe",
    seed: int = 0,
    keep: threading.Event | None = None,
    on_ready: Any = None,
) -> DemoResult:
    """Stream one simulated night through the pipeline and read its summary back from InfluxDB.

    ``keep``: if given, the servers stay up after the night until the event is set (``--keep``);
    ``on_ready(result)`` is called at that point so the caller can print how to connect.
    """
    from detector.live.service import LiveDetector
    from simulator import prepare_night
    from simulator.stream import StreamConfig, stream_nights

    t_start = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    duration_s = hours * 3600.0
    # the night ends about when the stream does: every point is in the past, as a real night's is
    start_unix = time.time() - duration_s + duration_s / speed
    truth = prepare_night(profile, seed, 52.0, "both", start_unix, hours)
    indices = truth.indices()
    score = truth.score()
    truth_doc = {
        "plm_count": score.plm_count,
        "lm_count": score.lm_count,
        "series_count": score.series_count,
        "periodicity_index": score.periodicity_index,
        "plm_index": indices["plm_index"],
        "time_in_bed_h": truth.hours()["in_bed"],
        "plms_index": indices["plms_index"],
    }
    workdir = out_dir / "services"
    with demo_services(workdir) as services:
        timings["services_up"] = time.monotonic() - t_start
        detector = LiveDetector(services.settings("detector", out_dir / "detector-state"), idle_end_s=600)
        detector.start()
        reader = _RetainedReader(services.settings("viewer", out_dir), SUBJECT)
        try:
            config = StreamConfig(
                subjects=1,
                speed=speed,
                profile=profile,
                seed=seed,
                duration_h=hours,
                prefix=SUBJECT_PREFIX,
                start_unix_s=start_unix,
            )
            t_stream = time.monotonic()
            stats = stream_nights(services.settings("simulator", out_dir).mqtt, config)
            timings["stream"] = time.monotonic() - t_stream
            if not stats.finished:
                raise DemoError("the simulated night did not run to its end")
            # the simulator's retained `offline` status ends the night in the detector
            if not reader.final.wait(60):
                raise DemoError("the detector did not finish the night within 60 s of the stream's end")
            if not detector.sink.flush(30):
                raise DemoError("the detector could not write everything to InfluxDB within 30 s")
            timings["night_finished"] = time.monotonic() - t_start
        finally:
            reader.close()
            detector.stop()
        rows = [r for r in _night_rows(services.influxd, SUBJECT) if r.get("final")]
        if not rows:
            raise DemoError("no final night summary in InfluxDB")
        result = DemoResult(
            subject=SUBJECT,
            stored=rows[-1],
            announced=reader.latest or {},
            truth=truth_doc,
            timings=timings,
            influx_url=services.influxd.url,
            database=services.influxd.database,
            mqtt_url=services.mosquitto.url,
        )
        result.report, result.report_note = _write_report(services.settings("viewer", out_dir), out_dir)
        timings["total"] = time.monotonic() - t_start
        if keep is not None:
            if on_ready is not None:
                on_ready(result)
            keep.wait()
    return result


def _write_report(settings: Settings, out_dir: Path) -> tuple[Path | None, str]:
    """The night report from InfluxDB (detector.reporting.report), if that stage is installed."""
    try:
        from detector.reporting.data import InfluxQL, load_from_influx
        from detector.reporting.report import build_report, render_html
    except ImportError as exc:
        return None, f"night report skipped: {exc}"
    try:
        data = load_from_influx(InfluxQL(settings.influx), SUBJECT, None, None)
        report = build_report(SUBJECT, data["summary"], data["events"], data["history"], data["diary"], data["night"])
        path = out_dir / "night.html"
        path.write_text(render_html(report), encoding="utf-8")
    except Exception as exc:  # the report is a by-product here: the demo's numbers stand without it
        log.warning("night report failed: %s", exc)
        return None, f"night report failed: {exc}"
    return path, report.headline


def format_result(result: DemoResult) -> str:
    """The summary table the CLI prints: InfluxDB read-back, MQTT announcement, simulator truth."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = [
        f"night of {result.subject} (simulated; this product measures, it does not diagnose)",
        f"  {'':22}{'InfluxDB':>12}{'detector':>12}{'truth':>12}",
    ]
    for key in COMPARED:
        lines.append(
            f"  {key:22}{cell(result.stored.get(key)):>12}{cell(result.announced.get(key)):>12}"
            f"{cell(result.truth.get(key)):>12}"
        )
    t = result.timings
    lines.append(
        f"  servers up in {t.get('services_up', 0):.1f} s, night streamed in {t.get('stream', 0):.1f} s, "
        f"total {t.get('total', 0):.1f} s"
    )
    return "\n".join(lines)


def env_hint(result: DemoResult) -> str:
    """What a following ``plm note`` / ``plm report`` in another shell needs to reach the demo's InfluxDB (a 1.x
    server: ``api = 1``; no credentials), as lines to paste (issue 18: nothing said so before)."""
    return (
        "For plm note / plm report in another shell while the servers run:\n"
        f"  export PLM_INFLUX__URL={result.influx_url} PLM_INFLUX__API=1 PLM_INFLUX__BUCKET={result.database}"
    )


def grafana_hint(result: DemoResult) -> str:
    return (
        "To look at it in Grafana (run with --keep so the servers stay up): add a data source\n"
        f"  type InfluxDB, query language InfluxQL, URL {result.influx_url}, database {result.database}, no auth;\n"
        "  set its uid to plm-influxql (or copy dashboards/provisioning/datasource-variants/influxdb-1x.yaml)\n"
        "  and import dashboards/json/night.json. Grafana in Docker reaches the host at\n"
        "  http://host.docker.internal:<port> (add --add-host=host.docker.internal:host-gateway on Linux)."
    )
