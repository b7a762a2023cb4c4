"""Issue 21 item 2: a first-start-only secret changed in .env after the first start is refused, with the way out.

InfluxDB's admin password and operator token (its setup) and Grafana's admin password are read by their
service at its first start only; `init` used to overwrite the file anyway, so `stack show` printed a
password that did not work and `influx-tokens` failed with 401. `plm stack init-secrets` is run here as
the compose `init` service runs it, through a first start and then a changed variable.
"""

from __future__ import annotations

import pytest

from plm.cli import main
from plm.ops.stack import FIRST_START_ONLY, SECRETS

VARIABLE = dict(SECRETS)


def _init(capsys, secrets_dir, *extra: str) -> tuple[int, str, str]:
    code = main(["stack", "init-secrets", "--dir", str(secrets_dir), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(secrets_dir) -> dict[str, bytes]:
    return {str(p.relative_to(secrets_dir)): p.read_bytes() for p in sorted(secrets_dir.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for _, variable in SECRETS:
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("relative", list(FIRST_START_ONLY))
def test_a_changed_first_start_secret_is_refused_with_the_way_out(relative, tmp_path, capsys, monkeypatch):
    secrets_dir, variable = tmp_path / "secrets", VARIABLE[relative]
    code, _, _ = _init(capsys, secrets_dir)  # first start: generated
    assert code == 0
    first = (secrets_dir / relative).read_text().strip()
    before = _snapshot(secrets_dir)

    monkeypatch.setenv(variable, "changed-after-the-first-start")
    code, out, err = _init(capsys, secrets_dir)
    assert code == 2 and out == ""
    assert f"{variable} in .env differs from the stored {relative}" in err
    assert "first start only" in err and "Nothing was changed" in err
    assert f"remove {variable} from .env" in err
    assert f"docker compose run --rm init stack show {relative}" in err
    assert f"docker compose run --rm init stack init-secrets --rotated {relative}" in err
    assert "changed-after-the-first-start" not in err  # a secret is never printed
    assert _snapshot(secrets_dir) == before  # nothing written: not the secret, not the broker files
    assert (secrets_dir / relative).read_text().strip() == first

    # the way out 1: remove the variable -> the stored value stays in use
    monkeypatch.delenv(variable)
    assert _init(capsys, secrets_dir)[0] == 0
    assert (secrets_dir / relative).read_text().strip() == first
    # the way out 2: changed in the service, then recorded with --rotated
    monkeypatch.setenv(variable, "changed-after-the-first-start")
    code, out, _ = _init(capsys, secrets_dir, "--rotated", relative)
    assert code == 0 and relative in out
    assert (secrets_dir / relative).read_text().strip() == "changed-after-the-first-start"
    assert _init(capsys, secrets_dir)[0] == 0  # and from then on the variable matches: no refusal


def test_the_refusal_names_what_each_service_needs(tmp_path, capsys, monkeypatch):
    secrets_dir = tmp_path / "secrets"
    assert _init(capsys, secrets_dir)[0] == 0
    monkeypatch.setenv("PLM_INFLUX_ADMIN_TOKEN", "another-operator-token")
    err = _init(capsys, secrets_dir)[2]
    assert "cannot change its operator token" in err and "fresh InfluxDB" in err
    monkeypatch.delenv("PLM_INFLUX_ADMIN_TOKEN")
    monkeypatch.setenv("PLM_INFLUX_ADMIN_PASSWORD", "another-admin-password")
    assert "influx user password --name admin" in _init(capsys, secrets_dir)[2]
    monkeypatch.delenv("PLM_INFLUX_ADMIN_PASSWORD")
    monkeypatch.setenv("PLM_GRAFANA_ADMIN_PASSWORD", "another-grafana-password")
    assert "Profile -> Change password" in _init(capsys, secrets_dir)[2]


def test_first_start_values_and_unchanged_values_are_accepted(tmp_path, capsys, monkeypatch):
    secrets_dir = tmp_path / "secrets"
    for relative in FIRST_START_ONLY:
        monkeypatch.setenv(VARIABLE[relative], f"chosen-{relative.replace('/', '-')}")
    code, out, _ = _init(capsys, secrets_dir)  # set before the first start: taken
    assert code == 0 and "from the environment" in out
    assert _init(capsys, secrets_dir)[0] == 0  # the same values again: fine
    for relative in FIRST_START_ONLY:
        assert (secrets_dir / relative).read_text().strip() == f"chosen-{relative.replace('/', '-')}"


def test_broker_passwords_may_change_any_time(tmp_path, capsys, monkeypatch):
    """mosquitto re-reads its files when it restarts (compose restarts it and its clients after init changes)."""
    secrets_dir = tmp_path / "secrets"
    assert _init(capsys, secrets_dir)[0] == 0
    monkeypatch.setenv("PLM_BROKER_PASSWORD_VIEWER", "a-new-viewer-password")
    assert _init(capsys, secrets_dir)[0] == 0
    assert (secrets_dir / "viewer/mqtt-password").read_text().strip() == "a-new-viewer-password"


def test_rotated_needs_the_new_value_and_a_first_start_secret(tmp_path, capsys):
    secrets_dir = tmp_path / "secrets"
    assert _init(capsys, secrets_dir)[0] == 0
    code, _, err = _init(capsys, secrets_dir, "--rotated", "grafana/admin-password")
    assert code == 2 and "set PLM_GRAFANA_ADMIN_PASSWORD to the new value" in err
    with pytest.raises(SystemExit) as exc:  # argparse: not a first-start-only secret
        main(["stack", "init-secrets", "--dir", str(secrets_dir), "--rotated", "viewer/mqtt-password"])
    assert exc.value.code == 2
