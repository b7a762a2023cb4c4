"""`plm stack ...`: first-start steps of the docker-compose stack (run inside the project image).

plm stack init-secrets --dir /secrets     # every start: make missing secrets, write mosquitto config
plm stack init-secrets --rotated grafana/admin-password   # after changing that password in Grafana itself
plm stack influx-tokens --dir /secrets    # once InfluxDB is healthy: detector + Grafana tokens
plm stack show --dir /secrets viewer      # print one secret (e.g. the viewer's MQTT password)
plm stack healthcheck-detector            # exit 0 when the detector's retained status is "online"
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from plm.cli import LazyChoices, number


def _showable() -> tuple[str, ...]:
    from plm.ops.stack import SECRETS  # plm.ops.stack (and numpy through plm.wire) only when a stack command runs

    return ("viewer", *(rel for rel, _ in SECRETS), "detector/influx-token", "grafana/influx-token")


SHOWABLE = LazyChoices(_showable)


def _rotatable() -> tuple[str, ...]:
    from plm.ops.stack import FIRST_START_ONLY

    return tuple(FIRST_START_ONLY)


ROTATABLE = LazyChoices(_rotatable)


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser(
        "stack", help="docker-compose first-start steps: secrets, broker config, InfluxDB tokens"
    )
    sub = stack.add_subparsers(dest="stack_command", metavar="SUBCOMMAND")

    init = sub.add_parser(
        "init-secrets",
        help="create missing secrets (random, or from PLM_* variables) and write the mosquitto configuration",
    )
    init.add_argument("--dir", type=Path, default=None, help=DIR_HELP)
    init.add_argument(
        "--sim-subjects",
        type=int,
        default=int(os.environ.get("PLM_SIM_SUBJECTS", "1") or 1),
        help="simulated subjects the simulator may publish (default $PLM_SIM_SUBJECTS or 1)",
    )
    init.add_argument(
        "--collector-subjects",
        default=os.environ.get("PLM_COLLECTOR_SUBJECTS", ""),
        help="comma-separated subjects the BLE collector may publish (default $PLM_COLLECTOR_SUBJECTS)",
    )
    init.add_argument(
        "--viewer-subjects",
        default=os.environ.get("PLM_VIEWER_SUBJECTS", ""),
        help="subjects the viewer (Home Assistant) may read (default: all the stack's subjects)",
    )
    init.add_argument("--broker-config-dir", default="/mosquitto/config", help="config dir as the broker sees it")
    init.add_argument("--broker-data-dir", default="/mosquitto/data", help="persistence dir as the broker sees it")
    init.add_argument("--mqtt-port", type=int, default=1883)
    init.add_argument("--mqtt-bind", default="", help="listen address (default: all, inside the container)")
    init.add_argument("--broker-run-as", default=None, help="mosquitto `user` option (default: image's mosquitto)")
    init.add_argument(
        "--rotated",
        action="append",
        default=[],
        choices=ROTATABLE,
        metavar="NAME",
        help="a first-start-only secret you have changed in its service: store its variable's new value "
        "(otherwise a changed value is refused). One of: %(choices)s",
    )
    init.set_defaults(func=_init)

    tokens = sub.add_parser("influx-tokens", help="create the detector's write and Grafana's read token if missing")
    tokens.add_argument("--dir", type=Path, default=None, help=DIR_HELP)
    tokens.add_argument("--url", type=_http_url, default=os.environ.get("PLM_INFLUX__URL", "http://influxdb:8086"))
    tokens.add_argument("--org", default=os.environ.get("PLM_INFLUX__ORG", "plm"))
    tokens.add_argument("--bucket", default=os.environ.get("PLM_INFLUX__BUCKET", "plm"))
    tokens.add_argument("--wait-s", type=float, default=60.0, help="keep retrying this long while InfluxDB starts")
    tokens.set_defaults(func=_tokens)

    show = sub.add_parser("show", help="print one generated secret, e.g. `viewer` (the Home Assistant MQTT password)")
    show.add_argument("name", choices=SHOWABLE, metavar="NAME", help="one of: %(choices)s")
    show.add_argument("--dir", type=Path, default=None, help=DIR_HELP)
    show.set_defaults(func=_show)

    sim = sub.add_parser("simulate", help="the stack's simulated sensor: last night fast once, then live nights")
    sim.add_argument(
        "--subjects", type=number(int, 1, 10_000), default=int(os.environ.get("PLM_SIM_SUBJECTS", "1") or 1)
    )
    sim.add_argument("--profile", default=os.environ.get("PLM_SIM_PROFILE", "rls-severe"))
    sim.add_argument(
        "--speed", type=number(float, high=10_000, above=0), default=float(os.environ.get("PLM_SIM_SPEED", "1") or 1)
    )
    sim.add_argument(
        "--replay-speed",
        type=number(float, high=10_000, above=0),
        default=float(os.environ.get("PLM_SIM_REPLAY_SPEED", "500") or 500),
    )
    sim.add_argument("--hours", type=number(float, 0.25, 16), default=8.0)
    sim.add_argument("--state-dir", type=Path, default=Path("/var/lib/plm/simulator"))
    sim.set_defaults(func=_simulate)

    health = sub.add_parser(
        "healthcheck-detector",
        help="exit 0 if the detector's retained MQTT status is online and its worker refreshed it recently",
    )
    health.add_argument("--timeout-s", type=float, default=5.0)
    health.add_argument(
        "--max-age-s",
        type=float,
        default=None,
        help="a status older than this is a stuck worker (default: 6 x the detector's status interval, >= 60 s)",
    )
    health.set_defaults(func=_health)
    stack.set_defaults(func=lambda _args: (stack.print_help(), 2)[1])


DIR_HELP = "secrets root (default /secrets inside the project's container; required elsewhere)"
CONTAINER_SECRETS = Path("/secrets")


def in_container() -> bool:
    """Docker writes /.dockerenv into every container, Podman /run/.containerenv."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def secrets_dir(args: argparse.Namespace) -> Path | None:
    """``--dir``, or ``/secrets`` inside a container. On a host the default would create ``/secrets`` at the
    filesystem root with files for the container's uids (issue 18): there ``--dir`` is required."""
    if args.dir is not None:
        return Path(args.dir)
    if in_container():
        return CONTAINER_SECRETS
    print(
        f"plm stack {args.stack_command}: outside a container give --dir DIR (the compose stack keeps its secrets "
        "in the init container's /secrets: run `docker compose run --rm init stack ...` to use those)",
        file=sys.stderr,
    )
    return None


def _http_url(text: str) -> str:
    """``--url``: InfluxDB's address, checked where it is parsed (urllib would raise 'unknown url type' later)."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL, e.g. http://influxdb:8086")
    return text.strip()


def _init(args: argparse.Namespace) -> int:
    from plm.ops.stack import StackError, init_secrets, simulated_subjects

    directory = secrets_dir(args)
    if directory is None:
        return 2

    try:
        result = init_secrets(
            directory,
            sim_subjects=simulated_subjects(args.sim_subjects),
            collector_subjects=[s.strip() for s in args.collector_subjects.split(",") if s.strip()],
            viewer_subjects=[s.strip() for s in args.viewer_subjects.split(",") if s.strip()],
            broker_config_dir=args.broker_config_dir,
            broker_data_dir=args.broker_data_dir,
            mqtt_port=args.mqtt_port,
            mqtt_bind=args.mqtt_bind,
            broker_run_as=args.broker_run_as,
            rotated=args.rotated,
        )
    except (StackError, ValueError, OSError) as exc:
        print(f"plm stack init-secrets: {exc}", file=sys.stderr)
        return 2
    if result.created:
        print(f"created {len(result.created)} secret(s): {', '.join(result.created)}")
    if result.from_env:
        print(f"from the environment: {', '.join(result.from_env)}")
    if result.kept:
        print(f"kept {len(result.kept)} existing secret(s)")
    users = ", ".join(f"{u.name} ({u.role}: {','.join(u.subjects) or 'all subjects'})" for u in result.broker_users)
    print(f"mosquitto users: {users}")
    if not any(u.name == "collector" for u in result.broker_users):
        print("no PLM_COLLECTOR_SUBJECTS: broker user 'collector' not created (needed only with --profile ble)")
    return 0


def _tokens(args: argparse.Namespace) -> int:
    from plm.ops.stack import StackError, ensure_influx_tokens

    directory = secrets_dir(args)
    if directory is None:
        return 2
    deadline = time.monotonic() + args.wait_s
    said_at = -math.inf
    while True:
        try:
            result = ensure_influx_tokens(directory, url=args.url, org=args.org, bucket=args.bucket)
            break
        except StackError as exc:
            left = deadline - time.monotonic()
            if left <= 0 or "cannot reach" not in str(exc):
                print(f"plm stack influx-tokens: {exc}", file=sys.stderr)
                return 2
            if time.monotonic() - said_at >= 10:  # say what it waits for, not 30 s of silence (issue 18)
                said_at = time.monotonic()
                print(
                    f"plm stack influx-tokens: waiting for InfluxDB at {args.url} ({left:.0f} s more)", file=sys.stderr
                )
            time.sleep(2)
    for rel in result.created:
        print(f"created InfluxDB token {rel}")
    for rel in result.kept:
        print(f"kept valid InfluxDB token {rel}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from plm.ops.stack import StackError, read_secret

    name = "viewer/mqtt-password" if args.name == "viewer" else args.name
    directory = secrets_dir(args)
    if directory is None:
        return 2
    try:
        print(read_secret(directory / name))
    except StackError as exc:
        print(f"plm stack show: {exc}", file=sys.stderr)
        return 2
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import signal
    import threading

    from plm.config import load_settings
    from plm.ops.stack import simulate_forever

    settings = load_settings(args.config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        simulate_forever(
            settings.mqtt,
            subjects=args.subjects,
            profile=args.profile,
            state_dir=args.state_dir,
            live_speed=args.speed,
            replay_speed=args.replay_speed,
            hours=args.hours,
            stop=stop,
        )
    except (ValueError, ConnectionError) as exc:
        print(f"plm stack simulate: {exc}", file=sys.stderr)
        return 2
    return 0


def _health(args: argparse.Namespace) -> int:
    import json
    import threading

    from plm import wire
    from plm.config import load_settings
    from plm.mqtt import connect, make_client

    settings = load_settings(args.config)
    got: list[dict] = []
    done = threading.Event()

    def on_message(_c, _u, message) -> None:
        try:
            got.append(json.loads(message.payload))
        except ValueError:
            got.append({})
        done.set()

    client = make_client(settings.mqtt, f"plm-health-{os.getpid()}")
    client.on_message = on_message
    try:
        connect(client, settings.mqtt)
        client.subscribe(wire.detector_status_topic(settings.detector.instance), qos=1)
        done.wait(args.timeout_s)
    except (OSError, ConnectionError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        client.disconnect()
        client.loop_stop()
    verdict, healthy = detector_health_verdict(got[-1] if got else None, time.time(), args.max_age_s)
    print(f"detector {settings.detector.instance}: {verdict}")
    return 0 if healthy else 1


def detector_health_verdict(doc: object, now_s: float, max_age_s: float | None = None) -> tuple[str, bool]:
    """Healthy = state ``online`` *and* refreshed recently. The worker thread itself publishes the status every
    ``status_every_s`` as it loops, so a worker that died or is stuck leaves a status that grows old while
    the process (and its MQTT connection, kept by the OS) may still be up: "alive" is not "working"."""
    if not isinstance(doc, dict) or not doc:
        return "no status", False
    state = doc.get("state")
    if state != "online":
        error = doc.get("error")
        return f"{state}" + (f" ({error})" if error else ""), False
    sent_ns = doc.get("time_ns")
    every = doc.get("status_every_s")
    every = float(every) if isinstance(every, int | float) and not isinstance(every, bool) and every > 0 else 10.0
    limit = max_age_s if max_age_s is not None else max(60.0, 6 * every)
    if isinstance(sent_ns, bool) or not isinstance(sent_ns, int):
        return "online, but its status carries no time", False
    age = now_s - sent_ns / 1e9
    if age > limit:
        return f"stuck: its status is {age:.0f} s old (limit {limit:.0f} s)", False
    return f"online ({age:.0f} s ago)", True
