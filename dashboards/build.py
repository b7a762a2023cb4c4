"""Generate the Grafana dashboards (dashboards/json/*.json) from one readable description.

Why a generator: three dashboards share the datasource, the subject variable, the "measures, does
not diagnose" line, thresholds and annotation queries; writing ~60 panels of JSON by hand drifts.
Run ``python dashboards/build.py`` after editing; tests/test_dashboards.py fails when the committed
JSON differs from what this file generates.

Every query is InfluxQL (InfluxDB 1.x, 2.x through DBRP, 3.x), uses only measurements and fields of
docs/influx-schema.md, and is run against a real influxd by the tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE_UID = "plm-influxql"
DS = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
PLM_THRESHOLD = 15.0
SUBJ = '"subject" =~ /^$subject$/'
DISCLAIMER = (
    "**This product measures leg movements with ankle accelerometers; it does not diagnose.** "
    "Sleep and wake are activity-based estimates. A PLM index above 15/h is the threshold used in "
    "sleep medicine for adults; one night says little (night-to-night variation is large), trends over "
    "weeks say more. Discuss persistent findings with a doctor."
)
OUT = Path(__file__).resolve().parent / "json"

STATE_COLOURS = {
    "plm": ("PLM", "red"),
    "lm": ("LM", "orange"),
    "long": ("long movement", "purple"),
    "twitch": ("twitch", "yellow"),
    "rest": ("", "transparent"),
    "lying": ("lying", "blue"),
    "supine": ("supine", "blue"),
    "prone": ("prone", "dark-blue"),
    "left": ("on left side", "light-blue"),
    "right": ("on right side", "super-light-blue"),
    "upright": ("upright / out of bed", "text"),
    "online": ("online", "green"),
    "offline": ("offline", "text"),
    "lost": ("lost", "red"),
}


class Layout:
    """Hands out panel ids and grid positions row by row (24 columns)."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.newline()
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(ref: str, query: str, fmt: str = "time_series", alias: str | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"refId": ref, "datasource": DS, "rawQuery": True, "query": query, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def panel(
    layout: Layout,
    kind: str,
    title: str,
    w: int,
    h: int,
    queries: list[dict[str, Any]] | None = None,
    *,
    description: str = "",
    defaults: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    transformations: list[dict[str, Any]] | None = None,
    time_shift: str | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": layout.take_id(),
        "type": kind,
        "title": title,
        "description": description,
        "gridPos": layout.place(w, h),
        "options": options or {},
        "fieldConfig": {"defaults": defaults or {}, "overrides": overrides or []},
    }
    if queries is not None:
        p["datasource"] = DS
        p["targets"] = queries
    if transformations:
        p["transformations"] = transformations
    if time_shift:
        p["timeShift"] = time_shift
        p["hideTimeOverride"] = False
    return p


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


PLM_STEPS = thresholds((None, "green"), (5.0, "yellow"), (PLM_THRESHOLD, "red"))


def value_mappings(*states: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "value",
            "options": {
                s: {"text": STATE_COLOURS[s][0], "color": STATE_COLOURS[s][1], "index": i} for i, s in enumerate(states)
            },
        }
    ]


def stat(
    layout: Layout,
    title: str,
    query: str,
    w: int,
    *,
    unit: str = "none",
    decimals: int = 1,
    steps: dict[str, Any] | None = None,
    description: str = "",
    time_shift: str | None = None,
    h: int = 4,
) -> dict[str, Any]:
    return panel(
        layout,
        "stat",
        title,
        w,
        h,
        [target("A", query)],
        description=description,
        time_shift=time_shift,
        defaults={
            "unit": unit,
            "decimals": decimals,
            "color": {"mode": "thresholds"},
            "thresholds": steps or thresholds((None, "blue")),
            "noValue": "no data",
        },
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if steps else "value",
            "graphMode": "none",
            "textMode": "value",
            "justifyMode": "center",
            "orientation": "auto",
        },
    )


def text(layout: Layout, content: str, w: int = 24, h: int = 2, title: str = "") -> dict[str, Any]:
    return panel(layout, "text", title, w, h, None, options={"mode": "markdown", "content": content})


def subject_variable() -> dict[str, Any]:
    return {
        "name": "subject",
        "label": "Subject",
        "type": "query",
        "datasource": DS,
        "query": 'SHOW TAG VALUES FROM "night" WITH KEY = "subject"',
        "definition": 'SHOW TAG VALUES FROM "night" WITH KEY = "subject"',
        "refresh": 1,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
    }


def annotation(
    name: str,
    query: str,
    colour: str,
    *,
    time_end: str | None = None,
    text_col: str = "text",
    tags_col: str | None = None,
) -> dict[str, Any]:
    a: dict[str, Any] = {
        "name": name,
        "datasource": DS,
        "enable": True,
        "iconColor": colour,
        "query": query,
        "target": {"refId": "Anno", "datasource": DS, "rawQuery": True, "query": query, "resultFormat": "table"},
        "textColumn": text_col,
        "mappings": {"text": {"source": "field", "value": text_col}},
    }
    if tags_col:
        a["tagsColumn"] = tags_col
        a["mappings"]["tags"] = {"source": "field", "value": tags_col}
    if time_end:
        a["timeEndColumn"] = time_end
        a["mappings"]["timeEnd"] = {"source": "field", "value": time_end}
    return a


DIARY_ANNOTATION = annotation(
    "Diary",
    f'SELECT "text", "tags" FROM "diary" WHERE {SUBJ} AND $timeFilter',
    "purple",
    tags_col="tags",
)
SERIES_ANNOTATION = annotation(
    "PLM series",
    f'SELECT "end_ms", "count" AS "text" FROM "plm_series" WHERE {SUBJ} AND $timeFilter',
    "rgba(242, 73, 92, 0.25)",
    time_end="end_ms",
)
NONWEAR_ANNOTATION = annotation(
    "Sensor off the ankle",
    f'SELECT "end_ms", "side" AS "text" FROM "nonwear" WHERE {SUBJ} AND $timeFilter',
    "rgba(128, 128, 128, 0.35)",
    time_end="end_ms",
)
"""Non-wear spans (detector.scoring.nonwear): a leg's sensor was off the ankle; not time in bed, not in the indices."""


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    time_from: str,
    time_to: str,
    description: str,
    refresh: str = "",
) -> dict[str, Any]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["plm", "sleep"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": time_from, "to": time_to},
        "refresh": refresh,
        "links": [
            {
                "title": "Night",
                "type": "link",
                "url": "/d/plm-night/plm-night?${__url_time_range}&var-subject=$subject",
            },
            {"title": "Trends", "type": "link", "url": "/d/plm-trends/plm-trends?var-subject=$subject"},
            {"title": "Sensors", "type": "link", "url": "/d/plm-sensors/plm-sensors?var-subject=$subject"},
        ],
        "templating": {"list": variables},
        "annotations": {"list": [builtin, *annotations]},
        "panels": panels,
    }


# --------------------------------------------------------------------------------------------- night


def night_dashboard() -> dict[str, Any]:
    lay = Layout()
    shift = "$night"
    nightq = f'FROM "night" WHERE {SUBJ} AND $timeFilter'
    panels = [text(lay, DISCLAIMER)]
    lay.newline()
    panels += [
        stat(
            lay,
            "PLM index (per hour in bed)",
            f'SELECT last("plm_index") {nightq}',
            4,
            steps=PLM_STEPS,
            description="PLMs per hour in bed. 15/h: the adult threshold used in sleep medicine.",
            time_shift=shift,
        ),
        stat(
            lay,
            "Estimated PLMS index",
            f'SELECT last("plms_index") {nightq}',
            4,
            steps=PLM_STEPS,
            description="PLMs per hour of estimated sleep (sleep estimated from activity, not EEG).",
            time_shift=shift,
        ),
        stat(lay, "Leg movements", f'SELECT last("lm_count") {nightq}', 3, decimals=0, time_shift=shift),
        stat(lay, "PLMs", f'SELECT last("plm_count") {nightq}', 3, decimals=0, time_shift=shift),
        stat(
            lay,
            "Periodicity index",
            f'SELECT last("periodicity_index") {nightq}',
            3,
            decimals=2,
            description="PLMs / candidate LMs (0-1).",
            time_shift=shift,
        ),
        stat(lay, "Time in bed", f'SELECT last("time_in_bed_h") {nightq}', 3, unit="h", time_shift=shift),
        stat(
            lay,
            "Twitches",
            f'SELECT last("twitch_count") {nightq}',
            4,
            decimals=0,
            description="Movements shorter than 0.5 s: not leg movements by the rules, counted apart.",
            time_shift=shift,
        ),
        stat(
            lay,
            "Sensor off the ankle",
            f'SELECT last("nonwear_h") {nightq}',
            6,
            unit="h",
            description="Hours with no sensor on an ankle (taken off onto a night stand): not time in bed, not in"
            " any index. The spans are shaded grey on the timelines (annotation 'Sensor off the ankle').",
            time_shift=shift,
        ),
        stat(
            lay,
            "Worn fraction",
            f'SELECT last("worn_fraction") {nightq}',
            6,
            decimals=2,
            steps=thresholds((None, "red"), (2 / 3, "green")),
            description="Worn time in bed / (worn time in bed + time off the ankle). Below 2/3 (red) the night is"
            " marked wear_insufficient and gets no PLM index: a part of a night does not stand for the whole."
            " A PLM index shown next to a red worn fraction is the value from before the sensor came off.",
            time_shift=shift,
        ),
    ]
    lay.newline()
    panels.append(
        panel(
            lay,
            "state-timeline",
            "In bed, estimated wake and posture",
            24,
            6,
            [
                target(
                    "A",
                    f'SELECT last("posture") AS "posture" FROM "activity" WHERE {SUBJ} AND $timeFilter '
                    'GROUP BY time(1m), "side" fill(none)',
                    alias="posture $tag_side",
                ),
                target(
                    "B",
                    f'SELECT max("active_s") AS "active" FROM "activity" WHERE {SUBJ} AND $timeFilter '
                    "GROUP BY time(1m) fill(none)",
                    alias="activity (restless = likely awake)",
                ),
            ],
            description="Posture from the gravity direction of each ankle (upright = out of bed); seconds of movement "
            "per minute, where restless minutes are likely awake. An estimate, not polysomnography.",
            defaults={
                "color": {"mode": "thresholds"},
                "thresholds": thresholds((None, "green"), (6.0, "yellow"), (20.0, "orange")),
                "mappings": value_mappings("lying", "supine", "prone", "left", "right", "upright"),
            },
            options={
                "showValue": "never",
                "mergeValues": True,
                "alignValue": "left",
                "rowHeight": 0.8,
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            },
            time_shift=shift,
        )
    )
    panels.append(
        panel(
            lay,
            "state-timeline",
            "Leg movements by side and kind",
            24,
            6,
            [
                target(
                    "A",
                    f'SELECT "state" FROM "leg_state" WHERE {SUBJ} AND $timeFilter GROUP BY "side"',
                    alias="$tag_side",
                )
            ],
            description="Each movement from onset to end: PLM (part of a periodic series), LM, long movement (> 10 s, "
            "15 s bilateral) or twitch (< 0.5 s). PLM series are shaded (annotation).",
            defaults={
                "color": {"mode": "fixed", "fixedColor": "transparent"},
                "mappings": value_mappings("plm", "lm", "long", "twitch", "rest"),
            },
            options={
                "showValue": "never",
                "mergeValues": False,
                "alignValue": "left",
                "rowHeight": 0.8,
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            },
            time_shift=shift,
        )
    )
    panels.append(
        panel(
            lay,
            "timeseries",
            "Activity envelope",
            16,
            8,
            [
                target(
                    "A",
                    f'SELECT max("activity_g") FROM "activity" WHERE {SUBJ} AND $timeFilter '
                    'GROUP BY time($__interval), "side" fill(null)',
                    alias="$tag_side peak",
                ),
                target(
                    "B",
                    f'SELECT mean("activity_g") FROM "activity" WHERE {SUBJ} AND $timeFilter '
                    'GROUP BY time($__interval), "side" fill(null)',
                    alias="$tag_side mean",
                ),
            ],
            description="Dynamic acceleration of each ankle per minute (gravity removed), in g.",
            defaults={
                "unit": "none",
                "custom": {
                    "drawStyle": "line",
                    "fillOpacity": 15,
                    "lineWidth": 1,
                    "spanNulls": False,
                    "axisLabel": "g",
                },
            },
            options={
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                "tooltip": {"mode": "multi"},
            },
            time_shift=shift,
        )
    )
    panels.append(
        panel(
            lay,
            "barchart",
            "PLMs per hour",
            8,
            8,
            [
                target(
                    "A",
                    f'SELECT "plm_count" AS "PLMs", "lm_count" AS "LMs", "twitch_count" AS "twitches" '
                    f'FROM "hourly" WHERE {SUBJ} AND $timeFilter',
                    fmt="table",
                )
            ],
            description="Counts per clock hour.",
            defaults={"color": {"mode": "palette-classic"}},
            options={
                "xField": "Time",
                "orientation": "vertical",
                "groupWidth": 0.7,
                "barWidth": 0.9,
                "showValue": "auto",
                "xTickLabelRotation": -45,
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            },
            time_shift=shift,
        )
    )
    lay.newline()
    panels += [
        stat(
            lay,
            "Missing data",
            f'SELECT last("missing_fraction") {nightq}',
            4,
            unit="percentunit",
            steps=thresholds((None, "green"), (0.1, "yellow"), (0.3, "red")),
            time_shift=shift,
            description="Share of the night without data from a sensor (dropped packets, sensor off).",
        ),
        panel(
            lay,
            "timeseries",
            "Missing data per minute",
            8,
            6,
            [
                target(
                    "A",
                    f'SELECT mean("missing_fraction") FROM "activity" WHERE {SUBJ} AND $timeFilter '
                    'GROUP BY time($__interval), "side" fill(null)',
                    alias="$tag_side",
                )
            ],
            defaults={"unit": "percentunit", "min": 0, "max": 1, "custom": {"drawStyle": "bars", "fillOpacity": 60}},
            time_shift=shift,
        ),
        panel(
            lay,
            "stat",
            "Sensor battery",
            4,
            6,
            [
                target(
                    "A",
                    f'SELECT last("battery_pct") FROM "sensor_status" WHERE {SUBJ} AND $timeFilter GROUP BY "side"',
                    alias="$tag_side",
                )
            ],
            defaults={
                "unit": "percent",
                "decimals": 0,
                "color": {"mode": "thresholds"},
                "thresholds": thresholds((None, "red"), (20.0, "yellow"), (40.0, "green")),
            },
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "none",
                "textMode": "value_and_name",
            },
            time_shift=shift,
        ),
        panel(
            lay,
            "table",
            "PLM series",
            8,
            6,
            [
                target(
                    "A",
                    f'SELECT "count", "mean_imi_s", "duration_s" FROM "plm_series" WHERE {SUBJ} AND $timeFilter',
                    fmt="table",
                )
            ],
            description="Each series: >= 4 candidate LMs with 10-90 s between onsets (WASM 2016).",
            defaults={"decimals": 1},
            overrides=[
                {"matcher": {"id": "byName", "options": "count"}, "properties": [{"id": "decimals", "value": 0}]}
            ],
            time_shift=shift,
        ),
    ]
    night_options = [{"text": "last night", "value": "0d"}] + [
        {"text": f"{n} night{'s' if n > 1 else ''} earlier", "value": f"{n}d"} for n in range(1, 14)
    ]
    night_var = {
        "name": "night",
        "label": "Night",
        "type": "custom",
        "query": ",".join(f"{o['text']} : {o['value']}" for o in night_options),
        "current": {"text": "last night", "value": "0d", "selected": True},
        "options": [{**o, "selected": i == 0} for i, o in enumerate(night_options)],
        "multi": False,
        "includeAll": False,
    }
    return dashboard(
        "plm-night",
        "PLM night",
        panels,
        [subject_variable(), night_var],
        [SERIES_ANNOTATION, NONWEAR_ANNOTATION, DIARY_ANNOTATION],
        "now-1d/d+12h",
        "now/d+12h",
        "One night: noon to noon. Pick the subject and how many nights back; or set any time range.",
    )


# -------------------------------------------------------------------------------------------- trends

TAG_LABELS = {
    "caffeine": "caffeine",
    "alcohol": "alcohol",
    "exercise": "exercise",
    "stretching": "stretching",
    "late_meal": "late meal",
    "medication": "medication",
    "poor_sleep": "poor sleep",
}


def trends_dashboard() -> dict[str, Any]:
    lay = Layout()
    panels = [text(lay, DISCLAIMER)]
    lay.newline()
    median_queries = [
        target(
            chr(ord("B") + k),
            f'SELECT median("plm_index") AS "7-night median" FROM "night" WHERE {SUBJ} '
            f"AND $timeFilter GROUP BY time(7d, {k}d) fill(none)",
            fmt="table",
        )
        for k in range(7)
    ]
    panels.append(
        panel(
            lay,
            "timeseries",
            "PLM index per night, with 7-night median",
            18,
            9,
            [
                target(
                    "A", f'SELECT "plm_index" AS "PLM index" FROM "night" WHERE {SUBJ} AND $timeFilter', fmt="table"
                ),
                *median_queries,
            ],
            description="Bars: PLM index of each night (red above 15/h). Line: median of 7 nights. InfluxQL has no "
            "moving median, so seven queries with GROUP BY time(7d, 0..6d) give the median of every "
            "7-day window; each point is drawn at its window's first day (see docs/dashboards.md).",
            defaults={
                "unit": "none",
                "decimals": 1,
                "color": {"mode": "thresholds"},
                "thresholds": PLM_STEPS,
                "custom": {
                    "drawStyle": "bars",
                    "fillOpacity": 70,
                    "gradientMode": "scheme",
                    "spanNulls": True,
                    "thresholdsStyle": {"mode": "dashed"},
                    "axisSoftMin": 0,
                    "axisLabel": "PLM / h",
                },
            },
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "7-night median"},
                    "properties": [
                        {"id": "custom.drawStyle", "value": "line"},
                        {"id": "custom.lineWidth", "value": 3},
                        {"id": "custom.fillOpacity", "value": 0},
                        {"id": "custom.gradientMode", "value": "none"},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}},
                    ],
                }
            ],
            options={
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                "tooltip": {"mode": "multi"},
            },
            transformations=[
                {"id": "merge", "options": {}},
                {"id": "sortBy", "options": {"sort": [{"field": "Time"}]}},
            ],
        )
    )
    panels.append(
        panel(
            lay,
            "stat",
            "Nights above 15/h, last 14 nights",
            6,
            9,
            [
                target(
                    "A",
                    f'SELECT count("plm_index") AS "above 15/h" FROM "night" WHERE {SUBJ} AND "plm_index" > 15 '
                    "AND time > now() - 14d",
                ),
                target(
                    "B",
                    f'SELECT count("plm_index") AS "nights recorded" FROM "night" WHERE {SUBJ} AND time > now() - 14d',
                ),
            ],
            description="Of the last 14 nights, how many were recorded and how many had a PLM index above 15/h. "
            "Persisting over two weeks is one of the reasons people are advised to see a doctor.",
            defaults={
                "decimals": 0,
                "color": {"mode": "thresholds"},
                "thresholds": thresholds((None, "blue")),
                "noValue": "0",
            },
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "above 15/h"},
                    "properties": [
                        {"id": "thresholds", "value": thresholds((None, "green"), (4.0, "yellow"), (8.0, "red"))}
                    ],
                }
            ],
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "none",
                "textMode": "value_and_name",
                "orientation": "vertical",
            },
        )
    )
    lay.newline()
    panels.append(
        panel(
            lay,
            "histogram",
            "Intermovement intervals (IMI)",
            8,
            8,
            [
                target(
                    "A", f'SELECT "imi_s" FROM "movement" WHERE {SUBJ} AND $timeFilter AND "imi_s" <= 120', fmt="table"
                )
            ],
            description="Onset-to-onset intervals between candidate LMs. PLMs fall within 10-90 s; an RLS pattern "
            "often peaks at 15-30 s.",
            defaults={"unit": "s", "custom": {"fillOpacity": 70}},
            options={
                "bucketSize": 2,
                "bucketOffset": 0,
                "combine": False,
                "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
            },
        )
    )
    panels.append(
        panel(
            lay,
            "timeseries",
            "Twitches and leg movements per night",
            8,
            8,
            [
                target(
                    "A",
                    f'SELECT "twitch_count" AS "twitches", "lm_count" AS "leg movements", "plm_count" AS "PLMs" '
                    f'FROM "night" WHERE {SUBJ} AND $timeFilter',
                    fmt="table",
                )
            ],
            defaults={
                "decimals": 0,
                "custom": {"drawStyle": "line", "pointSize": 6, "showPoints": "always", "spanNulls": True},
            },
            options={
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                "tooltip": {"mode": "multi"},
            },
        )
    )
    tag_queries = []
    for i, (tag, label) in enumerate(TAG_LABELS.items()):
        for j, flag in enumerate(("true", "false")):
            name = f"{label}: {'with' if flag == 'true' else 'without'}"
            tag_queries.append(
                target(
                    f"T{i}{j}",
                    f'SELECT mean("plm_index") AS "{name}" FROM "night" WHERE {SUBJ} AND "diary_{tag}" = {flag} '
                    "AND $timeFilter",
                )
            )
    panels.append(
        panel(
            lay,
            "barchart",
            "Mean PLM index on nights with and without each diary tag",
            8,
            8,
            tag_queries,
            description="Nights with a diary entry, split by tag. An association over few nights, not a cause: "
            "compare over many nights, and discuss medication effects with a doctor.",
            defaults={"decimals": 1, "unit": "none", "color": {"mode": "thresholds"}, "thresholds": PLM_STEPS},
            options={
                "orientation": "horizontal",
                "xField": "Field",
                "showValue": "always",
                "groupWidth": 0.8,
                "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
            },
            transformations=[
                {
                    "id": "reduce",
                    "options": {"reducers": ["lastNotNull"], "mode": "seriesToRows", "includeTimeField": False},
                }
            ],
        )
    )
    lay.newline()
    panels.append(
        panel(
            lay,
            "table",
            "Nights",
            24,
            8,
            [
                target(
                    "A",
                    f'SELECT "plm_index", "plms_index", "plm_count", "lm_count", "series_count", "time_in_bed_h", '
                    f'"twitch_count", "missing_fraction", "end_ms" FROM "night" WHERE {SUBJ} AND $timeFilter',
                    fmt="table",
                )
            ],
            description="One row per night (at noon of the evening it starts). Click a night to open it.",
            defaults={
                "decimals": 1,
                "links": [
                    {
                        "title": "Open this night",
                        "url": "/d/plm-night/plm-night?var-subject=$subject&var-night=0d"
                        "&from=${__value.time}&to=${__data.fields.end_ms}",
                    }
                ],
            },
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "plm_index"},
                    "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                        {"id": "color", "value": {"mode": "thresholds"}},
                        {"id": "thresholds", "value": PLM_STEPS},
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "missing_fraction"},
                    "properties": [{"id": "unit", "value": "percentunit"}],
                },
                {
                    "matcher": {"id": "byName", "options": "end_ms"},
                    "properties": [{"id": "decimals", "value": 0}, {"id": "custom.hidden", "value": True}],
                },
            ],
            options={"showHeader": True, "sortBy": [{"displayName": "Time", "desc": True}]},
        )
    )
    return dashboard(
        "plm-trends",
        "PLM trends",
        panels,
        [subject_variable()],
        [DIARY_ANNOTATION],
        "now-60d",
        "now",
        "Night-by-night PLM index over weeks, diary tags, IMI distribution.",
    )


# ------------------------------------------------------------------------------------------- sensors


def sensors_dashboard() -> dict[str, Any]:
    lay = Layout()
    status = f'FROM "sensor_status" WHERE {SUBJ} AND $timeFilter'
    panels = [
        panel(
            lay,
            "state-timeline",
            "Sensors online",
            24,
            5,
            [target("A", f'SELECT "state" {status} GROUP BY "side"', alias="$tag_side")],
            defaults={
                "color": {"mode": "fixed", "fixedColor": "text"},
                "mappings": value_mappings("online", "offline", "lost"),
            },
            options={
                "showValue": "auto",
                "mergeValues": True,
                "rowHeight": 0.8,
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            },
        ),
        panel(
            lay,
            "table",
            "Last data",
            12,
            6,
            [
                target(
                    "A",
                    f'SELECT last("activity_g") AS "activity_g" FROM "activity" WHERE {SUBJ} AND $timeFilter '
                    'GROUP BY "side"',
                    fmt="table",
                ),
                target(
                    "B",
                    f'SELECT last("state") AS "state", last("battery_pct") AS "battery_pct", '
                    f'last("rate_hz") AS "rate_hz" {status} GROUP BY "side"',
                    fmt="table",
                ),
            ],
            description="Time of the last activity sample and of the last status message per sensor.",
            defaults={"decimals": 1},
        ),
        panel(
            lay,
            "timeseries",
            "Battery",
            12,
            6,
            [
                target(
                    "A",
                    f'SELECT mean("battery_pct") {status} GROUP BY time($__interval), "side" fill(none)',
                    alias="$tag_side",
                )
            ],
            defaults={
                "unit": "percent",
                "min": 0,
                "max": 100,
                "color": {"mode": "palette-classic"},
                "thresholds": thresholds((None, "red"), (20.0, "transparent")),
                "custom": {"spanNulls": True, "thresholdsStyle": {"mode": "area"}},
            },
        ),
        panel(
            lay,
            "timeseries",
            "Sample rate",
            8,
            6,
            [
                target(
                    "A",
                    f'SELECT mean("rate_hz") {status} GROUP BY time($__interval), "side" fill(none)',
                    alias="$tag_side",
                )
            ],
            defaults={"unit": "hertz", "custom": {"spanNulls": True}},
        ),
        panel(
            lay,
            "timeseries",
            "Dropped samples (running count)",
            8,
            6,
            [
                target(
                    "A",
                    f'SELECT max("dropped_samples") {status} GROUP BY time($__interval), "side" fill(none)',
                    alias="$tag_side",
                )
            ],
            defaults={"decimals": 0, "custom": {"spanNulls": True}},
        ),
        panel(
            lay,
            "timeseries",
            "Detector: outbox depth",
            8,
            6,
            [
                target(
                    "A",
                    'SELECT max("outbox_depth") FROM "detector_health" WHERE $timeFilter '
                    'GROUP BY time($__interval), "instance" fill(none)',
                    alias="$tag_instance",
                )
            ],
            description="Lines waiting on disk for InfluxDB. Growing = the database is not accepting writes.",
            defaults={"decimals": 0, "custom": {"spanNulls": True}},
        ),
        panel(
            lay,
            "timeseries",
            "Detector: bad payloads (running count by reason)",
            12,
            6,
            [
                target(
                    "A",
                    'SELECT max(/^bad_/) FROM "detector_health" WHERE $timeFilter '
                    'GROUP BY time($__interval), "instance" fill(none)',
                    alias="$tag_instance $col",
                )
            ],
            description="Messages the detector refused and counted, one line per reason (bad_<reason>, e.g. "
            "bad_payload, bad_clock, bad_diary; docs/reliability.md lists them). bad_retained: a retained sample "
            "batch or diary note, ignored because the broker would deliver it again on every reconnect.",
            defaults={"decimals": 0, "custom": {"spanNulls": True}},
        ),
        stat(
            lay,
            "Detector: points InfluxDB refused",
            'SELECT last("dead_letters") FROM "detector_health" WHERE $timeFilter',
            4,
            decimals=0,
            steps=thresholds((None, "green"), (1.0, "red")),
            h=6,
            description="Points InfluxDB refused (kept in the outbox's dead-letter table for inspection).",
        ),
        stat(
            lay,
            "Detector: write retries",
            'SELECT last("write_retries") FROM "detector_health" WHERE $timeFilter',
            4,
            decimals=0,
            h=6,
        ),
        stat(
            lay,
            "Detector: messages dead-lettered",
            'SELECT max("messages_dead_lettered") FROM "detector_health" WHERE $timeFilter',
            4,
            decimals=0,
            steps=thresholds((None, "green"), (1.0, "red")),
            h=6,
            description="A message that could not be applied was set aside in the detector's dead-letter table, and "
            "processing went on; see docs/reliability.md (`plm detect --dead-letters` lists them). Any non-zero value "
            "is a bug or an attack worth looking at. Shows the highest total (kept across restarts) any detector "
            "reported in the time range.",
        ),
    ]
    return dashboard(
        "plm-sensors",
        "PLM sensors",
        panels,
        [subject_variable()],
        [],
        "now-24h",
        "now",
        "Sensor connection, battery, sample rate, data loss, and the detector's health.",
        refresh="1m",
    )


DASHBOARDS = {"night.json": night_dashboard, "trends.json": trends_dashboard, "sensors.json": sensors_dashboard}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (OUT / name).write_text(content, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
