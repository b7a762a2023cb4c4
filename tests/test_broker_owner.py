"""`plm broker-config` run as root, checked with mosquitto started as root the way its service starts it.

mosquitto 2.0 started as root switches to its ``user`` before it reads the password file and the ACL and
writes its persistence file as that user: root-owned 0600 files stopped it ("Unable to open pwfile") and a
root-owned persistence directory silently lost its retained messages and sessions at every restart.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from plm.cli import main
from plm.ops.localservices import Mosquitto, ServiceError, free_port
from tests.test_broker_security import Client

PASSWORD = "detector-owner-test-pw"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts mosquitto as root, which then switches user")


def _account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"no account {name!r} (the Debian mosquitto package creates 'mosquitto')")
        pytest.skip(f"no account {name!r}")


@pytest.fixture
def open_dir():
    """A directory other accounts may enter: pytest's tmp_path lies under a mode-700 directory."""
    path = Path(tempfile.mkdtemp(prefix="plm-broker-owner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _broker_config(out: Path, data: Path, port: int, *extra: str) -> list[str]:
    return ["broker-config", "--out", str(out), "--persistence-dir", str(data), "--user", "detector:detector",
            "--port", str(port), "--bind", "127.0.0.1", *extra]  # fmt: skip


def _start(config: Path, port: int, workdir: Path) -> Mosquitto:
    try:
        broker = Mosquitto(workdir=workdir, port=port, config_file=config)
    except ServiceError as exc:  # mosquitto not installed
        if os.environ.get("PLM_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    broker.start()  # a broker that cannot read its files exits here, and this raises with its log
    return broker


def _retained_survives_a_restart(broker: Mosquitto) -> list:
    """Publish a retained message, restart the broker, read it back: needs a writable persistence directory."""
    publisher = Client(broker.port, "detector", PASSWORD)
    assert not publisher.reason.is_failure
    publisher.publish("plm/v1/_detector/main", b"kept", retain=True)
    publisher.close()
    broker.restart()
    reader = Client(broker.port, "detector", PASSWORD)
    reader.subscribe("plm/v1/_detector/main")
    got = reader.drain()
    reader.close()
    return got


@pytest.mark.parametrize("owner", [None, "nobody"], ids=["default-mosquitto", "owner-nobody"])
def test_config_written_as_root_works_for_mosquitto_started_as_root(open_dir, monkeypatch, owner):
    account = _account(owner or "mosquitto")
    monkeypatch.setenv("PLM_BROKER_PASSWORD_DETECTOR", PASSWORD)
    port, conf, data = free_port(), open_dir / "conf", open_dir / "data"
    assert main(_broker_config(conf, data, port, *(["--owner", owner] if owner else []))) == 0
    broker = _start(conf / "mosquitto.conf", port, open_dir / "run")
    try:
        assert _retained_survives_a_restart(broker) == [("plm/v1/_detector/main", b"kept")]
        assert (data / "mosquitto.db").stat().st_uid == account.pw_uid  # written after the switch
    finally:
        broker.stop()
    assert "Error" not in broker.log_file.read_text()
    assert f"user {account.pw_name}\n" in (conf / "mosquitto.conf").read_text()  # the owner is who mosquitto runs as
    assert ((conf / "passwd").stat().st_mode & 0o777) == 0o600  # given away, not opened up


def test_without_root_it_prints_the_chown_command_that_finishes_the_job(open_dir, monkeypatch, capsys):
    """Run as an ordinary user it cannot give the files away: it says so, exits 1 and prints the exact
    command; that command, run as root, is all the broker needs."""
    _account("mosquitto")
    nobody = _account("nobody")
    os.chown(open_dir, nobody.pw_uid, nobody.pw_gid)
    monkeypatch.setenv("PLM_BROKER_PASSWORD_DETECTOR", PASSWORD)
    port, conf, data = free_port(), open_dir / "conf", open_dir / "data"
    os.setegid(nobody.pw_gid)  # this process becomes an ordinary user for the command, then root again
    os.seteuid(nobody.pw_uid)
    try:
        code = main(_broker_config(conf, data, port, "--owner", "mosquitto"))
    finally:
        os.seteuid(0)
        os.setegid(0)
    assert code == 1
    command = capsys.readouterr().err.strip().splitlines()[-1]
    assert shlex.split(command) == ["chown", "mosquitto:mosquitto", *(str(p) for p in (
        conf / "passwd", conf / "acl", conf / "mosquitto.conf", data))]  # fmt: skip
    with pytest.raises(ServiceError, match="pwfile"):  # as written: owned by nobody, mode 600
        _start(conf / "mosquitto.conf", port, open_dir / "run-before")
    subprocess.run(shlex.split(command), check=True)
    broker = _start(conf / "mosquitto.conf", port, open_dir / "run")
    try:
        assert _retained_survives_a_restart(broker) == [("plm/v1/_detector/main", b"kept")]
    finally:
        broker.stop()


def test_a_directory_mosquitto_cannot_enter_is_reported(open_dir, monkeypatch):
    """Owning the files is not enough when a parent directory is closed (e.g. --out inside /root): the
    command names that directory, and a real mosquitto indeed cannot start there."""
    _account("mosquitto")
    monkeypatch.setenv("PLM_BROKER_PASSWORD_DETECTOR", PASSWORD)
    closed = open_dir / "private"
    closed.mkdir(mode=0o700)
    port, conf = free_port(), closed / "conf"
    assert main(_broker_config(conf, conf, port)) == 1
    with pytest.raises(ServiceError, match="pwfile"):
        _start(conf / "mosquitto.conf", port, open_dir / "run")


def test_a_tls_key_mosquitto_cannot_read_is_reported(open_dir, monkeypatch, capsys):
    """The TLS key is the user's own file, not ours to give away; mosquitto loads it after switching user."""
    from tests.test_broker_security import _make_tls

    _account("mosquitto")
    monkeypatch.setenv("PLM_BROKER_PASSWORD_DETECTOR", PASSWORD)
    tls = _make_tls(open_dir)
    (open_dir / "tls").chmod(0o755)
    tls.keyfile.chmod(0o600)  # root's
    port, conf = free_port(), open_dir / "conf"
    tls_args = ["--tls-ca", str(tls.cafile), "--tls-cert", str(tls.certfile), "--tls-key", str(tls.keyfile),
                "--tls-port", str(tls.port)]  # fmt: skip
    assert main(_broker_config(conf, conf, port, *tls_args)) == 1
    assert f"mosquitto cannot read {tls.keyfile}" in capsys.readouterr().err
    with pytest.raises(ServiceError, match="key file"):
        _start(conf / "mosquitto.conf", port, open_dir / "run")
