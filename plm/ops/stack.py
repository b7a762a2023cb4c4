"""First-start initialisation of the docker-compose stack, run inside the project image.

Why generated at first start, not shipped in ``.env``: a stack that starts with a default password
is a stack that runs with one. ``init_secrets`` makes every missing secret with a CSPRNG, keeps the
ones that exist (so restarts never rotate a password under a running service), takes a value from
the environment when the operator set one, and writes the mosquitto configuration from
:mod:`plm.ops.broker` -- the same generator the broker security tests exercise.

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
missing or no longer valid, which it finds out by using the token (a write of nothing, a read of the
bucket), never by looking for it in the token listing: InfluxDB 2.9 can store tokens hashed.

Three secrets are read by their service at its *first* start only (``FIRST_START_ONLY``): InfluxDB's
admin password and operator token (its setup) and Grafana's admin password. Changing their variable
later would overwrite the file while the service keeps the old value, so ``init_secrets`` refuses
that with the exact way out, unless ``rotated`` says the operator changed it in the service already.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plm.ops.broker import BrokerUser, acl_text, mosquitto_conf, password_hash

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

_SHOW = "docker compose run --rm init stack show"
_RECORD = "docker compose run --rm init stack init-secrets --rotated"
#: secrets a service takes at its first start only -> how to change it in the running service
FIRST_START_ONLY: dict[str, str] = {
    "influxdb/admin-password": (
        "change it in InfluxDB first (`docker compose exec influxdb influx user password --name admin`, "
        "which asks for the new password; the user is PLM_INFLUX_ADMIN_USER), then record it with "
        f"`{_RECORD} influxdb/admin-password`"
    ),
    "influxdb/admin-token": (
        "InfluxDB cannot change its operator token to a value you choose: only a fresh InfluxDB takes a new one "
        "(README, Secrets: it deletes every stored night). If this token is the one InfluxDB was set up with "
        f"(e.g. the volumes were renewed), record it with `{_RECORD} influxdb/admin-token`"
    ),
    "grafana/admin-password": (
        f"change it in Grafana first (log in as admin with the current password, `{_SHOW} grafana/admin-password`, "
        f"then Profile -> Change password), then record it with `{_RECORD} grafana/admin-password`"
    ),
}
HEALTHCHECK_USER = "healthcheck"  # may connect, may do nothing (no ACL lines): the broker healthcheck


class StackError(RuntimeError):
    """The stack cannot be initialised; the message says what to set or fix."""


def first_start_only_message(relative: str, variable: str) -> str:
    """Why a changed first-start-only secret is refused, and the two ways out."""
    service = relative.split("/", 1)[0]
    return (
        f"{variable} in .env differs from the stored {relative}, and {service} reads it at its first start only: "
        f"the new value would not work while `stack show {relative}` printed it. Nothing was changed. "
        f"To keep the current value, remove {variable} from .env (`{_SHOW} {relative}` prints it). "
        f"To change it: {FIRST_START_ONLY[relative]}; then `docker compose up -d` again."
    )


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
    """The stack's broker users: least privilege per service (see plm.ops.broker for the roles)."""
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
    rotated: Collection[str] = (),
) -> InitResult:
    """Create missing secrets and (re)write the mosquitto configuration. Idempotent.

    A variable that differs from a stored ``FIRST_START_ONLY`` secret raises :class:`StackError` (before
    anything is written) unless that secret is in ``rotated``: the operator changed it in the service.

    ``broker_config_dir``/``broker_data_dir`` are the paths as the *broker* sees them (inside its
    container), which differ from where this process writes (``root/mosquitto``). ``chown`` (default:
    when running as root) gives each file to the uid of the one service that reads it.
    """
    env = os.environ if environ is None else environ
    chown = (os.geteuid() == 0) if chown is None else chown
    unknown = set(rotated) - set(FIRST_START_ONLY)
    if unknown:
        raise StackError(f"--rotated takes {', '.join(FIRST_START_ONLY)}, not {', '.join(sorted(unknown))}")
    for relative, variable in SECRETS:  # check everything before writing anything
        wanted, path = env.get(variable, ""), root / relative
        if wanted and len(wanted) < MIN_SECRET_CHARS:
            raise StackError(f"{variable} is shorter than {MIN_SECRET_CHARS} characters; use a longer secret")
        if relative in FIRST_START_ONLY and wanted and relative not in rotated and path.exists():
            stored = read_secret(path)
            if stored and stored != wanted:
                raise StackError(first_start_only_message(relative, variable))
    for relative in rotated:
        if not env.get(dict(SECRETS)[relative], ""):
            raise StackError(f"--rotated {relative}: set {dict(SECRETS)[relative]} to the new value in .env")
    result = InitResult()
    values: dict[str, str] = {}
    for relative, variable in SECRETS:
        path = root / relative
        wanted = env.get(variable, "")
        if wanted:
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

    def _open(
        self, method: str, path: str, token: str, data: bytes | None, query: Mapping[str, str] | None
    ) -> tuple[int, bytes]:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Token {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json" if path != "/api/v2/write" else "text/plain")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:
            raise StackError(f"cannot reach InfluxDB at {self.url}: {exc}") from None

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        status, raw = self._open(method, path, self.token, data, query)
        if status == 401:
            raise StackError(OPERATOR_TOKEN_REFUSED)
        if status >= 300:
            detail = raw.decode(errors="replace")[:300]
            raise StackError(f"InfluxDB {method} {path}: HTTP {status} {detail}")
        return json.loads(raw) if raw else None

    def token_is_valid(self, token: str, action: str, org_id: str, bucket_id: str) -> bool:
        """Whether a stored bucket token still does its one job, found out by doing it with that token.

        ``write``: a write of no points to the bucket (InfluxDB checks the token and its write permission on
        the bucket before it parses the body, and stores nothing); ``read``: reading the bucket's record.
        401/403/404 mean revoked, deleted, inactive or without that permission (a new one is made); any other
        failure is an error, so a flaky server never mints tokens. Not from the token listing: InfluxDB 2.9
        may store tokens hashed, and the listing then never shows the stored token.
        """
        if action == "write":
            query = {"orgID": org_id, "bucket": bucket_id, "precision": "s"}
            status, raw = self._open("POST", "/api/v2/write", token, b"", query)
        else:
            status, raw = self._open("GET", f"/api/v2/buckets/{bucket_id}", token, None, None)
        if 200 <= status < 300:
            return True
        if status in (401, 403, 404):
            return False
        detail = raw.decode(errors="replace")[:300]
        raise StackError(f"InfluxDB answered HTTP {status} when the stored {action} token was tried: {detail}")


OPERATOR_TOKEN_REFUSED = (
    "InfluxDB refused the operator token in influxdb/admin-token (HTTP 401). InfluxDB keeps the token it was set "
    "up with at its first start, so the stored one was changed after that (PLM_INFLUX_ADMIN_TOKEN set later). "
    "The token InfluxDB was set up with is in its CLI configuration: "
    "`docker compose exec influxdb cat /etc/influxdb2/influx-configs` (the token = line). Put it in .env as "
    "PLM_INFLUX_ADMIN_TOKEN, run `docker compose run --rm init stack init-secrets --rotated influxdb/admin-token`, "
    "then `docker compose up -d`."
)


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
        stored = read_secret(path) if path.exists() else ""
        if stored and api.token_is_valid(stored, action, org_id, bucket_id):
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
