"""`plm stack` on a host rather than in the project's container (issue 18): no /secrets made at the filesystem
root, and no silent wait for an InfluxDB that is not there."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from plm.cli import main
from plm.ops import stack_cli


@pytest.fixture
def on_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_cli, "in_container", lambda: False)


@pytest.mark.parametrize("command", [["init-secrets"], ["influx-tokens"], ["show", "viewer"]])
def test_outside_a_container_dir_is_required(on_a_host, capsys, command) -> None:
    before = Path("/secrets").exists()
    assert main(["stack", *command]) == 2
    err = capsys.readouterr().err
    assert "outside a container give --dir" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert Path("/secrets").exists() == before, "created /secrets at the filesystem root"


def test_inside_a_container_the_default_is_secrets(monkeypatch) -> None:
    monkeypatch.setattr(stack_cli, "in_container", lambda: True)

    class Args:
        dir = None
        stack_command = "show"

    assert stack_cli.secrets_dir(Args()) == Path("/secrets")


def test_influx_tokens_says_what_it_waits_for_and_gives_up(tmp_path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    (tmp_path / "influxdb").mkdir()
    (tmp_path / "influxdb" / "admin-token").write_text("operator-token\n")
    (tmp_path / "influxdb" / "admin-token").chmod(0o600)
    code = main(
        ["stack", "influx-tokens", "--dir", str(tmp_path), "--url", f"http://127.0.0.1:{port}", "--wait-s", "3"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"waiting for InfluxDB at http://127.0.0.1:{port}" in err, err
    assert "Traceback" not in err
