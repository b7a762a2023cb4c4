"""Generate a locked-down nats-server 2.9 configuration serving the product's MQTT: bcrypt passwords, per-role
permissions equivalent to the mosquitto ACLs of :mod:`plm.ops.broker` (``plm broker-config --broker nats``).

NATS serves MQTT 3.1.1 (2.9: not MQTT 5) on its ``mqtt {}`` listener and keeps the MQTT state in JetStream:
sessions, retained messages and QoS 1 messages are streams of the users' account, so the account needs
``jetstream: enabled``. Permissions are written on NATS *subjects*, not topics: ``/`` becomes ``.``, ``+``
becomes ``*`` and ``#`` becomes ``>`` (``plm/v1/alice/left-ankle/acc`` is ``plm.v1.alice.left-ankle.acc``).
The project's subject and sensor ids cannot hold a ``.`` or a space (:func:`plm.wire.validate_id`), the two
characters NATS would escape or refuse, so the mapping is exact.

What NATS needs beyond the mosquitto ACL (found against nats-server 2.9.10, tests/test_broker_nats.py):

* every user that subscribes with QoS 1 needs subscribe permission on ``$MQTT.sub.>``: a QoS 1 subscription
  is a JetStream consumer that delivers to ``$MQTT.sub.<id>``, which the server subscribes to *as that user*;
  without it the SUBACK fails (0x80) or, for a session made before, nothing is delivered;
* a subscription wider than the permissions (Home Assistant's ``homeassistant/#``) is refused as a whole,
  where mosquitto grants it and filters each message: a viewer must subscribe to its own subjects' topics;
* a forbidden publish is acknowledged (PUBACK) and dropped, as on mosquitto;
* there is no packet size cap for MQTT: with ``max_payload: 131072`` a 131,073-byte MQTT message still reached
  its subscriber on 2.9.10 (the setting is the NATS protocol's), so unlike mosquitto's ``max_packet_size``
  nothing is written for it (the server's default limit, 1 MB, applies as it may); the detector's own checks
  of a batch (plm.wire) are the bound.

Users may connect over MQTT only (``allowed_connection_types``), and that is what keeps ``$MQTT.sub.>`` safe:
over MQTT a subscription to ``$MQTT/sub/#`` is refused, but over the NATS protocol (the client port, which
cannot be switched off) the same permission let a viewer of another subject subscribe to ``$MQTT.sub.>`` and
receive a collector's raw batches on their way to the detector (tried by hand on 2.9.10 with
``allowed_connection_types`` removed; the test checks that the NATS port refuses these users).
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plm.ops.broker import BrokerConfigError, BrokerUser, Owner, role_topics, write_private_file

# bcrypt work factor of the password hashes. Go's bcrypt.DefaultCost is 10 and the NATS CLI's
# `nats server passwd` writes 11: the server checks one hash per CONNECT (~0.1 s here at 11), which only
# reconnects pay, and every doubling is a doubling for someone guessing from a stolen config file
BCRYPT_COST = 11  # published: 10 (Go default), 11 (`nats server passwd`)
BCRYPT_MAX_BYTES = 72  # bcrypt reads at most 72 bytes of a password; a longer one would be cut silently
MQTT_DELIVERY_SUBJECTS = "$MQTT.sub.>"  # where NATS delivers a QoS 1 subscription's messages (see above)
# QoS 1 messages in flight, unacknowledged, to one MQTT subscription (nats-server default 1024), the
# counterpart of mosquitto's max_inflight_messages (plm/ops/broker.py sets 16384): the detector acknowledges a
# group only once it is journaled, so this bounds its groups (docs/live.md). nats-server 2.9 accepts up to 65535
MQTT_MAX_ACK_PENDING = 16384  # published default: 1024
ACCOUNT = "PLM"


def nats_subject(topic_filter: str) -> str:
    """An MQTT topic filter of the product as the NATS subject (filter) the server maps it to."""
    return topic_filter.replace("/", ".").replace("+", "*").replace("#", ">")


def nats_permissions(user: BrokerUser) -> dict[str, dict[str, list[str]]]:
    """The user's role (:func:`plm.ops.broker.role_topics`) as a NATS permission map, plus the QoS 1 delivery
    subjects every role needs (each subscribes with QoS 1: the collector its acks and ``_owner``, the detector
    the samples, a viewer the results)."""
    publish: list[str] = []
    subscribe: list[str] = []
    for access, topic in role_topics(user):
        subject = nats_subject(topic)
        if "write" in access:
            publish.append(subject)
        if "read" in access:
            subscribe.append(subject)
    subscribe.append(MQTT_DELIVERY_SUBJECTS)
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def bcrypt_hash(password: str, cost: int = BCRYPT_COST) -> str:
    """A ``$2b$`` bcrypt hash, which nats-server 2.9 accepts as a password (it compares with bcrypt when the
    configured password starts with ``$2``). The ``bcrypt`` package when installed, else the C library's
    crypt(3) (libxcrypt on Debian has bcrypt), through Python's ``crypt`` module (3.11; removed in 3.13)."""
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise BrokerConfigError(f"a NATS password longer than {BCRYPT_MAX_BYTES} bytes would be cut by bcrypt")
    try:
        bcrypt = importlib.import_module("bcrypt")  # optional; not a dependency
        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode())
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None  # type: ignore[assignment]
    if crypt is None or crypt.METHOD_BLOWFISH not in crypt.methods:
        raise BrokerConfigError("no bcrypt on this system for the NATS password hashes: pip install bcrypt")
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**cost))
    if not hashed or not hashed.startswith("$2"):
        raise BrokerConfigError("the C library's crypt did not return a bcrypt hash: pip install bcrypt")
    return hashed


def nats_conf(
    users: Iterable[tuple[BrokerUser, str]],
    *,
    store_dir: Path,
    port: int = 1883,
    bind: str = "",
    client_port: int = 4222,
    server_name: str = "plm",
) -> dict[str, object]:
    """The nats-server configuration (a map; written as JSON, which the NATS config format reads) for
    ``users`` with their password hashes: one JetStream account, MQTT-only users with their role's
    permissions, the MQTT listener on ``bind:port``; the NATS client port on loopback only."""
    entries = [
        {
            "user": user.name,
            "password": hashed,
            "permissions": nats_permissions(user),
            "allowed_connection_types": ["MQTT"],
        }
        for user, hashed in users
    ]
    return {
        "server_name": server_name,
        # the NATS protocol port cannot be switched off; nobody may use it (MQTT-only users), and it is not exposed
        "listen": f"127.0.0.1:{client_port}",
        "jetstream": {"store_dir": str(store_dir)},
        "mqtt": {"listen": f"{bind or '0.0.0.0'}:{port}", "max_ack_pending": MQTT_MAX_ACK_PENDING},
        "accounts": {ACCOUNT: {"jetstream": "enabled", "users": entries}},
    }


@dataclass
class NatsFiles:
    config: Path
    store_dir: Path
    generated: dict[str, str] = field(default_factory=dict)  # env var -> password made up now
    owner: Owner | None = None
    not_chowned: list[Path] = field(default_factory=list)


def write_nats_config(
    out_dir: Path,
    users: Iterable[BrokerUser],
    passwords: Mapping[str, str] | None = None,
    *,
    generate_missing: bool = False,
    port: int = 1883,
    bind: str = "",
    client_port: int = 4222,
    store_dir: Path | None = None,
    owner: Owner | None = None,
) -> NatsFiles:
    """Write ``nats.conf`` (mode 600: it holds the password hashes) into ``out_dir`` and create the JetStream
    store directory (default ``out_dir/jetstream``). Passwords as :func:`plm.ops.broker.write_broker_config`:
    from ``passwords`` (by env-var name) or the environment, a missing one an error unless
    ``generate_missing``. ``owner``: the account nats-server runs as (Debian: ``nats``), given the file and
    the store."""
    users = list(users)
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise BrokerConfigError("a broker user is listed twice")
    source = dict(os.environ if passwords is None else passwords)
    generated: dict[str, str] = {}
    hashed: list[tuple[BrokerUser, str]] = []
    for user in users:
        password = source.get(user.password_env)
        if not password:
            if not generate_missing:
                raise BrokerConfigError(
                    f"no password for broker user {user.name!r}: set {user.password_env} (or use --generate-missing)"
                )
            password = secrets.token_urlsafe(24)
            generated[user.password_env] = password
        try:
            hashed.append((user, bcrypt_hash(password)))
        except BrokerConfigError as exc:
            raise BrokerConfigError(f"broker user {user.name!r}: {exc}") from None
    out_dir = out_dir.absolute()
    store = (store_dir or out_dir / "jetstream").absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    conf = out_dir / "nats.conf"
    text = nats_conf(hashed, store_dir=store, port=port, bind=bind, client_port=client_port)
    write_private_file(conf, "# generated by `plm broker-config --broker nats`\n" + json.dumps(text, indent=1) + "\n")
    files = NatsFiles(conf, store, generated, owner)
    if owner is not None:
        for path in (conf, store):
            try:
                os.chown(path, owner.uid, owner.gid)
            except PermissionError:
                files.not_chowned.append(path)
    return files
