"""Generate a locked-down mosquitto 2 configuration: passwords, per-role ACLs, optional TLS.

Why generated, not hand-written: the access rules follow from who may see a person's nights, and
the same rules must hold in the compose stack, in ``plm demo`` and in the security tests. So one
function writes ``mosquitto.conf``, the password file and the ACL, and the tests run the result
against a real mosquitto.

Roles (least privilege; ``<s>`` is each subject the user serves):

=========  ============================================================  ======================================
role       may publish                                                   may read
=========  ============================================================  ======================================
collector  ``plm/v1/<s>/+/acc``, ``plm/v1/<s>/+/status``                 ``plm/v1/<s>/+/ack``, ``plm/v1/<s>/_owner``
detector   ``plm/v1/+/_movement``, ``plm/v1/+/_night``,                  ``plm/v1/+/+/acc``,
           ``plm/v1/+/+/ack``, ``plm/v1/+/_owner``, ``plm/v1/_detector/#``, ``plm/v1/+/+/status``, ``plm/v1/+/_diary``
           ``homeassistant/sensor/+/+/config``
viewer     ``plm/v1/<s>/_diary``                                         ``plm/v1/<s>/_movement``,
                                                                         ``plm/v1/<s>/_night``,
                                                                         ``homeassistant/sensor/plm_<s>/+/config``
=========  ============================================================  ======================================

A collector serves explicit subjects (a simulator is a collector of its simulated subjects). The
detector cannot publish samples, so a compromised detector cannot forge a night. The viewer (Home
Assistant, a ward display) reads results only -- not raw acceleration, sensor status or acks -- and
only its own subjects' discovery configs, so it does not learn the ids of other subjects. mosquitto
2.0 grants a viewer's wider subscriptions (Home Assistant subscribes to ``homeassistant/#`` or
``homeassistant/+/+/config`` and ``homeassistant/+/+/+/config``) and filters each message by this ACL,
retained ones included; Home Assistant's birth and last-will messages on ``homeassistant/status`` are
dropped (no write right), which it does not need because the discovery configs are retained.

When mosquitto 2.0 is started as root it switches to its ``user`` (default ``mosquitto``) *before* it
reads the password and ACL files, and writes its persistence file as that user: so those files and the
persistence directory must belong to that account (``owner`` below; ``plm broker-config --owner``).
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import secrets
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plm.wire import TOPIC_ROOT, validate_id

ROLES = ("collector", "detector", "viewer")
MAX_PACKET_BYTES = 128 * 1024  # twice the largest valid batch; anything bigger is refused by the broker
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes ($7$101$...)
HA_DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix


class BrokerConfigError(ValueError):
    """A broker user is mis-specified or lacks a password."""


@dataclass(frozen=True)
class BrokerUser:
    name: str
    role: str
    subjects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_id(self.name, "broker user name")
        if self.role not in ROLES:
            raise BrokerConfigError(f"broker user {self.name!r}: role must be one of {', '.join(ROLES)}")
        for subject in self.subjects:
            validate_id(subject, "subject")
        if self.role in ("collector", "viewer") and not self.subjects:
            raise BrokerConfigError(f"broker user {self.name!r}: a {self.role} needs the subjects it serves")

    @property
    def password_env(self) -> str:
        """The environment variable holding this user's password, e.g. ``PLM_BROKER_PASSWORD_DETECTOR``."""
        return "PLM_BROKER_PASSWORD_" + self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class Owner:
    """The account mosquitto runs as, which must own its files.

    mosquitto 2.0 started as root switches to its ``user`` right after parsing ``mosquitto.conf`` and
    only then reads the password file, the ACL, the TLS files and its persistence file (and re-reads them
    as that user on SIGHUP), so root-owned 0600 files stop it with "Unable to open pwfile".
    """

    name: str
    uid: int
    gid: int
    group: str

    @classmethod
    def parse(cls, spec: str) -> Owner:
        """``USER[:GROUP]`` (names or numeric ids) of an account on this host; the group defaults to the user's."""
        user, _, group = spec.partition(":")
        try:
            account = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise BrokerConfigError(f"owner {spec!r}: no account {user!r} on this host") from None
        group = group or str(account.pw_gid)
        try:
            entry = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
        except KeyError:
            raise BrokerConfigError(f"owner {spec!r}: no group {group!r} on this host") from None
        return cls(account.pw_name, account.pw_uid, entry.gr_gid, entry.gr_name)

    def __str__(self) -> str:
        return f"{self.name}:{self.group}"


@dataclass
class TlsFiles:
    cafile: Path
    certfile: Path
    keyfile: Path
    port: int = 8883


def password_hash(password: str, salt: bytes | None = None) -> str:
    """mosquitto 2 password-file hash: ``$7$101$<salt>$<PBKDF2-HMAC-SHA512>`` (base64)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, dklen=64)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def role_topics(user: BrokerUser) -> list[tuple[str, str]]:
    """(access, MQTT topic filter) pairs a user's role grants, access ``read``, ``write`` or ``readwrite``: the
    one statement of the roles (module docstring), written as a mosquitto ACL here and as NATS permissions by
    plm/ops/broker_nats.py."""
    rules: list[tuple[str, str]] = []
    if user.role == "collector":
        for s in user.subjects:
            rules += [
                ("write", f"{TOPIC_ROOT}/{s}/+/acc"),
                ("write", f"{TOPIC_ROOT}/{s}/+/status"),
                ("read", f"{TOPIC_ROOT}/{s}/+/ack"),  # the detector's acks of its own sensors only
                ("read", f"{TOPIC_ROOT}/{s}/_owner"),  # a detector receives the subject: batches may go
            ]
    elif user.role == "detector":
        rules += [
            ("read", f"{TOPIC_ROOT}/+/+/acc"),
            ("read", f"{TOPIC_ROOT}/+/+/status"),
            ("read", f"{TOPIC_ROOT}/+/_diary"),
            ("write", f"{TOPIC_ROOT}/+/_movement"),
            ("write", f"{TOPIC_ROOT}/+/_night"),
            ("write", f"{TOPIC_ROOT}/+/+/ack"),
            ("write", f"{TOPIC_ROOT}/+/_owner"),
            ("readwrite", f"{TOPIC_ROOT}/_detector/#"),
            ("write", f"{HA_DISCOVERY_PREFIX}/sensor/+/+/config"),  # only the discovery configs it sends
        ]
    else:  # viewer: its subjects' results and discovery configs, nothing raw, no other subject's id
        for s in user.subjects:
            rules += [
                ("read", f"{TOPIC_ROOT}/{s}/_movement"),
                ("read", f"{TOPIC_ROOT}/{s}/_night"),
                ("write", f"{TOPIC_ROOT}/{s}/_diary"),
                ("read", f"{HA_DISCOVERY_PREFIX}/sensor/plm_{s}/+/config"),  # as detector/live/outputs.py names them
            ]
    return rules


def acl_text(users: Iterable[BrokerUser]) -> str:
    """The ACL file: nothing for anonymous, then each user's topics."""
    lines = ["# generated by `plm broker-config` -- edit the users, not this file", ""]
    for user in users:
        lines.append(f"user {user.name}")
        lines += [f"topic {access} {topic}" for access, topic in role_topics(user)]
        lines.append("")
    return "\n".join(lines)


def mosquitto_conf(
    config_dir: Path,
    *,
    port: int = 1883,
    bind: str = "",
    persistence_dir: Path | None = None,
    tls: TlsFiles | None = None,
    run_as_user: str | None = None,
) -> str:
    """``mosquitto.conf`` with password auth, the ACL, a packet size cap and (optionally) a TLS listener."""
    listener = f"listener {port} {bind}".rstrip()
    lines = [
        "# generated by `plm broker-config`",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {config_dir / 'passwd'}",
        f"acl_file {config_dir / 'acl'}",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "persistence true",
        # write the in-memory store (queued QoS 1 messages, sessions) every second, not every 30 min:
        # a broker killed without warning then loses at most a second of what it had acknowledged
        "autosave_interval 1",
        f"persistence_location {str(persistence_dir or config_dir) + '/'}",
        "persistent_client_expiration 7d",
        # past this many queued messages mosquitto drops QoS 1 messages for a slow or absent consumer:
        # ~3 hours of 10 sensors, so a detector restart or a long outage loses nothing
        "max_queued_messages 100000",
        # unacknowledged QoS 1 messages in flight to one client (default 20). The detector subscribes with
        # MQTT 3.1.1 (cheaper to decode) and acknowledges a group only once it is journaled: 20 would make its
        # groups a few dozen batches. MQTT 5 clients ask for their own limit (Receive Maximum) below this
        "max_inflight_messages 16384",
        listener,
    ]
    if run_as_user:
        lines.insert(1, f"user {run_as_user}")
    if tls is not None:
        lines += [
            f"listener {tls.port} {bind}".rstrip(),
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class BrokerFiles:
    config: Path
    passwd: Path
    acl: Path
    generated: dict[str, str] = field(default_factory=dict)  # env var -> password made up now
    owner: Owner | None = None
    not_chowned: list[Path] = field(default_factory=list)  # what this process may not give to ``owner``

    def chown_command(self) -> str:
        """The exact command that finishes the job when this process could not (it is not root)."""
        return shlex.join(["chown", str(self.owner), *map(str, self.not_chowned)])


def write_broker_config(
    out_dir: Path,
    users: Iterable[BrokerUser],
    passwords: Mapping[str, str] | None = None,
    *,
    generate_missing: bool = False,
    port: int = 1883,
    bind: str = "",
    persistence_dir: Path | None = None,
    tls: TlsFiles | None = None,
    run_as_user: str | None = None,
    owner: Owner | None = None,
) -> BrokerFiles:
    """Write ``mosquitto.conf``, ``passwd`` and ``acl`` into ``out_dir`` and create the persistence directory.

    Passwords come from ``passwords`` (by env-var name) or the environment. A missing one is an error
    naming the variable, unless ``generate_missing``: then a random one is made and returned, for the
    caller to hand to the user (never a silent default).

    ``owner``: the account mosquitto runs as. It becomes the config's ``user`` and gets the three files
    and the persistence directory; what this process may not chown is listed in ``not_chowned``.
    ``run_as_user`` only writes the ``user`` line (e.g. ``root`` for a test broker that must not switch).
    """
    if owner is not None and run_as_user is not None:
        raise BrokerConfigError("give the owner or run_as_user, not both: the owner is the user mosquitto runs as")
    users = list(users)
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise BrokerConfigError("a broker user is listed twice")
    source = dict(os.environ if passwords is None else passwords)
    generated: dict[str, str] = {}
    entries = []
    for user in users:
        password = source.get(user.password_env)
        if not password:
            if not generate_missing:
                raise BrokerConfigError(
                    f"no password for broker user {user.name!r}: set {user.password_env} (or use --generate-missing)"
                )
            password = secrets.token_urlsafe(24)
            generated[user.password_env] = password
        entries.append(f"{user.name}:{password_hash(password)}")
    # absolute paths: mosquitto resolves relative ones against its working directory (``/`` under systemd)
    out_dir = out_dir.absolute()
    persistence_dir = persistence_dir.absolute() if persistence_dir else None
    out_dir.mkdir(parents=True, exist_ok=True)
    persistence = persistence_dir or out_dir
    persistence.mkdir(parents=True, exist_ok=True)  # mosquitto does not create it: it would just fail to save
    passwd, acl, conf = out_dir / "passwd", out_dir / "acl", out_dir / "mosquitto.conf"
    write_private_file(passwd, "\n".join(entries) + "\n")
    write_private_file(acl, acl_text(users))
    run_as = owner.name if owner is not None else run_as_user
    conf.write_text(
        mosquitto_conf(out_dir, port=port, bind=bind, persistence_dir=persistence_dir, tls=tls, run_as_user=run_as)
    )
    files = BrokerFiles(conf, passwd, acl, generated, owner)
    if owner is not None:
        database = persistence / "mosquitto.db"  # one left by a broker that ran as another user
        for path in (passwd, acl, conf, persistence, *([database] if database.exists() else [])):
            try:
                os.chown(path, owner.uid, owner.gid)
            except PermissionError:
                files.not_chowned.append(path)
    return files


def access_problems(owner: Owner, read: Iterable[Path] = (), write: Iterable[Path] = ()) -> list[str]:
    """What ``owner`` could not do with these paths, judged from their mode bits (this process may be root).

    Owning the files is not enough: every directory above them must let the owner in, so e.g. ``--out``
    inside ``/root`` (mode 700) fails as surely as a root-owned password file.
    """
    if owner.uid == 0:
        return []
    groups = set(os.getgrouplist(owner.name, owner.gid))

    def allows(path: Path, bits: int) -> bool:
        st = path.stat()
        shift = 6 if st.st_uid == owner.uid else 3 if st.st_gid in groups else 0
        return (st.st_mode >> shift) & bits == bits

    problems: dict[str, None] = {}  # ordered, without repeating a shared parent
    for path, bits, what in [(p, 4, "read") for p in read] + [(p, 3, "write") for p in write]:
        path = path.resolve()
        if not path.exists():
            problems[f"{path} does not exist"] = None
            continue
        closed = next((d for d in reversed(path.parents) if not allows(d, 1)), None)
        if closed is not None:
            problems[f"{owner.name} cannot enter {closed} (mode {closed.stat().st_mode & 0o777:o})"] = None
        elif not allows(path, bits):
            problems[f"{owner.name} cannot {what} {path} (mode {path.stat().st_mode & 0o777:o})"] = None
    return list(problems)


def write_private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def parse_user_spec(spec: str) -> BrokerUser:
    """``NAME:ROLE[:SUBJECT,SUBJECT...]`` from the command line, e.g. ``bedroom:collector:alice,bob``."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise BrokerConfigError(f"user spec {spec!r}: expected NAME:ROLE[:SUBJECT,...]")
    subjects = tuple(s for s in parts[2].split(",") if s) if len(parts) == 3 else ()
    try:
        return BrokerUser(parts[0], parts[1], subjects)
    except ValueError as exc:
        raise BrokerConfigError(f"user spec {spec!r}: {exc}") from None
