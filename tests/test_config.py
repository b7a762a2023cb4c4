"""Configuration: TOML file and environment, env wins, bad values named by key, secrets hidden."""

from __future__ import annotations

import pytest

from plm.config import ConfigError, load_settings

TOML = """
log_level = "debug"
[mqtt]
url = "mqtts://broker.local:8883"
username = "collector-alice"
password = "file-password"
[influx]
url = "http://influx:8086/"
api = 1
username = "writer"
password = "file-influx-password"
bucket = "nights"
[[subjects]]
id = "alice"
sensors = [
  { id = "left-ankle", side = "left", driver = "polar_pmd", name = "Polar Sense" },
  { id = "right-ankle", side = "right", driver = "witmotion", address = "AA:BB:CC:DD:EE:FF" },
]
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("PLM_"):
            monkeypatch.delenv(key)


def test_toml_file_is_read(tmp_path):
    path = tmp_path / "plm.toml"
    path.write_text(TOML)
    settings = load_settings(path)
    assert settings.log_level == "DEBUG"
    assert settings.mqtt.tls and settings.mqtt.port == 8883 and settings.mqtt.host == "broker.local"
    assert settings.influx.api == 1 and settings.influx.url == "http://influx:8086"
    alice = settings.subject("alice")
    assert alice is not None
    assert [(s.id, s.side, s.driver) for s in alice.sensors] == [
        ("left-ankle", "left", "polar_pmd"),
        ("right-ankle", "right", "witmotion"),
    ]


def test_environment_wins_over_file_and_merges(tmp_path, monkeypatch):
    path = tmp_path / "plm.toml"
    path.write_text(TOML)
    monkeypatch.setenv("PLM_MQTT__PASSWORD", "env-password")
    monkeypatch.setenv("PLM_INFLUX__BUCKET", "from-env")
    settings = load_settings(path)
    assert settings.mqtt.password.get_secret_value() == "env-password"
    assert settings.mqtt.username == "collector-alice"  # untouched keys still come from the file
    assert settings.influx.bucket == "from-env"


def test_config_file_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "plm.toml"
    path.write_text(TOML)
    monkeypatch.setenv("PLM_CONFIG", str(path))
    assert load_settings().influx.bucket == "nights"


def test_numbers_from_environment(monkeypatch):
    monkeypatch.setenv("PLM_INFLUX__API", "1")
    monkeypatch.setenv("PLM_MQTT__KEEPALIVE_S", "60")
    settings = load_settings()
    assert settings.influx.api == 1 and settings.mqtt.keepalive_s == 60


def test_subjects_as_json_in_environment(monkeypatch):
    monkeypatch.setenv("PLM_SUBJECTS", '[{"id": "bob", "sensors": [{"id": "l", "side": "left"}]}]')
    assert load_settings().subjects[0].sensors[0].side == "left"


def test_defaults_without_any_configuration():
    settings = load_settings()
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883" and settings.influx.api == 2
    assert settings.secrets() == []


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"PLM_MQTT__URL": "http://broker"}, "mqtt.url: expected mqtt://"),
        ({"PLM_MQTT__URL": "mqtt://broker:port"}, "mqtt.url"),
        ({"PLM_INFLUX__API": "3"}, "influx.api"),
        ({"PLM_INFLUX__USERNAME": "u"}, "username and password go together"),
        ({"PLM_MQTT__KEEPALIVE_S": "1"}, "mqtt.keepalive_s"),
        ({"PLM_LOG_LEVEL": "loud"}, "log_level"),
        ({"PLM_SUBJECTS": '[{"id": "a/b"}]'}, "subject id"),
        ({"PLM_SUBJECTS": '[{"id": "a", "sensors": [{"id": "x", "side": "middle"}]}]'}, "side"),
        (
            {"PLM_SUBJECTS": '[{"id": "a", "sensors": [{"id": "x", "side": "left"}, {"id": "y", "side": "left"}]}]'},
            "more than one sensor on one side",
        ),
        ({"PLM_SUBJECTS": '[{"id": "a"}, {"id": "a"}]'}, "listed twice"),
        ({"PLM_MQTT__COLOUR": "red"}, "colour"),
    ],
)
def test_bad_values_are_named(monkeypatch, env, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in str(info.value)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[mqtt\nurl = ")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_never_in_repr_or_errors(tmp_path, monkeypatch):
    path = tmp_path / "plm.toml"
    path.write_text(TOML)
    monkeypatch.setenv("PLM_INFLUX__TOKEN", "tok-123-secret")
    settings = load_settings(path)
    text = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in settings.secrets():
        assert secret not in text
    assert set(settings.secrets()) == {"file-password", "file-influx-password", "tok-123-secret"}
    monkeypatch.setenv("PLM_MQTT__URL", "nonsense")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    for secret in ("file-password", "file-influx-password", "tok-123-secret"):
        assert secret not in str(info.value)


def test_secret_from_file(tmp_path, monkeypatch):
    secret = tmp_path / "mqtt_password"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("PLM_MQTT__PASSWORD_FILE", str(secret))
    assert load_settings().mqtt.password.get_secret_value() == "from-a-file"
    monkeypatch.setenv("PLM_INFLUX__TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="PLM_INFLUX__TOKEN_FILE"):
        load_settings()
