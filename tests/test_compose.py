"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine.

`docker-compose config` (Debian package docker-compose) validates the file against the Compose
specification when it is installed (CI installs it); without it those checks skip with the install
hint, unless PLM_REQUIRE_SERVICES=1. The structural checks below run everywhere.

Debian's docker-compose is Compose v1 (1.29), which predates `depends_on: {restart: true}` (Compose 2.17;
`up` restarts on a recreated dependency since 2.29.4): it and its bundled schema check the file with
those keys taken out, and test_restart_wiring checks them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from plm.ops.stack import SECRETS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SPEC_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
INSTALL_HINT = "apt-get install docker-compose"
LONG_RUNNING = ("mosquitto", "influxdb", "grafana", "detector", "simulator", "collector")
ONE_SHOT = ("init", "influx-tokens")
#: files the influx-tokens step writes, besides init's SECRETS
TOKEN_FILES = ("detector/influx-token", "grafana/influx-token")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _variables() -> set[str]:
    text = re.sub(r"(?m)^\s*#.*$", "", COMPOSE.read_text())  # comments may mention variables
    return set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))


def _without_dependency_restart(compose: dict) -> dict:
    """The file as Compose v1 can read it: ``depends_on.<service>.restart`` removed (checked separately)."""
    stripped = copy.deepcopy(compose)
    for service in stripped["services"].values():
        for spec in service.get("depends_on", {}).values():
            spec.pop("restart", None)
    return stripped


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PLM_REQUIRE_SERVICES=1 but docker-compose is not installed ({INSTALL_HINT})")
        pytest.skip(f"docker-compose not installed ({INSTALL_HINT})")
    return binary


@pytest.mark.parametrize("profile", [None, "sim", "ble"])
def test_docker_compose_config_accepts_the_file(profile, tmp_path, compose):
    binary = _docker_compose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLM_")}
    readable = tmp_path / "docker-compose.yml"
    readable.write_text(yaml.safe_dump(_without_dependency_restart(compose), sort_keys=False))
    args = [binary, "-f", str(readable), "--project-directory", str(ROOT)]
    if profile:
        args += ["--profile", profile]
    done = subprocess.run([*args, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    services = set(resolved["services"])
    assert resolved["services"]["collector"]["profiles"] == ["ble"]  # v1 `config` lists every profile
    assert resolved["services"]["simulator"]["profiles"] == ["sim"]
    assert {"init", "mosquitto", "influxdb", "influx-tokens", "grafana", "detector", "simulator"} <= services
    # a broken file is refused: the check can fail
    broken = tmp_path / "broken.yml"
    broken.write_text(readable.read_text().replace("condition: service_healthy", "condition: when_it_feels_like_it", 1))
    done = subprocess.run(
        [binary, "-f", str(broken), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0


def test_compose_file_matches_the_compose_specification_schema(compose):
    if not SPEC_SCHEMA.is_file():
        _docker_compose()  # skips or fails with the hint
        pytest.skip(f"Compose specification schema not found at {SPEC_SCHEMA}")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SPEC_SCHEMA.read_text())
    jsonschema.validate(_without_dependency_restart(compose), schema)
    # and with `restart` as the current Compose specification defines it (a boolean under depends_on.<service>)
    dependency = schema["definitions"]["service"]["properties"]["depends_on"]["oneOf"][1]["patternProperties"]
    next(iter(dependency.values()))["properties"]["restart"] = {"type": "boolean"}
    jsonschema.validate(compose, schema)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        broken = copy.deepcopy(compose)
        broken["services"]["mosquitto"]["depends_on"]["init"]["restart"] = "yes please"
        jsonschema.validate(broken, schema)


def test_every_image_is_pinned_to_a_version(compose):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?", tag), f"{name}: {image} is not pinned"
        if "build" in service:
            assert image == f"plm-monitor:{version}", f"{name}: the project image should carry the project version"


def test_restart_policies_healthchecks_and_start_order(compose):
    services = compose["services"]
    for name in LONG_RUNNING:
        assert services[name]["restart"] in ("unless-stopped", "always"), name
    for name in ONE_SHOT:
        # `on-failure` would loop a one-shot while `up` already reported its first exit (issue 21 item 3)
        assert services[name]["restart"] == "no", name
    for name in ("mosquitto", "influxdb", "grafana", "detector"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"] and check["retries"], name
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert isinstance(spec, dict), f"{name}: depends_on {dep} needs a condition"
            wanted = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec["condition"] == wanted, f"{name} -> {dep}"
    order = {
        "mosquitto": {"init"},
        "influxdb": {"init"},
        "influx-tokens": {"influxdb"},
        "grafana": {"influx-tokens"},
        "detector": {"mosquitto", "influxdb", "influx-tokens"},
        "simulator": {"mosquitto", "detector"},
    }
    for name, deps in order.items():
        assert deps <= set(services[name]["depends_on"]), name


def test_data_lives_in_declared_named_volumes(compose):
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(("./", "/", "$")):
                continue  # bind mounts: config, dashboards, D-Bus
            assert source in declared, f"{name}: volume {source} is not declared"
            used.add(source)
    assert used == declared


def _mounts(service: dict) -> dict[str, str]:
    """container path -> named volume."""
    out = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        out[parts[1]] = parts[0]
    return out


def test_every_secret_comes_from_a_generated_file(compose):
    """No literal secret anywhere; every *_FILE a service reads is one init/influx-tokens writes."""
    services = compose["services"]
    init_mounts = {v: path for path, v in _mounts(services["init"]).items()}  # volume -> path in init
    produced = {rel for rel, _ in SECRETS} | set(TOKEN_FILES)
    for name, service in services.items():
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and not key.endswith("_FILE"):
                # only init may take an operator-chosen secret, and only passed through from .env
                assert name == "init" and value == f"${{{key}:-}}", f"{name}: {key} must come from a file"
                continue
            if not key.endswith("_FILE"):
                continue
            directory, _, filename = str(value).rpartition("/")
            volume = _mounts(service).get(directory)
            assert volume, f"{name}: {key}={value} is not on a mounted secrets volume"
            sub = init_mounts[volume].removeprefix("/secrets/")
            assert f"{sub}/{filename}" in produced, f"{name}: nothing writes {sub}/{filename}"
    # the secrets each service needs are exactly the ones mounted into it (least privilege)
    assert _mounts(services["detector"])["/run/secrets/plm"] == "detector-secrets"
    assert _mounts(services["simulator"])["/run/secrets/plm"] == "simulator-secrets"
    assert _mounts(services["grafana"])["/run/secrets/plm"] == "grafana-secrets"
    assert _mounts(services["mosquitto"])["/mosquitto/config"] == "mosquitto-config"
    for name in ("detector", "simulator", "grafana", "mosquitto", "collector"):
        assert "secrets" not in set(_mounts(services[name]).values()), f"{name} sees every secret"


def test_grafana_gets_what_the_provisioned_datasource_expands(compose):
    grafana = compose["services"]["grafana"]
    entry = " ".join(grafana["entrypoint"])
    provided = set(grafana["environment"]) | set(re.findall(r"\b(PLM_[A-Z_]+)=", entry))
    for path in (ROOT / "dashboards/provisioning/datasources").glob("*.y*ml"):
        text = re.sub(r"#.*", "", path.read_text())  # comments mention ${VARS} too
        for var in re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text):
            assert var in provided, f"{path.name} uses ${var}, which the grafana service does not set"
    assert "/run/secrets/plm/influx-token" in entry and entry.rstrip().endswith("exec /run.sh")
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/plm/admin-password"
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"
    assert (ROOT / "dashboards/json").is_dir() and mounts["/var/lib/grafana/dashboards/plm"] == "./dashboards/json"


def test_env_example_documents_every_variable():
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    missing = _variables() - documented
    assert not missing, f".env.example does not document {sorted(missing)}"
    # no secret values in the example: secret lines are commented out and empty
    for line in example.splitlines():
        if re.match(r"^[A-Z0-9_]*(PASSWORD|TOKEN)[A-Z0-9_]*=", line):
            pytest.fail(f".env.example sets a secret: {line}")


def test_collector_profile_has_dbus_apparmor_and_config(compose):
    collector = compose["services"]["collector"]
    assert collector["profiles"] == ["ble"]
    assert "/run/dbus:/run/dbus:ro" in collector["volumes"]
    assert "apparmor=unconfined" in collector["security_opt"]
    assert any(v.endswith(":/etc/plm/plm.toml:ro") for v in collector["volumes"])
    assert collector["environment"]["PLM_CONFIG"] == "/etc/plm/plm.toml"
    assert not collector.get("privileged") and collector.get("network_mode") != "host"


def test_dockerfile_is_multistage_non_root_and_runs_plm():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(stages) >= 2, "not multi-stage"
    default_image = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", default_image), default_image
    final = text.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the runtime stage must run as a non-root user"
    assert "--uid 10001" in final  # plm.ops.stack.PLM_UID: init gives the services' secrets to this uid
    entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])", final, flags=re.M).group(1))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry[0] in scripts, f"ENTRYPOINT {entry[0]} is not a console script of the project"
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, flags=re.M):
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
    install = re.search(r"pip install (?:-c constraints\.txt )?'?\.\[([a-z,-]+)\]'?", text)
    assert install and {"collector", "detector"} <= set(install.group(1).split(",")), "the services' extras"
    ignored = (ROOT / ".dockerignore").read_text()
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, flags=re.M):
        assert f"!{source.rstrip('/')}" in ignored.replace("/\n", "\n"), f"{source} is excluded by .dockerignore"


#: what init's environment feeds into the broker files (users, subjects, passwords)
BROKER_INPUTS = ("PLM_SIM_SUBJECTS", "PLM_COLLECTOR_SUBJECTS", "PLM_VIEWER_SUBJECTS")


def test_restart_wiring_makes_day_two_changes_take_effect(compose):
    """Issue 21 item 1: a changed input of init recreates init, which restarts the broker and its clients.

    Compose recreates a service whose configuration changed (its environment after .env interpolation), and
    since 2.29.4 stops and restarts the services whose `depends_on` on it says `restart: true`. mosquitto reads
    the password and ACL files only when it starts; each client reads its password file only when it starts.
    """
    services = compose["services"]
    init_env = services["init"]["environment"]
    for variable in (*BROKER_INPUTS, *(v for _, v in SECRETS if v != "PLM_BROKER_PASSWORD_HEALTHCHECK")):
        assert init_env.get(variable) == f"${{{variable}:-{'1' if variable == 'PLM_SIM_SUBJECTS' else ''}}}", variable
    readers = {"mosquitto"} | {n for n, s in services.items() if "PLM_MQTT__PASSWORD_FILE" in s.get("environment", {})}
    assert readers == {"mosquitto", "detector", "simulator", "collector"}
    for name in readers:
        dependency = services[name]["depends_on"].get("init")
        assert dependency == {"condition": "service_completed_successfully", "restart": True}, name
    # the InfluxDB tokens: a re-made token reaches the services that read it at start
    for name in ("detector", "grafana"):
        assert services[name]["depends_on"]["influx-tokens"].get("restart") is True, name


def test_profiles_keep_the_simulator_and_the_collector_apart(compose):
    """Issue 21 item 4: the simulator runs only with `--profile sim`, the collector only with `--profile ble`."""
    profiles = {name: s.get("profiles") for name, s in compose["services"].items()}
    assert profiles.pop("simulator") == ["sim"] and profiles.pop("collector") == ["ble"]
    assert all(p is None for p in profiles.values()), profiles  # the core stack runs with any profile


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`(docker compose [^`]+)`", text)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [c for c in [*lines, *inline] if c.startswith("docker compose ")]


def test_readme_down_stops_every_profile_and_up_names_its_profile(compose):
    """Plain `docker compose down` leaves the services of profiles it was not given running."""
    every = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    commands = _readme_commands()
    downs = [c for c in commands if re.search(r"\bdown\b", c)]
    assert downs, "the README says how to stop the stack"
    for command in downs:
        assert set(re.findall(r"--profile (\S+)", command)) == every, command
    ups = [c for c in commands if re.search(r"\bup\b", c)]
    assert any("--profile sim" in c for c in ups), "the quick start starts the simulator"
    assert any("--profile ble" in c for c in ups), "the real-sensor steps start the collector"
    # `stop simulator` names the profile, as compose needs for a profiled service on older versions
    for command in commands:
        if " stop simulator" in command:
            assert "--profile sim" in command, command
