"""`plm broker-config`: write a locked-down mosquitto configuration (passwords, ACLs, TLS)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

DEFAULT_ROOT_OWNER = "mosquitto"  # mosquitto 2.0's own default `user` when started as root


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "broker-config",
        help="generate mosquitto.conf, password file and per-role ACLs",
        description=(
            "Write mosquitto.conf, passwd and acl into OUT. Users are NAME:ROLE[:SUBJECTS] with ROLE collector "
            "(publishes samples of its subjects only), detector (reads samples, publishes results) or viewer "
            "(reads its subjects' results, writes diary notes). Passwords come from PLM_BROKER_PASSWORD_<NAME>."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to write into")
    parser.add_argument("--user", action="append", required=True, help="NAME:ROLE[:SUBJECT,...]; repeat per user")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--bind", default="", help="address to listen on (default: all)")
    parser.add_argument("--persistence-dir", type=Path, help="where mosquitto keeps sessions (default: OUT)")
    parser.add_argument(
        "--owner",
        metavar="USER[:GROUP]",
        help=(
            "the account mosquitto runs as: written as its `user` and given the files and the persistence directory "
            "(default when run as root: mosquitto, the account mosquitto switches to when started as root)"
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
