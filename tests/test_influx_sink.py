"""Schema builders and the durable InfluxDB sink, against real influxd 1.x (v1 /write) and
victoria-metrics (/api/v2/write)."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.storage import schema
from detector.storage.influx import InfluxSink
from plm.config import InfluxSettings

T0 = int(time.time()) - 3600  # recent: victoria-metrics drops points older than its retention
FAST = {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "auth_backoff_s": 0.5}


# ---------------------------------------------------------------- a small line-protocol parser (the spec)


def _unescape(text: str, chars: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in chars:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _split(text: str, sep: str, quotes: bool = False, maxsplit: int = -1) -> list[str]:
    """Split at unescaped ``sep``; with ``quotes``, a '"' right after '=' opens a string (fields only)."""
    parts, current, escaped, quoted = [], [], False, False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"' and quotes and current and current[-1] == "=":
            quoted = True
        elif ch == sep and maxsplit != 0:
            parts.append("".join(current))
            current = []
            maxsplit -= 1
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    assert "\n" not in line and "\r" not in line
    head, rest = _split(line, " ", maxsplit=1)
    fields, ts = _split(rest, " ", quotes=True)
    measurement, *tag_parts = _split(head, ",")
    tags = {}
    for part in tag_parts:
        key, value = _split(part, "=")
        tags[_unescape(key, ",= ")] = _unescape(value, ",= ")
    parsed: dict[str, object] = {}
    for part in _split(fields, ",", quotes=True):
        key, value = _split(part, "=", maxsplit=1)
        key = _unescape(key, ",= ")
        if value.startswith('"'):
            assert value.endswith('"') and len(value) >= 2
            parsed[key] = _unescape(value[1:-1], '"\\')
        elif value in ("true", "false"):
            parsed[key] = value == "true"
        elif value.endswith("i"):
            parsed[key] = int(value[:-1])
        else:
            parsed[key] = float(value)
    return _unescape(measurement, ", "), tags, parsed, int(ts)


# ---------------------------------------------------------------- escaping and builders (no server)


def test_escaping_of_names_tags_and_strings():
    text = 'say "hi", a=b \\ c\nnext\r\nline'
    line = schema.line("my meas,x", {"sub ject": "a b,c=d"}, {"fi eld,=": text, "n": 3, "f": 2.0, "b": True}, 42)
    assert "\n" not in line and "\r" not in line
    measurement, tags, fields, ts = parse_line(line)
    assert measurement == "my meas,x"
    assert tags == {"sub ject": "a b,c=d"}
    assert fields == {"fi eld,=": schema.stored_string(text), "n": 3, "f": 2.0, "b": True}
    assert schema.stored_string(text) == 'say "hi", a=b \\ c\\nnext\\nline'
    assert ts == 42


@pytest.mark.parametrize("bad", ["a\\b", "line\nbreak", "", "tab\there"])
def test_identifiers_that_line_protocol_cannot_carry_are_refused(bad):
    with pytest.raises(ValueError):
        schema.line("m", {"subject": bad}, {"f": 1}, 1)
    with pytest.raises(ValueError):
        schema.line(bad or "", {}, {"f": 1}, 1)


def test_builders_refuse_bad_values_with_clear_errors():
    with pytest.raises(ValueError, match="side"):
        schema.movement_point("s", T0, 1.0, "middle", "lm", False)
    with pytest.raises(ValueError, match="finite"):
        schema.night_point("s", T0, {"plm_index": float("nan")}, False)
    with pytest.raises(ValueError, match="unknown field"):
        schema.night_point("s", T0, {"plm_idx": 3.0}, False)
    with pytest.raises(ValueError, match="duration"):
        schema.movement_point("s", T0, 0.0, "left", "lm", False)
    with pytest.raises(ValueError, match="at least one field"):
        schema.activity_point("s", "left", T0)


def test_field_types_are_fixed_whatever_python_type_comes_in():
    a = parse_line(schema.night_point("s", T0, {"plm_index": 12, "lm_count": 40.0}, False))[2]
    b = parse_line(schema.night_point("s", T0, {"plm_index": 12.5, "lm_count": 41}, True))[2]
    assert type(a["plm_index"]) is float and type(b["plm_index"]) is float
    assert type(a["lm_count"]) is int and type(b["lm_count"]) is int
    assert "12.0" in schema.night_point("s", T0, {"plm_index": 12}, False)  # never "12i"


def test_movement_point_identity_ignores_the_plm_flag():
    before = schema.movement_point("s", T0 + 0.1234, 2.5, "left", "lm", False, candidate=True)
    after = schema.movement_point("s", T0 + 0.1234, 2.5, "left", "lm", True, 21.0, 7, True)
    m1, t1, _f1, ts1 = parse_line(before)
    m2, t2, f2, ts2 = parse_line(after)
    assert (
        (m1, t1, ts1)
        == (m2, t2, ts2)
        == ("movement", {"subject": "s", "side": "left", "kind": "lm"}, (T0 * 1000) + 123)
    )
    assert f2["end_ms"] == ts2 + 2500 and f2["plm"] is True and f2["plm_n"] == 1 and f2["series_id"] == 7


def test_builders_accept_scorer_objects():
    from plm.rules import LegMovement, score_events

    events = [LegMovement(T0 + 20.0 * i, 2.0, "left") for i in range(5)]
    score = score_events(events)
    lines = [schema.movement_from("s", m) for m in score.movements]
    lines += [schema.series_from("s", s, final=True) for s in score.series]
    assert sum(parse_line(x)[2].get("plm") is True for x in lines) == 5
    assert parse_line(lines[-1])[0] == "plm_series" and parse_line(lines[-1])[2]["count"] == 5
    assert [
        parse_line(x)[2] == parse_line(y)[2]
        for x, y in zip(lines[:5], [schema.movement_from("s", m.to_dict()) for m in score.movements], strict=True)
    ] == [True] * 5


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_ident = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), min_size=1, max_size=20)


@given(tag=_ident, text=_text, measurement=_ident.filter(lambda s: not s.startswith("#")))
@settings(max_examples=300, deadline=None)
def test_any_string_round_trips_through_the_line_protocol_spec(tag, text, measurement):
    line = schema.line(measurement, {"subject": tag}, {"text": text, "n": 1}, 5)
    assert "\n" not in line and "\r" not in line
    parsed = parse_line(line)
    assert parsed == (measurement, {"subject": tag}, {"text": schema.stored_string(text), "n": 1}, 5)
    assert schema.series_key(line).endswith(" n,text 5")


# ---------------------------------------------------------------- v1 /write against influxd 1.6.7


def v1_settings(server, **kw) -> InfluxSettings:
    return InfluxSettings(url=server.url, api=1, bucket=server.database, **kw)


def rows(server, q: str, auth=None) -> list[dict]:
    result = server.query(q, database=server.database, auth=auth)["results"][0]
    out = []
    for series in result.get("series", []):
        for values in series["values"]:
            out.append(dict(zip(series["columns"], values, strict=True)) | series.get("tags", {}))
    return out


@pytest.mark.services
def test_v1_writes_movements_and_night_and_rewrites_on_plm_flip(influxd, tmp_path):
    subject = "v1-rewrite"
    onset = T0 + 0.25
    with InfluxSink(v1_settings(influxd), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put([schema.movement_point(subject, onset, 2.0, "left", "lm", False, candidate=True)])
        sink.put([schema.movement_point(subject, onset + 30, 3.0, "right", "lm", False, candidate=True)])
        sink.put([schema.night_point(subject, T0, {"plm_index": 0.0, "lm_count": 2, "periodicity_index": None}, False)])
        assert sink.flush(10)
        # later the first movement joins a series: rewritten with the same tags and time
        sink.put([schema.movement_point(subject, onset, 2.0, "left", "lm", True, None, 1, True)])
        sink.put([schema.night_point(subject, T0, {"plm_index": 9.5, "lm_count": 2, "plm_count": 1}, True)])
        assert sink.flush(10)
        assert sink.metrics().sent == 5 and sink.metrics().depth == 0
    moves = rows(influxd, f"SELECT * FROM movement WHERE subject = '{subject}'")
    assert len(moves) == 2
    first = next(m for m in moves if m["side"] == "left")
    assert first["time"] == T0 * 1000 + 250 and first["plm"] is True and first["series_id"] == 1
    assert first["end_ms"] == T0 * 1000 + 2250 and first["kind"] == "lm"
    night = rows(influxd, f"SELECT * FROM night WHERE subject = '{subject}'")
    assert len(night) == 1 and night[0]["plm_index"] == 9.5 and night[0]["final"] is True


@pytest.mark.services
def test_v1_diary_flags_let_influxql_compare_nights(influxd, tmp_path):
    subject = "v1-diary"
    nights = [T0 - 86400 * k for k in range(1, 5)]
    with InfluxSink(v1_settings(influxd), tmp_path / "o.sqlite", **FAST) as sink:
        for k, start in enumerate(nights):
            sink.put([schema.night_point(subject, start, {"plm_index": 10.0 + 10 * (k % 2)}, False)])
            sink.put(schema.diary_points(subject, start, f'night {k}\nslept "badly"', ["caffeine"] if k % 2 else []))
            # the live summary keeps being rewritten after the diary entry: the flags must survive
            sink.put([schema.night_point(subject, start, {"plm_index": 10.0 + 10 * (k % 2)}, True)])
        assert sink.flush(10)
    with_c = rows(influxd, f"SELECT mean(plm_index) FROM night WHERE subject = '{subject}' AND diary_caffeine = true")
    without = rows(influxd, f"SELECT mean(plm_index) FROM night WHERE subject = '{subject}' AND diary_caffeine = false")
    assert with_c[0]["mean"] == 20.0 and without[0]["mean"] == 10.0
    diary = rows(influxd, f"SELECT text, tags FROM diary WHERE subject = '{subject}' ORDER BY time DESC")
    assert diary[0]["text"] == 'night 0\\nslept "badly"' and diary[1]["tags"] == "caffeine"


@pytest.mark.services
@pytest.mark.parametrize(
    "text", ['quote " and \\ backslash', "comma, equals= space", "trailing backslash \\", "line\nbreak", "ünï 😀"]
)
def test_v1_string_escaping_round_trips_through_influxd(influxd, tmp_path, text):
    subject = 'esc "q" x,y=z'
    ts = T0 + hash(text) % 1000
    with InfluxSink(v1_settings(influxd), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put([schema.diary_point(subject, ts, text, [])])
        assert sink.flush(10)
        assert sink.metrics().dead_letters == 0
    got = rows(influxd, f"SELECT text FROM diary WHERE subject = 'esc \"q\" x,y=z' AND time = {to_ns(ts)}")
    assert [r["text"] for r in got] == [schema.stored_string(text)]


def to_ns(seconds: float) -> int:
    return schema.to_ms(seconds) * 1_000_000


@pytest.mark.services
def test_bad_lines_go_to_dead_letters_and_good_ones_arrive(influxd, tmp_path):
    subject = "v1-bad"
    good = [schema.movement_point(subject, T0 + 20 * i, 2.0, "left", "lm", False) for i in range(9)]
    type_conflict = f'movement,kind=lm,side=left,subject={subject} duration_s="long" {(T0 + 5) * 1000}'
    unparsable = f"movement,subject={subject} duration_s=1.0 not-a-time"
    batch = [*good[:3], type_conflict, *good[3:6], unparsable, *good[6:]]
    with InfluxSink(v1_settings(influxd), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put(batch)
        assert sink.flush(15)
        letters = sink.dead_letters()
    assert sorted(d.line for d in letters) == sorted([type_conflict, unparsable])
    assert all("400" in d.error for d in letters)
    assert rows(influxd, f"SELECT count(duration_s) FROM movement WHERE subject = '{subject}'")[0]["count"] == 9


@pytest.mark.services
def test_outage_keeps_points_queued_and_delivers_exactly_once(influxd_factory, tmp_path):
    server = influxd_factory()
    subject = "outage"
    with InfluxSink(v1_settings(server), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put([schema.movement_point(subject, T0, 2.0, "left", "lm", False)])
        assert sink.flush(10)
        server.stop()
        lines = [
            schema.movement_point(subject, T0 + 20 * i, 2.0, "left", "lm", i < 4, 20.0 if 0 < i < 4 else None)
            for i in range(50)
        ]
        sink.put(lines)
        time.sleep(0.5)
        assert sink.depth() > 0
        assert sink.metrics().retries >= 1 and sink.last_error
        server.start()
        assert sink.flush(15)
    got = rows(server, f"SELECT plm, duration_s FROM movement WHERE subject = '{subject}'")
    assert len(got) == 50  # the first point was re-sent as part of the night: overwritten, not duplicated
    assert sum(r["plm"] for r in got) == 4


@pytest.mark.services
def test_outbox_drains_after_restart(influxd_factory, tmp_path):
    server = influxd_factory()
    server.stop()
    outbox = tmp_path / "o.sqlite"
    lines = [schema.night_point("restart", T0 - 86400 * k, {"plm_index": float(k)}, True) for k in range(20)]
    sink = InfluxSink(v1_settings(server), outbox, **FAST)
    sink.put(lines)
    assert not sink.flush(0.3)
    sink.close()
    server.start()
    with InfluxSink(v1_settings(server), outbox, **FAST) as again:
        assert again.depth() == 20
        assert again.flush(15)
    assert rows(server, "SELECT count(plm_index) FROM night WHERE subject = 'restart'")[0]["count"] == 20


@pytest.fixture
def auth_influxd(influxd_factory):
    return influxd_factory(auth=True)


@pytest.mark.services
def test_wrong_credentials_lose_nothing_and_never_log_the_secret(auth_influxd, tmp_path, caplog):
    server = auth_influxd
    server.query("CREATE USER w WITH PASSWORD 'right-pass-7f3a'")
    server.query(f"GRANT WRITE ON {server.database} TO w")
    secret = "wrong-pass-9c1e%&"
    outbox = tmp_path / "o.sqlite"
    lines = [schema.movement_point("auth", T0 + 20 * i, 2.0, "right", "lm", False) for i in range(5)]
    caplog.set_level(logging.DEBUG)
    with InfluxSink(v1_settings(server, username="w", password=secret), outbox, **FAST) as sink:
        sink.put(lines)
        assert not sink.flush(1.0)
        assert sink.depth() == 5
        assert "401" in (sink.last_error or "")
        assert secret not in (sink.last_error or "")
    assert "influx.password" in caplog.text
    assert rows(server, "SELECT count(duration_s) FROM movement WHERE subject = 'auth'") == []
    with InfluxSink(v1_settings(server, username="w", password="right-pass-7f3a"), outbox, **FAST) as sink:
        assert sink.flush(10)
    assert rows(server, "SELECT count(duration_s) FROM movement WHERE subject = 'auth'")[0]["count"] == 5
    # the server down: connection errors must not leak it either
    server.stop()
    with InfluxSink(v1_settings(server, username="w", password=secret), outbox, **FAST) as sink:
        sink.put(lines[:1])
        assert not sink.flush(0.5)
    assert caplog.text and secret not in caplog.text
    for encoded in ("wrong-pass-9c1e%25%26", "d3Jvbmct"):  # url-quoted, start of base64("wrong-...") prefix
        assert encoded not in caplog.text


# ---------------------------------------------------------------- v2 /api/v2/write against victoria-metrics


def v2_settings(server, **kw) -> InfluxSettings:
    return InfluxSettings(url=server.url, api=2, bucket="plm", org="plm", **kw)


@pytest.mark.services
def test_v2_writes_through_influxdb_client(victoria, tmp_path):
    subject = "v2-sub"
    with InfluxSink(v2_settings(victoria, token="tok-123"), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put([schema.movement_point(subject, T0 + 20 * i, 2.0 + i, "left", "lm", False) for i in range(4)])
        sink.put([schema.movement_point(subject, T0, 2.0, "left", "lm", True, None, 3, True)])
        sink.put([schema.night_point(subject, T0, {"plm_index": 7.25, "lm_count": 4}, False)])
        assert sink.flush(10)
        assert sink.metrics().sent >= 6 and sink.metrics().dead_letters == 0
    got = victoria.export(f'movement_duration_s{{subject="{subject}"}}')
    assert len(got) == 1 and got[0]["metric"]["side"] == "left" and got[0]["metric"]["kind"] == "lm"
    # victoria-metrics keeps both samples of a rewritten point (InfluxDB overwrites): compare what is there
    samples = sorted(zip(got[0]["timestamps"], got[0]["values"], strict=True))
    assert sorted(set(samples)) == [((T0 + 20 * i) * 1000, 2.0 + i) for i in range(4)]
    plm = victoria.export(f'movement_plm_n{{subject="{subject}"}}')
    at_onset = {v for t, v in zip(plm[0]["timestamps"], plm[0]["values"], strict=True) if t == T0 * 1000}
    assert at_onset == {0, 1}  # the first write and its rewrite both reached the server
    night = victoria.export(f'night_plm_index{{subject="{subject}"}}')
    assert night[0]["values"] == [7.25] and night[0]["timestamps"] == [T0 * 1000]


@pytest.mark.services
def test_v2_server_down_keeps_data_and_hides_the_token(victoria_factory, tmp_path, caplog):
    server = victoria_factory()
    server.stop()
    token = "sekret-token-42"
    caplog.set_level(logging.DEBUG)
    outbox = tmp_path / "o.sqlite"
    with InfluxSink(v2_settings(server, token=token), outbox, **FAST) as sink:
        sink.put([schema.night_point("v2-down", T0, {"plm_index": 1.5}, False)])
        assert not sink.flush(0.5)
        assert sink.depth() == 1 and sink.retries >= 1
    assert caplog.text and token not in caplog.text
    server.start()
    with InfluxSink(v2_settings(server, token=token), outbox, **FAST) as sink:
        assert sink.flush(10)
    assert server.export('night_plm_index{subject="v2-down"}')[0]["values"] == [1.5]


def _documented_queries() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "influx-schema.md").read_text()
    block = text.split("```sql", 1)[1].split("```", 1)[0]
    queries: list[str] = []
    for raw in block.splitlines():
        if not raw.strip() or raw.startswith("--"):
            continue
        if raw.startswith(" ") and queries:
            queries[-1] += " " + raw.strip()
        else:
            queries.append(raw.strip())
    return queries


@pytest.mark.services
def test_documented_grafana_queries_run_on_real_data(influxd, tmp_path):
    from plm.rules import LegMovement, score_events

    subject = "grafana"
    start = T0 - 8 * 3600
    events = [LegMovement(start + 600 + 25.0 * i, 2.0, "left" if i % 3 else "right") for i in range(6)]
    events.append(LegMovement(start + 1200, 12.0, "left"))
    score = score_events(events)
    lines: list[str] = []
    for m in score.movements:
        lines.append(schema.movement_from(subject, m))
        lines += schema.leg_state_points(subject, m.onset, m.duration, m.side, m.kind, m.plm)
    lines += [schema.series_from(subject, s, final=True) for s in score.series]
    for k in range(4):
        night = start - 86400 * k
        lines.append(schema.night_point(subject, night, {"plm_index": 5.0 + 10 * (k % 2), "series_count": 1}, True))
        lines += schema.diary_points(subject, night, "", ["caffeine"] if k % 2 else ["exercise"])
    with InfluxSink(v1_settings(influxd), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put(lines)
        assert sink.flush(10) and sink.metrics().dead_letters == 0
    time_filter = f"time >= {(start - 5 * 86400) * 1000}ms AND time <= {(T0 + 3600) * 1000}ms"
    queries = _documented_queries()
    assert len(queries) >= 6
    results = {}
    for q in queries:
        q = q.replace("$timeFilter", time_filter).replace("$subject", subject).replace("$__interval", "1m")
        answer = influxd.query(q, database=influxd.database)["results"][0]
        assert "error" not in answer, (q, answer)
        assert answer.get("series"), f"no data for documented query: {q}"
        results[q] = answer["series"]
    states = next(s for q, s in results.items() if "leg_state" in q)
    assert {tuple(sorted(s["tags"].items())) for s in states} == {(("side", "left"),), (("side", "right"),)}
    series_rows = next(s for q, s in results.items() if "plm_series" in q)[0]
    assert series_rows["columns"] == ["time", "end_ms", "text"] and series_rows["values"][0][2] == 6
    caffeine = next(s for q, s in results.items() if 'diary_caffeine" = true' in q)[0]["values"][0][1]
    assert caffeine == 15.0


@pytest.mark.services
def test_when_everything_is_refused_lines_stay_queued_instead_of_all_becoming_dead_letters(
    influxd, tmp_path, monkeypatch
):
    import detector.storage.influx

    monkeypatch.setattr(detector.storage.influx, "MAX_REJECTS_IN_A_ROW", 3)
    subject = "all-bad"
    good = schema.night_point(subject, T0, {"plm_index": 1.0}, False)
    bad = [f'night,subject={subject} plm_index="x{i}" {(T0 + i) * 1000}' for i in range(1, 9)]
    with InfluxSink(v1_settings(influxd), tmp_path / "o.sqlite", **FAST) as sink:
        sink.put([good])
        assert sink.flush(10)
        sink.put(bad)
        assert not sink.flush(1.0)
        assert len(sink.dead_letters()) == 3 and sink.depth() == 5
        sink.put([schema.night_point(subject, T0, {"plm_index": 2.0}, True)])  # queued behind the bad ones
        assert sink.depth() == 6
