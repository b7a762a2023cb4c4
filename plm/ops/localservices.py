"""Start real mosquitto, influxd 1.x and victoria-metrics on free loopback ports in a temp directory.

Used by the test fixtures and by ``plm demo``: the product is tested against the servers it runs
with, not against mocks. Each service can be stopped, killed and restarted on the same port and data
directory, which the outage and soak tests need.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from plm.ops.broker import password_hash, write_private_file

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install -y mosquitto mosquitto-clients influxdb victoria-metrics"


class ServiceError(RuntimeError):
    """A local service binary is missing or did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _wait_until(check, timeout_s: float, what: str, proc: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode}: {_tail(log_file)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not come up within {timeout_s:.0f} s: {_tail(log_file)}")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_ok(url: str, expect: tuple[int, ...] = (200, 204)) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return resp.status in expect


@dataclass
class _Service:
    """Common start/stop/kill/restart around one server process."""

    workdir: Path
    name: str = "service"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
        _wait_until(self.ready, timeout_s, self.name, self.proc, self.log_file)
        log.debug("%s up (pid %s)", self.name, self.proc.pid)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush -- what a power cut looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Mosquitto(_Service):
    """mosquitto 2 with password authentication and optional ACLs; anonymous clients are refused."""

    name: str = "mosquitto"
    users: dict[str, str] = field(default_factory=lambda: {"plm": "plm-test-password"})
    acl: str | None = None  # mosquitto acl_file text; None = every authenticated user may do anything
    extra_config: str = ""
    port: int = field(default_factory=free_port)
    binary: str | None = field(default_factory=lambda: find_binary("mosquitto"))
    config_file: Path | None = None  # a ready configuration (e.g. from plm.ops.broker); its listener must use `port`

    def __post_init__(self) -> None:
        if not self.binary:
            raise ServiceError(f"mosquitto not installed ({INSTALL_HINT})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config_file is not None:
            return
        # the hashes written here, not by `mosquitto_passwd -b FILE USER PASSWORD`: that puts the password
        # on a command line, where every local user can read it (ps, /proc/<pid>/cmdline)
        passwd = self.workdir / "passwd"
        write_private_file(passwd, "".join(f"{user}:{password_hash(pw)}\n" for user, pw in self.users.items()))
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
            "persistence true",
            "autosave_interval 1",
            f"persistence_location {self.workdir}/",
            "user root",
            # mosquitto's default of 1000 queued messages per client silently drops QoS 1 messages
            # for a consumer that falls behind a fast replay; the product's config raises it too
            "max_queued_messages 1000000",
            "max_inflight_messages 16384",  # as the product's broker config (plm/ops/broker.py): the detector uses 3.1.1
        ]
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        self.config_file = self.workdir / "mosquitto.conf"
        self.config_file.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")

    def command(self) -> list[str]:
        return [str(self.binary), "-c", str(self.config_file)]

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@dataclass
class Influxd1(_Service):
    """InfluxDB 1.x (Debian's 1.6.7): the v1 /write API and InfluxQL."""

    name: str = "influxd"
    database: str = "plm"
    auth: bool = False
    admin: tuple[str, str] = ("admin", "admin-test-password")
    port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    binary: str | None = field(default_factory=lambda: find_binary("influxd"))

    def __post_init__(self) -> None:
        if not self.binary:
            raise ServiceError(f"influxd not installed ({INSTALL_HINT})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.workdir / "influxdb.conf"
        self.config_file.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.workdir}/meta"\n'
            f'[data]\n  dir = "{self.workdir}/data"\n  wal-dir = "{self.workdir}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            f"  auth-enabled = {'true' if self.auth else 'false'}\n"
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        self._initialised = False

    def command(self) -> list[str]:
        return [str(self.binary), "-config", str(self.config_file)]

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/ping")

    def start(self, timeout_s: float = 30.0) -> None:
        super().start(timeout_s)
        if not self._initialised:
            if self.auth:
                self.query(f"CREATE USER {self.admin[0]} WITH PASSWORD '{self.admin[1]}' WITH ALL PRIVILEGES")
            self.query(f'CREATE DATABASE "{self.database}"')
            self._initialised = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, q: str, database: str | None = None, auth: tuple[str, str] | None = None) -> dict:
        """Run InfluxQL through /query (POST, so it may also create/drop) and return the parsed JSON."""
        import json

        params = {"q": q, "epoch": "ms"}
        if database:
            params["db"] = database
        if auth is None and self.auth:
            auth = self.admin
        req = urllib.request.Request(f"{self.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST")
        if auth:  # influxd 1.x reads credentials from the URL or a Basic header, not from a POST body
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())


@dataclass
class VictoriaMetrics(_Service):
    """victoria-metrics: a real server for InfluxDB's /api/v2/write line protocol."""

    name: str = "victoria-metrics"
    port: int = field(default_factory=free_port)
    binary: str | None = field(default_factory=lambda: find_binary("victoria-metrics"))

    def __post_init__(self) -> None:
        if not self.binary:
            raise ServiceError(f"victoria-metrics not installed ({INSTALL_HINT})")
        self.workdir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.binary),
            f"-storageDataPath={self.workdir}/data",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/health")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def export(self, match: str, wait_s: float = 5.0) -> list[dict]:
        """All series matching a selector (e.g. ``movement_duration``) as parsed JSON lines.

        Fresh points become searchable a moment after they are written, so poll up to ``wait_s``
        until something matches (an empty answer after that is a real empty answer).
        """
        import json

        query = urllib.parse.urlencode({"match[]": match})
        deadline = time.monotonic() + wait_s
        while True:
            _http_ok(f"{self.url}/internal/force_flush")
            with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as resp:
                rows = [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


NATS_INSTALL_HINT = "apt-get install -y nats-server"


def _mqtt311_connect_ok(port: int, username: str, password: str, timeout_s: float = 5.0) -> bool:
    """One MQTT 3.1.1 CONNECT with credentials: True when the broker answers CONNACK 0 (accepted).

    A NATS server listens on its MQTT port before its JetStream (where MQTT sessions live) can serve the
    account, and then refuses or times out a CONNECT: only an accepted CONNECT says the node is ready."""

    def utf8(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = utf8("MQTT") + bytes([4, 0xC2]) + (10).to_bytes(2, "big")  # level 4, user+password+clean, keepalive
    body += utf8(f"plm-ready-{os.getpid()}-{port}") + utf8(username) + utf8(password)
    length, encoded = len(body), bytearray()
    while True:
        length, digit = length >> 7, length & 0x7F
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            break
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"\x10" + bytes(encoded) + body)
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                return False
            answer += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT: no will, the session (clean) is dropped
        return answer[0] == 0x20 and answer[3] == 0


@dataclass
class NatsServer(_Service):
    """One node of a NATS cluster (``nats-server`` 2.9): JetStream, an MQTT 3.1.1 listener, cluster routes.

    Made by :class:`NatsCluster`, which fills in every port; its ``url`` is the node's MQTT listener."""

    name: str = "nats"
    server_name: str = "n0"
    cluster_name: str = "plm"
    users: dict[str, str] = field(default_factory=lambda: {"plm": "plm-test-password"})
    permissions: dict[str, dict] = field(default_factory=dict)  # user -> NATS permission map (subjects, not topics)
    port: int = field(default_factory=free_port)  # NATS clients
    cluster_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)  # monitoring (/healthz)
    routes: list[int] = field(default_factory=list)  # the other nodes' cluster ports
    # more of the `mqtt {}` block, e.g. max_ack_pending (QoS 1 messages in flight to one subscription, default 1024)
    # or consumer_replicas (docs/deploy-scale.md: what they change); empty = the server's defaults
    mqtt_options: dict[str, object] = field(default_factory=dict)
    binary: str | None = field(default_factory=lambda: find_binary("nats-server"))
    # a ready configuration (e.g. from plm.ops.broker_nats): its MQTT listener must use `mqtt_port`, and `users` holds
    # one user and password it accepts, for the readiness check (which then does not ask the monitoring port)
    config_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.binary:
            raise ServiceError(f"nats-server not installed ({NATS_INSTALL_HINT})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config_file is not None:
            return
        import json

        users = []
        for user, password in self.users.items():
            entry: dict[str, object] = {"user": user, "password": password}
            if user in self.permissions:
                entry["permissions"] = self.permissions[user]
            users.append(entry)
        config = {
            "server_name": self.server_name,
            "listen": f"127.0.0.1:{self.port}",
            "http": f"127.0.0.1:{self.http_port}",
            "jetstream": {
                "store_dir": str(self.workdir / "jetstream"),
                "max_memory_store": 256 * 2**20,
                "max_file_store": 2 * 2**30,
            },
            "cluster": {
                "name": self.cluster_name,
                "listen": f"127.0.0.1:{self.cluster_port}",
                "routes": [f"nats-route://127.0.0.1:{p}" for p in self.routes],
            },
            "mqtt": {"listen": f"127.0.0.1:{self.mqtt_port}", **self.mqtt_options},
            # one account for every user: MQTT needs JetStream enabled on the account (sessions, retained messages)
            "accounts": {"PLM": {"jetstream": "enabled", "users": users}},
        }
        self.config_file = self.workdir / "nats.conf"
        # the NATS config format is a superset of JSON; the passwords are in it, so the file is private
        write_private_file(self.config_file, json.dumps(config, indent=1) + "\n")

    def command(self) -> list[str]:
        return [str(self.binary), "-c", str(self.config_file)]

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (a cluster's nodes need each other first)."""
        if self.running:
            return
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.proc is not None
        _wait_until(self.ready, timeout_s, f"{self.name} {self.server_name}", self.proc, self.log_file)

    def start(self, timeout_s: float = 60.0) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def ready(self) -> bool:
        if self.config_file is None and not _http_ok(f"http://127.0.0.1:{self.http_port}/healthz"):
            return False
        user, password = next(iter(self.users.items()))
        return _mqtt311_connect_ok(self.mqtt_port, user, password)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"


@dataclass
class NatsCluster:
    """A NATS cluster of ``size`` nodes on loopback ports, each with JetStream (its store under ``workdir``), an
    MQTT listener and routes to the others, and password users in one JetStream account.

    NATS 2.9 serves MQTT 3.1.1 only (an MQTT 5 CONNECT is refused): clients set ``mqtt.protocol = "3.1.1"`` and
    the detector ``detector.mqtt_protocol = "3.1.1"`` (docs/deploy-scale.md). MQTT sessions, retained messages and
    QoS 1 messages live in JetStream streams replicated to three nodes, so one node may die. ``nodes[i].kill()``
    and ``nodes[i].start()`` take one node down and bring it back on the same ports and store."""

    workdir: Path
    size: int = 3
    users: dict[str, str] = field(default_factory=lambda: {"plm": "plm-test-password"})
    permissions: dict[str, dict] = field(default_factory=dict)
    mqtt_options: dict[str, object] = field(default_factory=dict)
    nodes: list[NatsServer] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not find_binary("nats-server"):
            raise ServiceError(f"nats-server not installed ({NATS_INSTALL_HINT})")
        cluster_ports = [free_port() for _ in range(self.size)]
        self.nodes = [
            NatsServer(
                workdir=self.workdir / f"n{i}",
                server_name=f"n{i}",
                users=self.users,
                permissions=self.permissions,
                mqtt_options=self.mqtt_options,
                cluster_port=port,
                routes=[p for p in cluster_ports if p != port],
            )
            for i, port in enumerate(cluster_ports)
        ]

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> None:
        """Start every node. A port that ``free_port`` found free may be taken by another process before the node
        binds it (twelve ports, a busy machine): then the whole cluster starts again on fresh ports and stores."""
        for attempt in range(attempts):
            deadline = time.monotonic() + timeout_s
            try:
                for node in self.nodes:
                    node.spawn()
                for node in self.nodes:
                    node.wait_ready(max(1.0, deadline - time.monotonic()))
                return
            except ServiceError as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                for node in self.nodes:
                    shutil.rmtree(node.workdir, ignore_errors=True)
                self.__post_init__()
            except BaseException:
                self.stop()  # no node left running behind a cluster that did not come up
                raise

    def stop(self, timeout_s: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout_s)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
