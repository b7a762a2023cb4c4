"""Regenerate docs/sample-night-report.html and .png: 14 simulated nights through the pipeline into a real
influxd, diary notes, then ``plm report`` on the last (severe RLS) night.

    python tests/make_sample_report.py        # needs influxd (apt-get install influxdb) and matplotlib

"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_fill import FillResult, night_lines

from detector.storage.influx import InfluxSink
from plm.cli import main
from plm.config import InfluxSettings
from plm.ops.localservices import Influxd1

ROOT = Path(__file__).resolve().parents[1]
LAST_NIGHT = dt.date(2024, 3, 14)
PLAN = [  # (profile, hours, note)
    ("rls-moderate", 3, "coffee after 18:00"),
    ("rls-severe", 3, None),
    ("rls-moderate", 3, "gym in the evening"),
    ("mild", 3, "stretched before bed"),
    ("rls-severe", 3, "two glasses of wine"),
    ("rls-moderate", 3, None),
    ("rls-severe", 3, "late dinner, slept badly"),
    ("rls-moderate", 3, None),
    ("rls-severe", 3, "started a new medication (antihistamine for a cold)"),
    ("rls-severe", 3, None),
    ("rls-severe", 3, "slept badly"),
    ("rls-moderate", 3, "stretching, no coffee"),
    ("rls-severe", 3, None),
    ("rls-severe", 8, "legs restless all evening"),
]


def main_() -> int:
    tz = "UTC"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = Influxd1(workdir=work / "influxd")
        server.start()
        try:
            settings = InfluxSettings(url=server.url, api=1, bucket=server.database)
            result = FillResult("sample")
            with InfluxSink(settings, work / "outbox.sqlite") as sink:
                for n, (profile, hours, note) in enumerate(PLAN):
                    day = LAST_NIGHT - dt.timedelta(days=len(PLAN) - 1 - n)
                    start = dt.datetime.combine(day, dt.time(22, 40), dt.UTC).timestamp()
                    lines, filled = night_lines("sample", profile, 100 + n, start, hours, note)
                    sink.put(lines)
                    result.nights.append(filled)
                    print(f"{day} {profile:13s} PLM index {filled.summary['plm_index']:.1f}")
                assert sink.flush(120), "influxd did not take the lines"
            config = work / "plm.toml"
            config.write_text(f'[influx]\nurl = "{server.url}"\napi = 1\n')
            for suffix in ("html", "png"):
                out = ROOT / "docs" / f"sample-night-report.{suffix}"
                args = ["--config", str(config), "report", "--subject", "sample", "--tz", tz]
                code = main([*args, "--night", LAST_NIGHT.isoformat(), "--out", str(out)])
                if code:
                    return code
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main_())
