"""`plm note` on a plain set-up: Debian's InfluxDB 1.x (no v2 write API) with no `influx.api` setting, run
from any directory. The note must land, the API be found by asking the server, and an undelivered note wait
in the user's data directory, not in a `var/` folder of the current directory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from detector.report_cli import note_outbox
from detector.storage.influx import InfluxSink, is_v1_only, server_version
from plm.cli import main
from plm.config import InfluxSettings, load_settings
from plm.ops.localservices import free_port


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no PLM_* settings, XDG_DATA_HOME in tmp, the current directory a fresh one."""
    import os

    for key in [k for k in os.environ if k.startswith("PLM_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return home


@pytest.mark.services
def test_sink_finds_the_v1_api_of_an_influxdb_1x(influxd, tmp_path: Path, caplog) -> None:
    settings = InfluxSettings(url=influxd.url, bucket=influxd.database)  # api left at its default, 2
    assert settings.api == 2
    assert server_version(settings).startswith("1.") and is_v1_only(settings)
    caplog.set_level(logging.INFO, logger="detector.storage.influx")
    with InfluxSink(settings, tmp_path / "o.sqlite") as sink:
        sink.put(["api_probe,subject=zed v=1i 1709300000000"])
        assert sink.flush(10), sink.last_error
    said = [r.getMessage() for r in caplog.records if "/api/v2/write answered 404" in r.getMessage()]
    assert len(said) == 1 and "PLM_INFLUX__API=1" in said[0]
    rows = influxd.query('SELECT "v" FROM "api_probe"', database=influxd.database)["results"][0]["series"]
    assert rows[0]["values"] == [[1709300000000, 1]]


@pytest.mark.services
def test_plm_note_works_against_influxdb_1x_without_any_api_setting(
    influxd, data_home: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLM_INFLUX__URL", influxd.url)  # the only setting: no influx.api, no state_dir
    code = main(["note", "--subject", "nora", "--tz", "UTC", "--time", "2024-03-01T21:00", "coffee after 18:00"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "noted for the night of Fri 01 Mar 2024 (caffeine)" in out
    assert "did not answer" not in err and "refuses every write" not in err
    rows = influxd.query('SELECT "text" FROM "diary" WHERE "subject" = \'nora\'', database="plm")
    assert rows["results"][0]["series"][0]["values"][0][1] == "coffee after 18:00"
    assert not (Path.cwd() / "var").exists(), "nothing is written into the current directory"
    assert (data_home / "plm-monitor" / "diary-outbox.sqlite").is_file(), "the outbox is in the user's data dir"


def test_undelivered_note_waits_in_the_data_dir_and_the_message_does_not_contradict_itself(
    data_home: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("PLM_INFLUX__URL", url)
    monkeypatch.setenv("PLM_INFLUX__TIMEOUT_S", "1")
    monkeypatch.setattr("detector.report_cli.NOTE_FLUSH_S", 1.0)
    code = main(["note", "--subject", "nora", "--tz", "UTC", "--time", "2024-03-01T21:00", "stretched"])
    err = capsys.readouterr().err
    outbox = data_home / "plm-monitor" / "diary-outbox.sqlite"
    assert code == 1
    message = [line for line in err.splitlines() if line.startswith("plm note:")]
    assert len(message) == 1, err
    assert message[0].startswith(f"plm note: the note did not reach InfluxDB at {url} (")
    assert "Connection refused" in message[0], "why, in the same sentence"
    assert message[0].endswith(f"); it is kept in {outbox} and sent with the next `plm note`.")
    assert outbox.is_file() and not (Path.cwd() / "var").exists()


def test_a_configured_state_dir_still_holds_the_outbox(data_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "plm.toml"
    config.write_text(f'[detector]\nstate_dir = "{tmp_path}/state"\n')
    assert note_outbox(load_settings(config)) == tmp_path / "state" / "diary-outbox.sqlite"
    assert note_outbox(load_settings()) == data_home / "plm-monitor" / "diary-outbox.sqlite"
