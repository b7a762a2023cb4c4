"""What the live detector publishes over MQTT besides InfluxDB points (those are detector/storage/schema.py):
each movement, the night summary (retained) and Home Assistant's discovery configs (retained).

Pure builders: topic and payload bytes out, so the core returns them as effects and tests compare bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from detector.scoring.scorer import MovementEvent
from plm import wire

NIGHT_RESULT_OMITS = ("series", "imis", "per_hour", "gaps")  # long lists: InfluxDB has them, a phone does not
HA_SENSORS = (("plm_index", "PLM index", "/h"), ("plm_count", "PLMs", None), ("lm_count", "Leg movements", None))


def movement_payload(event: MovementEvent) -> bytes:
    """``plm/v1/<subject>/_movement``: one final movement."""
    return json.dumps(event.to_dict()).encode()


def night_payload(fields: Mapping[str, Any], night_start_s: float) -> bytes:
    """``plm/v1/<subject>/_night`` (retained): the night summary as it stands, without the long lists."""
    doc = {k: v for k, v in fields.items() if k not in NIGHT_RESULT_OMITS}
    doc["night_start"] = night_start_s
    return json.dumps(doc).encode()


def discovery_configs(subject: str) -> list[tuple[str, bytes]]:
    """Home Assistant MQTT discovery: last night's PLM index, PLM count and LM count appear as sensors of one
    device per subject, read from the retained ``_night`` topic (``homeassistant/sensor/plm_<s>/<key>/config``,
    the topics the broker's ACL gives the viewer of that subject: plm/ops/broker.py)."""
    device = {"identifiers": [f"plm_{subject}"], "name": f"Leg movements {subject}", "manufacturer": "plm-monitor"}
    configs = []
    for key, name, unit in HA_SENSORS:
        config = {
            "name": name,
            "unique_id": f"plm_{subject}_{key}",
            "state_topic": wire.night_topic(subject),
            "value_template": f"{{{{ value_json.{key} | round(1) if value_json.{key} is not none else none }}}}",
            "state_class": "measurement",
            "device": device,
        }
        if unit:
            config["unit_of_measurement"] = unit
        configs.append((f"homeassistant/sensor/plm_{subject}/{key}/config", json.dumps(config).encode()))
    return configs
