"""Grafana dashboards: structure, and every panel/annotation/variable query run against a real influxd
filled by the pipeline (simulated nights -> detector scorer -> schema builders -> InfluxSink).

No Grafana runs here, so the macros Grafana would substitute are substituted by the test:
$timeFilter -> a concrete time range covering the data, $__interval -> 1m, $subject -> the subject.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plm.ops.localservices import Influxd1, ServiceError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_fill import FillResult, fill_influx_live

ROOT = Path(__file__).resolve().parents[1]
DASH_DIR = ROOT / "dashboards"
JSON_DIR = DASH_DIR / "json"
KNOWN_PANEL_TYPES = {"stat", "timeseries", "state-timeline", "barchart", "table", "text", "histogram", "heatmap"}
SUBJECT = "alice"
MEASUREMENTS_WITH_SUBJECT = {
    "movement",
    "leg_state",
    "plm_series",
    "activity",
    "hourly",
    "night",
    "diary",
    "sensor_status",
}

yaml = pytest.importorskip("yaml")
sys.path.insert(0, str(DASH_DIR))
import build  # noqa: E402


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}


DASHBOARDS = load_dashboards()


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def all_queries() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(dashboard, where, query, panel-or-annotation) for every InfluxQL query in the dashboards."""
    found = []
    for name, dash in DASHBOARDS.items():
        for p in all_panels(dash):
            for t in p.get("targets", []):
                found.append((name, f"panel {p['id']} {p['title']!r} {t['refId']}", t["query"], p))
        for a in dash["annotations"]["list"]:
            if not a.get("builtIn"):
                found.append((name, f"annotation {a['name']!r}", a["target"]["query"], a))
    return found


QUERIES = all_queries()


# ------------------------------------------------------------------------------------- structure


def test_three_dashboards_are_generated_and_up_to_date() -> None:
    assert set(DASHBOARDS) == {"night.json", "trends.json", "sensors.json"}
    rendered = build.render()
    for name, text in rendered.items():
        assert (JSON_DIR / name).read_text() == text, f"{name} is stale: run python dashboards/build.py"


def test_provisioned_datasource_has_the_uid_the_dashboards_use() -> None:
    files = sorted((DASH_DIR / "provisioning" / "datasources").glob("*.yaml"))
    assert len(files) == 1, "exactly one datasource file is provisioned (variants live in datasource-variants/)"
    sources = yaml.safe_load(files[0].read_text())["datasources"]
    assert [s["uid"] for s in sources] == [build.DATASOURCE_UID]
    ds = sources[0]
    assert ds["type"] == "influxdb" and ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ds["secureJsonData"]["httpHeaderValue1"].startswith("Token ${")
    for variant in (DASH_DIR / "provisioning" / "datasource-variants").glob("*.yaml"):
        v = yaml.safe_load(variant.read_text())["datasources"][0]
        assert v["uid"] == build.DATASOURCE_UID and v["jsonData"]["version"] == "InfluxQL", variant.name
    provider = yaml.safe_load((DASH_DIR / "provisioning" / "dashboards" / "plm.yaml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    dash = DASHBOARDS[name]
    assert dash["schemaVersion"] == 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"])
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in KNOWN_PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (mine & cells), f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "text":
            assert p["targets"], p["title"]
    uids = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict):
                uids.add((ds.get("type"), ds.get("uid")))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash)
    assert uids <= {("influxdb", build.DATASOURCE_UID), ("grafana", "-- Grafana --")}, uids
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["subject"]["query"] == 'SHOW TAG VALUES FROM "night" WITH KEY = "subject"'


def test_queries_are_influxql_within_what_every_influxdb_speaks() -> None:
    assert len(QUERIES) > 30
    for name, where, q, _ in QUERIES:
        assert q.lstrip().upper().startswith("SELECT"), (name, where)
        for banned in ("from(bucket", "|>", "SLIMIT", "SOFFSET", "$__timeFilter"):
            assert banned.lower() not in q.lower(), (name, where, banned)
        measurement = re.search(r'FROM "(\w+)"', q).group(1)
        if measurement in MEASUREMENTS_WITH_SUBJECT:
            assert '"subject" =~ /^$subject$/' in q, (name, where)
        assert "$timeFilter" in q or "now() - 14d" in q, (name, where)


def test_night_and_trends_say_the_product_does_not_diagnose() -> None:
    for name in ("night.json", "trends.json"):
        texts = [p["options"]["content"] for p in all_panels(DASHBOARDS[name]) if p["type"] == "text"]
        assert any("does not diagnose" in t for t in texts), name
    night_stats = [p for p in all_panels(DASHBOARDS["night.json"]) if p["type"] == "stat"]
    plm = next(p for p in night_stats if p["title"].startswith("PLM index"))
    steps = plm["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"value": 15.0, "color": "red"} in steps


def test_night_picker_shifts_whole_days() -> None:
    night = DASHBOARDS["night.json"]
    var = next(v for v in night["templating"]["list"] if v["name"] == "night")
    values = [o["value"] for o in var["options"]]
    assert values == [f"{n}d" for n in range(14)]
    shifted = [p for p in all_panels(night) if p["type"] != "text"]
    assert shifted and all(p.get("timeShift") == "$night" for p in shifted)
    assert night["time"] == {"from": "now-1d/d+12h", "to": "now/d+12h"}


def sensors_panel(title: str) -> dict[str, Any]:
    return next(p for p in all_panels(DASHBOARDS["sensors.json"]) if p["title"] == title)


DEAD_LETTERED = "Detector: messages dead-lettered"
BAD_PAYLOADS = "Detector: bad payloads (running count by reason)"


def test_sensors_show_dead_lettered_messages_and_retained_payloads() -> None:
    """Issue 16: a message that raised while being applied is set aside (``messages_dead_lettered``), and
    retained batches/notes are refused as ``bad_retained``; both must be visible on the Sensors dashboard."""
    stat = sensors_panel(DEAD_LETTERED)
    assert stat["type"] == "stat"
    assert [t["query"] for t in stat["targets"]] == [
        'SELECT max("messages_dead_lettered") FROM "detector_health" WHERE $timeFilter'
    ]
    assert {"value": 1.0, "color": "red"} in stat["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert "docs/reliability.md" in stat["description"] and "non-zero" in stat["description"]
    refused = sensors_panel("Detector: points InfluxDB refused")  # the outbox's dead letters, not messages
    assert 'last("dead_letters")' in refused["targets"][0]["query"]

    bad = sensors_panel(BAD_PAYLOADS)
    pattern = re.search(r"max\(/(.+?)/\)", bad["targets"][0]["query"]).group(1)
    assert re.search(pattern, "bad_retained") and not re.search(pattern, "messages_dead_lettered")
    assert "bad_retained" in bad["description"], "say what the new reason means"


# ------------------------------------------------------------------------ queries against influxd


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, mosquitto) -> Iterator[tuple[Influxd1, FillResult]]:
    """influxd filled by a real pipeline run: simulated nights through mosquitto and the live detector."""
    try:
        server = Influxd1(workdir=tmp_path_factory.mktemp("influxd-dashboards"))
        server.start()
    except ServiceError as exc:  # same policy as conftest.py: skip, unless CI requires the services
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PLM_REQUIRE_SERVICES=1 but {exc}")
        pytest.skip(str(exc))
    try:
        yield server, fill_influx_live(server, mosquitto, tmp_path_factory.mktemp("detector"), SUBJECT, nights=5)
    finally:
        server.stop()


def substitute(q: str, lo_ms: int, hi_ms: int, subject: str = SUBJECT) -> str:
    return (
        q.replace("$timeFilter", f"time >= {lo_ms}ms AND time <= {hi_ms}ms")
        .replace("$__interval", "1m")
        .replace("$subject", re.escape(subject))
    )


def expected_columns(q: str) -> list[str]:
    """Column names InfluxDB returns for a SELECT: aliases, else the function name, else the field."""
    select = re.match(r"\s*SELECT\s+(.*?)\s+FROM\s", q, re.S).group(1)
    parts, depth, cur = [], 0, ""
    for ch in select:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    names = []
    for part in (p.strip() for p in parts):
        alias = re.search(r'\s+AS\s+"([^"]+)"$', part)
        func = re.match(r"(\w+)\(", part)
        if alias:
            names.append(alias.group(1))
        elif func and "/" in part:
            names.append(func.group(1) + "_*")  # max(/^bad_/) -> max_bad_decode, ...
        elif func:
            names.append(func.group(1))
        else:
            names.append(part.strip('"'))
    return names


def run(server: Influxd1, q: str) -> list[dict[str, Any]]:
    answer = server.query(q, database="plm")
    result = answer["results"][0]
    assert "error" not in result, f"{q}\n-> {result['error']}"
    return result.get("series", [])


@pytest.mark.services
@pytest.mark.parametrize("where", [w for _, w, _, _ in QUERIES], ids=[f"{n}:{w}" for n, w, _, _ in QUERIES])
def test_every_query_returns_its_columns_with_data(filled: tuple[Influxd1, FillResult], where: str) -> None:
    server, fill = filled
    name, _, q, _ = next(item for item in QUERIES if item[1] == where)
    lo, hi = fill.time_range_ms
    series = run(server, substitute(q, lo, hi))
    assert series, f"{name} {where}: no rows for\n{substitute(q, lo, hi)}"
    for wanted in expected_columns(q):
        present = False
        for s in series:
            cols = s["columns"]
            matches = [
                i for i, c in enumerate(cols) if c == wanted or (wanted.endswith("_*") and c.startswith(wanted[:-1]))
            ]
            assert matches, f"{where}: column {wanted!r} not in {cols}"
            present |= any(row[i] is not None for row in s["values"] for i in matches)
        assert present, f"{where}: column {wanted!r} has no value"


@pytest.mark.services
def test_annotation_columns_match_their_mappings(filled: tuple[Influxd1, FillResult]) -> None:
    server, fill = filled
    lo, hi = fill.time_range_ms
    for dash in DASHBOARDS.values():
        for a in dash["annotations"]["list"]:
            if a.get("builtIn"):
                continue
            series = run(server, substitute(a["target"]["query"], lo, hi))
            cols = series[0]["columns"]
            for mapping in a["mappings"].values():
                assert mapping["value"] in cols, (a["name"], mapping, cols)
            if "timeEnd" in a["mappings"]:
                i = cols.index(a["mappings"]["timeEnd"]["value"])
                assert all(row[i] > row[0] for row in series[0]["values"]), "a region must end after it starts"


@pytest.mark.services
def test_subject_variable_lists_the_subject(filled: tuple[Influxd1, FillResult]) -> None:
    server, _ = filled
    for dash in DASHBOARDS.values():
        q = next(v for v in dash["templating"]["list"] if v["name"] == "subject")["query"]
        series = run(server, q)
        assert [row[1] for row in series[0]["values"]] == [SUBJECT]


@pytest.mark.services
def test_night_stats_show_the_picked_night(filled: tuple[Influxd1, FillResult]) -> None:
    """The Night dashboard's range is noon to noon, shifted by whole days: night n back shows night n."""
    server, fill = filled
    stat = next(p for p in all_panels(DASHBOARDS["night.json"]) if p["title"].startswith("PLM index"))
    q = stat["targets"][0]["query"]
    for night in fill.nights:
        lo = int(night.anchor_s * 1000)
        series = run(server, substitute(q, lo, lo + 86_400_000 - 1))
        assert series[0]["values"][0][1] == pytest.approx(night.summary["plm_index"])


@pytest.mark.services
def test_trend_panels_agree_with_the_scored_nights(filled: tuple[Influxd1, FillResult]) -> None:
    server, fill = filled
    lo, hi = fill.time_range_ms
    trends = all_panels(DASHBOARDS["trends.json"])
    last14 = next(p for p in trends if p["title"].startswith("Nights above 15/h"))
    above = run(server, substitute(last14["targets"][0]["query"], lo, hi))[0]["values"][0][1]
    total = run(server, substitute(last14["targets"][1]["query"], lo, hi))[0]["values"][0][1]
    assert total == len(fill.nights)
    assert above == sum(1 for n in fill.nights if n.summary["plm_index"] > 15)
    assert 0 < above < total, "the fill should contain nights on both sides of 15/h"

    diary = next(p for p in trends if p["title"].startswith("Mean PLM index on nights with"))
    for t in diary["targets"]:
        tag = re.search(r'"diary_(\w+)" = (true|false)', t["query"])
        with_tag = tag.group(2) == "true"
        nights = [n for n in fill.nights if n.note is not None and (tag.group(1) in n.note.tags) == with_tag]
        got = run(server, substitute(t["query"], lo, hi))[0]["values"][0][1]
        assert got == pytest.approx(statistics.fmean(n.summary["plm_index"] for n in nights)), t["query"]

    trend = next(p for p in trends if p["title"].startswith("PLM index per night"))
    medians = []
    for t in trend["targets"][1:]:
        series = run(server, substitute(t["query"], lo, hi))
        medians += [row[1] for row in series[0]["values"]]
    indices = [n.summary["plm_index"] for n in fill.nights]
    assert statistics.median(indices) in medians, "a window holding all five nights gives their median"
    assert all(min(indices) <= m <= max(indices) for m in medians)


@pytest.mark.services
def test_dead_lettered_stat_reads_zero_on_a_clean_run_and_the_count_when_there_are_some(
    filled: tuple[Influxd1, FillResult], tmp_path: Path
) -> None:
    """The clean pipeline run sets nothing aside (0, green); a detector that reported 3 shows 3 (red),
    and its bad_retained count appears in the bad-payloads panel."""
    from detector.storage import schema
    from detector.storage.influx import InfluxSink
    from plm.config import InfluxSettings

    server, fill = filled
    lo, hi = fill.time_range_ms
    query = sensors_panel(DEAD_LETTERED)["targets"][0]["query"]
    assert run(server, substitute(query, lo, hi))[0]["values"][0][1] == 0

    later_s = hi / 1000 + 3600  # outside the fill's range: the other tests do not see this point
    point = schema.detector_health_point(
        "dashboard-test", later_s, messages_dead_lettered=3, bad_payloads={"retained": 2}
    )
    with InfluxSink(InfluxSettings(url=server.url, api=1, bucket="plm"), tmp_path / "outbox.sqlite") as sink:
        sink.put([point])
        assert sink.flush(10)
    window = (int(later_s * 1000) - 1, int(later_s * 1000) + 1)
    assert run(server, substitute(query, *window))[0]["values"][0][1] == 3
    bad = run(server, substitute(sensors_panel(BAD_PAYLOADS)["targets"][0]["query"], *window))
    series = next(s for s in bad if s["tags"]["instance"] == "dashboard-test")
    column = series["columns"].index("max_bad_retained")
    assert [row[column] for row in series["values"] if row[column] is not None] == [2]
