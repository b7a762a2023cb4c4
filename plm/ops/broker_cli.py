"""`plm broker-config`: write a locked-down mosquitto configuration (passwords, ACLs, TLS), or with
``--broker nats`` a nats-server one (bcrypt passwords, per-role permissions; plm/ops/broker_nats.py)."""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from pathlib import Path

DEFAULT_ROOT_OWNER = "mosquitto"  # mosquitto 2.0's own default `user` when started as root
NATS_ROOT_OWNER = "nats"  # the account Debian's nats-server.service runs as (User=nats)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "broker-config",
        help="generate mosquitto.conf, password file and per-role ACLs (or a nats-server config)",
        description=(
            "Write mosquitto.conf, passwd and acl into OUT (--broker nats: nats.conf, with bcrypt password hashes "
            "and per-user permissions, MQTT-only users). Users are NAME:ROLE[:SUBJECTS] with ROLE collector "
            "(publishes samples of its subjects only), detector (reads samples, publishes results) or viewer "
            "(reads its subjects' results, writes diary notes). Passwords come from PLM_BROKER_PASSWORD_<NAME>."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to write into")
    parser.add_argument("--broker", choices=("mosquitto", "nats"), default="mosquitto", help="the broker to configure")
    parser.add_argument("--user", action="append", required=True, help="NAME:ROLE[:SUBJECT,...]; repeat per user")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--bind", default="", help="address to listen on (default: all)")
    parser.add_argument(
        "--persistence-dir",
        type=Path,
        help="where mosquitto keeps sessions (default: OUT); for nats the JetStream store (default: OUT/jetstream)",
    )
    parser.add_argument(
        "--nats-client-port",
        type=int,
        default=4222,
        help="nats only: the NATS protocol port, which cannot be switched off; bound to 127.0.0.1, no user may use it",
    )
    parser.add_argument(
        "--owner",
        metavar="USER[:GROUP]",
        help=(
            "the account mosquitto runs as: written as its `user` and given the files and the persistence directory "
            "(default when run as root: mosquitto, the account mosquitto switches to when started as root; "
            "for nats: nats, the account Debian's nats-server service runs as)"
        ),
    )
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path, help="private key; mosquitto reads it as the --owner account")
    parser.add_argument("--tls-port", type=int, default=8883)
    parser.add_argument(
        "--generate-missing",
        action="store_true",
        help="make up random passwords for users without one and write them to OUT/generated.env (mode 600)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plm.ops.broker import (
        BrokerConfigError,
        Owner,
        TlsFiles,
        access_problems,
        parse_user_spec,
        write_broker_config,
        write_private_file,
    )

    if args.broker == "nats":
        return run_nats(args)
    tls_parts = (args.tls_ca, args.tls_cert, args.tls_key)
    if any(tls_parts) and not all(tls_parts):
        print("plm broker-config: --tls-ca, --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key, args.tls_port) if all(tls_parts) else None
    as_root = os.geteuid() == 0
    try:  # as root, without --owner, the files go to the account mosquitto would switch to
        owner = Owner.parse(args.owner or DEFAULT_ROOT_OWNER) if args.owner or as_root else None
    except BrokerConfigError as exc:
        print(f"plm broker-config: {exc}; pass --owner USER[:GROUP], the account mosquitto runs as", file=sys.stderr)
        return 2
    try:
        users = [parse_user_spec(spec) for spec in args.user]
        files = write_broker_config(
            args.out,
            users,
            generate_missing=args.generate_missing,
            port=args.port,
            bind=args.bind,
            persistence_dir=args.persistence_dir,
            tls=tls,
            owner=owner,
        )
    except (BrokerConfigError, ValueError) as exc:
        print(f"plm broker-config: {exc}", file=sys.stderr)
        return 2
    if files.generated:
        env_file = args.out / "generated.env"
        write_private_file(env_file, "".join(f"{k}={v}\n" for k, v in files.generated.items()))
        print(f"generated passwords for {', '.join(files.generated)} in {env_file}")
    print(f"wrote {files.config}, {files.passwd}, {files.acl}" + (f" for user {owner}" if owner else ""))
    if owner is None:
        print(f"passwd and acl are readable by {getpass.getuser()} only: run mosquitto as that user, or see --owner")
        return 0
    if files.not_chowned:
        print(f"plm broker-config: cannot give the files to {owner.name} (not root); as root, run:", file=sys.stderr)
        print(files.chown_command(), file=sys.stderr)
        return 1
    tls_files = [tls.cafile, tls.certfile, tls.keyfile] if tls else []
    persistence = args.persistence_dir or args.out
    problems = access_problems(owner, read=[files.config, files.passwd, files.acl, *tls_files], write=[persistence])
    for problem in problems:
        print(f"plm broker-config: mosquitto would fail: {problem}", file=sys.stderr)
    return 1 if problems else 0


def run_nats(args: argparse.Namespace) -> int:
    """``--broker nats``: nats.conf (mode 600) and the JetStream store; the same conventions as mosquitto's."""
    from plm.ops.broker import BrokerConfigError, Owner, access_problems, parse_user_spec, write_private_file
    from plm.ops.broker_nats import write_nats_config

    if any((args.tls_ca, args.tls_cert, args.tls_key)):
        print(
            "plm broker-config: --broker nats does not write TLS yet; add mqtt { tls {...} } by hand", file=sys.stderr
        )
        return 2
    try:
        owner = Owner.parse(args.owner or NATS_ROOT_OWNER) if args.owner or os.geteuid() == 0 else None
    except BrokerConfigError as exc:
        print(f"plm broker-config: {exc}; pass --owner USER[:GROUP], the account nats-server runs as", file=sys.stderr)
        return 2
    try:
        users = [parse_user_spec(spec) for spec in args.user]
        files = write_nats_config(
            args.out,
            users,
            generate_missing=args.generate_missing,
            port=args.port,
            bind=args.bind,
            client_port=args.nats_client_port,
            store_dir=args.persistence_dir,
            owner=owner,
        )
    except (BrokerConfigError, ValueError) as exc:
        print(f"plm broker-config: {exc}", file=sys.stderr)
        return 2
    if files.generated:
        env_file = args.out / "generated.env"
        write_private_file(env_file, "".join(f"{k}={v}\n" for k, v in files.generated.items()))
        print(f"generated passwords for {', '.join(files.generated)} in {env_file}")
    print(f"wrote {files.config} (JetStream store {files.store_dir})" + (f" for user {owner}" if owner else ""))
    print('clients connect with MQTT 3.1.1: set mqtt.protocol = "3.1.1" (NATS 2.9 refuses MQTT 5)')
    if owner is None:
        print(f"nats.conf is readable by {getpass.getuser()} only: run nats-server as that user, or see --owner")
        return 0
    if files.not_chowned:
        print(f"plm broker-config: cannot give the files to {owner.name} (not root); as root, run:", file=sys.stderr)
        print(shlex.join(["chown", str(owner), *map(str, files.not_chowned)]), file=sys.stderr)
        return 1
    problems = access_problems(owner, read=[files.config], write=[files.store_dir])
    for problem in problems:
        print(f"plm broker-config: nats-server would fail: {problem}", file=sys.stderr)
    return 1 if problems else 0
