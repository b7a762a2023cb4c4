"""One typed configuration for every stage: environment variables over an optional TOML file.

Why pydantic-settings: it gives typed, validated settings from env and TOML with nested keys and
error messages that name the offending key, which is what a person editing a config on a Raspberry
Pi at midnight needs. Secrets are ``SecretStr`` so they never show up in a repr, log line or traceback.

Environment variables are ``PLM_<SECTION>__<KEY>``, e.g. ``PLM_MQTT__URL``, ``PLM_INFLUX__TOKEN``;
``PLM_SUBJECTS`` takes JSON. ``PLM_CONFIG`` (or ``--config``) names the TOML file. Env wins over the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from plm.wire import WireFormatError, validate_id

CONFIG_ENV = "PLM_CONFIG"


class ConfigError(ValueError):
    """The configuration is unusable; the message names each bad key and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


MqttProtocol = Literal["5", "3.1.1"]
"""MQTT 5 by default. 3.1.1 for a consumer of thousands of messages a second: paho decodes every MQTT 5
PUBLISH into a fresh ``Properties`` object (~60-80 us of Python each on a 2-core machine, measured), about
half of its whole per-message cost; a 3.1.1 PUBLISH has no properties. The price: a 3.1.1 client cannot ask
for Receive Maximum, so the broker's own in-flight limit applies (mosquitto ``max_inflight_messages``)."""


class MqttSettings(_Section):
    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port, or mqtts://host:port for TLS")
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = Field(None, description="CA bundle for mqtts:// (system store when unset)")
    client_cert: Path | None = None
    client_key: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    protocol: MqttProtocol = Field(
        "5",
        description="MQTT version of this process's clients (collector, simulator, tools; the detector's "
        "subscription has its own detector.mqtt_protocol): 3.1.1 for a broker that serves only 3.1.1, "
        "e.g. NATS 2.9 (docs/deploy-scale.md)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        try:
            parts.port  # noqa: B018 -- raises on a non-numeric port
        except ValueError:
            raise ValueError("port must be a number 1-65535") from None
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class InfluxSettings(_Section):
    url: str = Field("http://127.0.0.1:8086", description="http(s)://host:port of InfluxDB")
    api: Literal[1, 2] = Field(2, description="2: /api/v2/write (InfluxDB 1.8+, 2.x, 3.x); 1: /write (1.x)")
    token: SecretStr | None = Field(None, description="API token (v2 API; on v1 sent as the password)")
    username: str | None = None
    password: SecretStr | None = None
    org: str = "plm"
    bucket: str = Field("plm", description="bucket (v2) or database (v1)")
    timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host[:port] or https://host[:port]")
        return value.rstrip("/")

    @field_validator("api", mode="before")
    @classmethod
    def _api_from_text(cls, value: Any) -> Any:
        # environment variables are text: PLM_INFLUX__API=1 means the integer 1
        return int(value) if isinstance(value, str) and value.strip() in ("1", "2") else value

    @model_validator(mode="after")
    def _check_auth(self) -> InfluxSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class SensorSettings(_Section):
    id: str = Field(description="sensor id in MQTT topics, e.g. 'left-ankle'")
    side: Literal["left", "right"]
    driver: Literal["polar_pmd", "witmotion"] | None = Field(None, description="BLE driver (collector only)")
    address: str | None = Field(None, description="BLE address (collector); or give name")
    name: str | None = Field(None, description="BLE advertised name or prefix (collector)")
    rate_hz: float | None = Field(None, gt=0, le=1000)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return _checked_id(value, "sensor id")


class SubjectSettings(_Section):
    id: str
    sensors: list[SensorSettings] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return _checked_id(value, "subject id")

    @model_validator(mode="after")
    def _one_sensor_per_side(self) -> SubjectSettings:
        sides = [s.side for s in self.sensors]
        if len(set(sides)) != len(sides):
            raise ValueError(f"subject {self.id!r} has more than one sensor on one side")
        ids = [s.id for s in self.sensors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"subject {self.id!r} lists a sensor id twice")
        return self


class DetectorSettings(_Section):
    rules: Literal["wasm2016", "aasm"] = "wasm2016"
    instance: str = Field("detector", description="client id / status topic instance")
    state_dir: Path = Field(Path("./var/detector"), description="outbox and scorer state live here")
    reorder_window_s: float = Field(5.0, ge=0, le=120)
    hole_wait_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="data seconds a sensor's batches wait past a seq hole (a batch in transit: a broker's late "
        "redelivery, a collector's resend) before it is given up as a gap (detector/live/ingest.py)",
    )
    night_end_local: str | None = Field(None, description="HH:MM local time that ends a night regardless")
    mqtt_protocol: MqttProtocol = Field(
        "3.1.1",
        description="protocol of the detector's subscription: 3.1.1 reads each batch at about half paho's MQTT 5 "
        "cost; the broker must then allow thousands of messages in flight to it (mosquitto max_inflight_messages); "
        "5 asks for that itself (Receive Maximum)",
    )


class CollectorSettings(_Section):
    queue_dir: Path = Field(Path("./var/collector"), description="on-disk queue while the broker is away")
    queue_max_batches: int = Field(200_000, ge=10, description="bound of the on-disk queue (about 55 h of one sensor)")
    ack_mode: Literal["auto", "detector", "broker"] = Field(
        "auto",
        description="when a queued batch may be forgotten: 'detector' = only once the detector's retained ack "
        "covers it (lossless through a broker crash; without a detector the queue fills to its bound and "
        "drops oldest), 'broker' = on the broker's PUBACK (a broker SIGKILL loses up to autosave_interval), "
        "'auto' = like 'broker' until this sensor's first detector ack, then like 'detector'",
    )


def _checked_id(value: str, what: str) -> str:
    try:
        return validate_id(value, what)
    except WireFormatError as exc:
        raise ValueError(str(exc)) from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLM_", env_nested_delimiter="__", extra="forbid")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    subjects: list[SubjectSettings] = Field(default_factory=list)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_subjects(self) -> Settings:
        ids = [s.id for s in self.subjects]
        if len(set(ids)) != len(ids):
            raise ValueError("a subject id is listed twice")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # PLM_*_FILE variables name secret files; load_settings reads them, the env source must not
        if isinstance(env_settings, EnvSettingsSource):
            env_vars = env_settings.env_vars
            env_settings.env_vars = {k: v for k, v in env_vars.items() if not k.lower().endswith("_file")}
        # the TOML file (model_config["toml_file"], set by load_settings) ranks below the environment
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, deep_merge=True)

    def subject(self, subject_id: str) -> SubjectSettings | None:
        return next((s for s in self.subjects if s.id == subject_id), None)

    def secrets(self) -> list[str]:
        """Every configured secret value, so tests and log filters can make sure none leaks."""
        values = [self.mqtt.password, self.influx.token, self.influx.password]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config_file`` (or ``$PLM_CONFIG``) and the environment.

    Raises :class:`ConfigError` with one line per bad key, never a pydantic traceback.
    """
    from_files = _secret_files(os.environ)
    path_str = config_file if config_file is not None else os.environ.get(CONFIG_ENV)
    path = Path(path_str) if path_str else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    for section, values in from_files.items():
        if isinstance(values, dict):
            overrides[section] = {**values, **overrides.get(section, {})}
        else:
            overrides.setdefault(section, values)
    try:
        return FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except (ValueError, OSError) as exc:  # TOML syntax errors, unreadable file
        where = f" in {path}" if path else ""
        raise ConfigError(f"cannot read configuration{where}: {exc}") from None


def _secret_files(environ: Mapping[str, str]) -> dict[str, Any]:
    """Docker-style secrets: ``PLM_MQTT__PASSWORD_FILE=/run/secrets/x`` sets ``mqtt.password`` from the
    file (unless ``PLM_MQTT__PASSWORD`` is set), so a secret need not sit in every process's environment."""
    overrides: dict[str, Any] = {}
    for key in sorted(k for k in environ if k.startswith("PLM_") and k.endswith("_FILE")):
        target = key.removesuffix("_FILE")
        if environ.get(target):
            continue
        try:
            value = Path(environ[key]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read secret file {environ[key]}: {exc.strerror}") from None
        path = target.removeprefix("PLM_").lower().split("__")
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def _describe(exc: ValidationError, path: Path | None) -> str:
    lines = [f"invalid configuration{f' ({path})' if path else ''}:"]
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        env = "PLM_" + "__".join(str(p) for p in err["loc"] if not isinstance(p, int)).upper()
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {msg} (env {env})")
    return "\n".join(lines)
