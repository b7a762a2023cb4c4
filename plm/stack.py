"""First-start initialisation of the docker-compose stack, run inside the project image.

Why generated at first start, not shipped in ``.env``: a stack that starts with a default password
is a stack that runs with one. ``init_secrets`` makes every missing secret with a CSPRNG, keeps the
ones that exist (so restarts never rotate a password under a running service), takes a value from
the environment when the operator set one, and writes the mosquitto configuration from
:mod:`plm.broker` -- the same generator the broker security tests exercise.

Layout under ``root`` (each sub-directory is its own named volume in docker-compose.yml, mounted only
into the service that needs it, and owned by that service's non-root uid)::

    mosquitto/  mosquitto.conf passwd acl healthcheck-password     (uid 1883, eclipse-mosquitto)
    influxdb/   admin-password admin-token                         (uid 1000, influxdb:2.7)
    grafana/    admin-password influx-token (read-only)            (uid 472, grafana)
    detector/   mqtt-password influx-token (write-only)            (uid 10001, project image)
    simulator/  mqtt-password                                      (uid 10001)
    collector/  mqtt-password                                      (uid 10001)
    viewer/     mqtt-password (for Home Assistant; not mounted anywhere, read it with `plm stack show`)

``ensure_influx_tokens`` then creates, once InfluxDB 2 is up, a write-only token for the detector
and a read-only token for Grafana, each scoped to the one bucket -- only if the stored one is
missing or no longer valid.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plm.broker import BrokerUser, acl_text, mosquitto_conf, password_hash

log = logging.getLogger(__name__)

PLM_UID = 10001  # the project image's non-root user (Dockerfile)
MOSQUITTO_UID = 1883  # eclipse-mosquitto's `mosquitto` user
INFLUXDB_UID = 1000  # influxdb:2.7's `influxdb` user
GRAFANA_UID = 472  # grafana's `grafana` user

OWNERS = {
    "mosquitto": MOSQUITTO_UID,
    "influxdb": INFLUXDB_UID,
    "grafana": GRAFANA_UID,
    "detector": PLM_UID,
    "simulator": PLM_UID,
    "collector": PLM_UID,
    "viewer": 0,
}

#: (file under root, environment variable that may set it) for every generated secret
SECRETS: tuple[tuple[str, str], ...] = (
    ("influxdb/admin-password", "PLM_INFLUX_ADMIN_PASSWORD"),
    ("influxdb/admin-token", "PLM_INFLUX_ADMIN_TOKEN"),
    ("grafana/admin-password", "PLM_GRAFANA_ADMIN_PASSWORD"),
    ("detector/mqtt-password", "PLM_BROKER_PASSWORD_DETECTOR"),
    ("simulator/mqtt-password", "PLM_BROKER_PASSWORD_SIMULATOR"),
    ("collector/mqtt-password", "PLM_BROKER_PASSWORD_COLLECTOR"),
    ("viewer/mqtt-password", "PLM_BROKER_PASSWORD_VIEWER"),
    ("mosquitto/healthcheck-password", "PLM_BROKER_PASSWORD_HEALTHCHECK"),
)
MIN_SECRET_CHARS = 12
HEALTHCHECK_USER = "healthcheck"  # may connect, may do nothing (no ACL lines): the broker healthcheck


class StackError(RuntimeError):
    """The stack cannot be initialised; the message says what to set or fix."""


@dataclass
class InitResult:
    created: list[str] = field(default_factory=list)  # secrets made up now
    from_env: list[str] = field(default_factory=list)  # secrets taken from the environment
    kept: list[str] = field(default_factory=list)  # secrets that already existed
    broker_users: list[BrokerUser] = field(default_factory=list)


def simulated_subjects(count: int, prefix: str = "sim") -> tuple[str, ...]:
    """The subject ids ``plm simulate stream --subjects N --prefix P`` publishes (sim001, sim002, ...)."""
    if not 1 <= count <= 10_000:
        raise StackError(f"PLM_SIM_SUBJECTS must be 1-10000, got {count}")
    return tuple(f"{prefix}{k + 1:03d}" for k in range(count))


def broker_users(sim_subjects: Sequence[str], collector_subjects: Sequence[str], viewer_subjects: Sequence[str]):
    """The stack's broker users: least privilege per service (see plm.broker for the roles)."""
    users = [BrokerUser("detector", "detector"), BrokerUser("simulator", "collector", tuple(sim_subjects))]
    if collector_subjects:
        users.append(BrokerUser("collector", "collector", tuple(collector_subjects)))
    viewer = tuple(viewer_subjects) or (*sim_subjects, *collector_subjects)
    users.append(BrokerUser("viewer", "viewer", viewer))
    return users


def _write_secret(path: Path, value: str, owner: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(tmp, 0o600)
    if owner is not None:
        os.chown(tmp, owner, owner)
    os.replace(tmp, path)  # a reader never sees a half-written secret


def _owner_for(relative: str, chown: bool) -> int | None:
    return OWNERS[relative.split("/", 1)[0]] if chown else None


def read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise StackError(f"cannot read secret {path}: {exc.strerror}") from None


def init_secrets(
    root: Path,
    *,
    environ: Mapping[str, str] | None = None,
    sim_subjects: Sequence[str] = ("sim001",),
    collector_subjects: Sequence[str] = (),
    viewer_subjects: Sequence[str] = (),
    broker_config_dir: str = "/mosquitto/config",
    broker_data_dir: str = "/mosquitto/data",
    mqtt_port: int = 1883,
    mqtt_bind: str = "",
    broker_run_as: str | None = None,
    chown: bool | None = None,
) -> InitResult:
    """Create missing secrets and (re)write the mosquitto configuration. Idempotent.

    ``broker_config_dir``/``broker_data_dir`` are the paths as the *broker* sees them (inside its
    container), which differ from where this process writes (``root/mosquitto``). ``chown`` (default:
    when running as root) gives each file to the uid of the one service that reads it.
    """
    env = os.environ if environ is None else environ
    chown = (os.geteuid() == 0) if chown is None else chown
    result = InitResult()
    values: dict[str, str] = {}
    for relative, variable in SECRETS:
        path = root / relative
        wanted = env.get(variable, "")
        if wanted:
            if len(wanted) < MIN_SECRET_CHARS:
                raise StackError(f"{variable} is shorter than {MIN_SECRET_CHARS} characters; use a longer secret")
            if not path.exists() or read_secret(path) != wanted:
                _write_secret(path, wanted, _owner_for(relative, chown))
            result.from_env.append(relative)
            values[relative] = wanted
        elif path.exists() and read_secret(path):
            values[relative] = read_secret(path)
            result.kept.append(relative)
        else:
            values[relative] = secrets.token_urlsafe(32)
            _write_secret(path, values[relative], _owner_for(relative, chown))
            result.created.append(relative)
        if chown:  # also repairs ownership of files that already existed
            os.chown(path, OWNERS[relative.split("/", 1)[0]], OWNERS[relative.split("/", 1)[0]])
    users = broker_users(sim_subjects, collector_subjects, viewer_subjects)
    result.broker_users = users
    entries = [f"{u.name}:{password_hash(values[f'{u.name}/mqtt-password'])}" for u in users]
    entries.append(f"{HEALTHCHECK_USER}:{password_hash(values['mosquitto/healthcheck-password'])}")
    broker_dir = root / "mosquitto"
    owner = MOSQUITTO_UID if chown else None
    # the healthcheck user has no ACL lines: it may connect and nothing else
    _write_secret(broker_dir / "passwd", "\n".join(entries), owner)
    _write_secret(broker_dir / "acl", acl_text(users).rstrip("\n"), owner)
    conf = mosquitto_conf(
        Path(broker_config_dir),
        port=mqtt_port,
        bind=mqtt_bind,
        persistence_dir=Path(broker_data_dir),
        run_as_user=broker_run_as,
    )
    conf += "log_dest stdout\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n"
    _write_secret(broker_dir / "mosquitto.conf", conf.rstrip("\n"), owner)
    os.chmod(broker_dir / "mosquitto.conf", 0o644)
    return result


# ---------------------------------------------------------------------------------- InfluxDB 2 tokens


@dataclass
class InfluxTokenResult:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class _InfluxApi:
    """The few InfluxDB 2 v2-API calls token setup needs, with the operator (admin) token."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None) -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise StackError(f"InfluxDB {method} {path}: HTTP {exc.code} {detail}") from None
        except OSError as exc:
            raise StackError(f"cannot reach InfluxDB at {self.url}: {exc}") from None
        return json.loads(raw) if raw else None

    def token_is_valid(self, token: str) -> bool:
        """A stored token is still usable: it authenticates against /api/v2/authorizations' own listing."""
        listing = self.call("GET", "/api/v2/authorizations")
        return any(a.get("token") == token and a.get("status") == "active" for a in listing.get("authorizations", []))


def ensure_influx_tokens(
    root: Path,
    *,
    url: str,
    org: str,
    bucket: str,
    timeout_s: float = 10.0,
    chown: bool | None = None,
) -> InfluxTokenResult:
    """Create the detector's write-only and Grafana's read-only bucket tokens, unless valid ones exist."""
    chown = (os.geteuid() == 0) if chown is None else chown
    api = _InfluxApi(url, read_secret(root / "influxdb" / "admin-token"), timeout_s)
    orgs = api.call("GET", "/api/v2/orgs", query={"org": org}).get("orgs", [])
    if not orgs:
        raise StackError(f"InfluxDB has no organisation {org!r} (PLM_INFLUX_ORG); was it set up with another?")
    org_id = orgs[0]["id"]
    buckets = api.call("GET", "/api/v2/buckets", query={"name": bucket, "orgID": org_id}).get("buckets", [])
    if not buckets:
        raise StackError(f"InfluxDB has no bucket {bucket!r} in org {org!r} (PLM_INFLUX_BUCKET)")
    bucket_id = buckets[0]["id"]
    result = InfluxTokenResult()
    wanted = (
        ("detector/influx-token", "write", f"plm detector: write {bucket}"),
        ("grafana/influx-token", "read", f"plm grafana: read {bucket}"),
    )
    for relative, action, description in wanted:
        path = root / relative
        if path.exists() and read_secret(path) and api.token_is_valid(read_secret(path)):
            result.kept.append(relative)
            continue
        created = api.call(
            "POST",
            "/api/v2/authorizations",
            body={
                "orgID": org_id,
                "description": description,
                "permissions": [{"action": action, "resource": {"type": "buckets", "id": bucket_id, "orgID": org_id}}],
            },
        )
        _write_secret(path, created["token"], _owner_for(relative, chown))
        result.created.append(relative)
    return result


# ---------------------------------------------------------------------------------- simulator


def simulate_forever(
    mqtt_settings: Any,
    *,
    subjects: int,
    profile: str,
    state_dir: Path,
    live_speed: float = 1.0,
    replay_speed: float = 500.0,
    hours: float = 8.0,
    stop: Any = None,
) -> None:
    """The compose stack's simulated sensor: last night once at ``replay_speed`` (its data ends about
    now, so the dashboard shows a whole night within a minute or two), then live nights back to back.

    A marker in ``state_dir`` makes the replay happen once per volume, so a container restart never
    writes a second, overlapping "last night".
    """
    import threading
    import time

    from simulator.stream import StreamConfig, stream_nights

    stop = stop or threading.Event()
    state_dir.mkdir(parents=True, exist_ok=True)
    marker = state_dir / "replayed"
    night = int(marker.read_text().strip() or 0) if marker.exists() else 0
    duration_s = hours * 3600.0
    while not stop.is_set():
        replay = night == 0
        speed = replay_speed if replay else live_speed
        # a replayed night starts so that its last sample is published about now: no future data
        start = time.time() - (duration_s - duration_s / speed) if replay else time.time()
        config = StreamConfig(
            subjects=subjects, speed=speed, profile=profile, seed=night, duration_h=hours, start_unix_s=start
        )
        log.info("simulated night %d (%s): %d subject(s), speed %g", night, profile, subjects, speed)
        stats = stream_nights(mqtt_settings, config, stop=stop)
        if not stats.finished:
            return
        night += 1
        marker.write_text(f"{night}\n")
