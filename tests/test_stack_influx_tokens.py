"""Issue 21 item 8 (and item 2's 401): `plm stack influx-tokens` judges a stored token by using it.

No InfluxDB 2 runs on the test machines (Debian ships 1.6, whose API has no tokens), so the server here is a
stand-in for the part of the InfluxDB 2 v2 API the step uses, as InfluxDB 2.9 behaves with hashed token
storage: the authorization listing never shows a token, a token is looked up by its hash, a write checks
the token and its write permission on the bucket before parsing the body (401 unknown token, 403 without
permission or inactive), and a bucket's record is readable only with read permission on it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from plm.cli import main
from plm.ops.stack import OPERATOR_TOKEN_REFUSED, StackError, _write_secret, ensure_influx_tokens

ORG_ID, BUCKET_ID = "0a1b2c3d4e5f6071", "1a2b3c4d5e6f7081"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FakeInflux2:
    def __init__(self) -> None:
        self.operator = secrets.token_urlsafe(24)
        # hash -> {"id", "status", "permissions": [(action, bucket id or "*")]}
        self.auths: dict[str, dict] = {_hash(self.operator): {"id": "op", "status": "active", "permissions": "all"}}
        self.created = 0
        self.points_written: list[bytes] = []
        self.fail_checks_with: int | None = None  # answer every non-operator request with this status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: object = None) -> None:
                raw = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _auth(self) -> dict | None:
                header = self.headers.get("Authorization", "")
                return server.auths.get(_hash(header.removeprefix("Token "))) if header.startswith("Token ") else None

            def _allowed(self, auth: dict, action: str, bucket: str) -> bool:
                if auth["status"] != "active":
                    return False
                return auth["permissions"] == "all" or (action, bucket) in auth["permissions"]

            def _route(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self._auth()
                if auth is None:
                    return self._reply(401, {"code": "unauthorized", "message": "unauthorized access"})
                if server.fail_checks_with and auth["permissions"] != "all":
                    return self._reply(server.fail_checks_with, {"code": "internal error"})
                operator = auth["permissions"] == "all" and auth["status"] == "active"
                if method == "GET" and url.path == "/api/v2/orgs" and operator:
                    return self._reply(
                        200, {"orgs": [{"id": ORG_ID, "name": "plm"}] if query.get("org") == "plm" else []}
                    )
                if method == "GET" and url.path == "/api/v2/buckets" and operator:
                    found = query.get("name") == "plm" and query.get("orgID") == ORG_ID
                    return self._reply(200, {"buckets": [{"id": BUCKET_ID, "name": "plm"}] if found else []})
                if method == "GET" and url.path == f"/api/v2/buckets/{BUCKET_ID}":
                    if self._allowed(auth, "read", BUCKET_ID):
                        return self._reply(200, {"id": BUCKET_ID, "name": "plm"})
                    return self._reply(404, {"code": "not found", "message": "bucket not found"})
                if method == "POST" and url.path == "/api/v2/write":
                    if query.get("bucket") != BUCKET_ID or query.get("orgID") != ORG_ID:
                        return self._reply(404, {"code": "not found", "message": "bucket not found"})
                    if not self._allowed(auth, "write", BUCKET_ID):
                        return self._reply(403, {"code": "forbidden", "message": "insufficient permissions for write"})
                    if body:
                        server.points_written.append(body)
                    return self._reply(204)
                if method == "GET" and url.path == "/api/v2/authorizations" and operator:
                    # stored hashed: the listing has no token to show
                    listing = [{"id": a["id"], "status": a["status"]} for a in server.auths.values()]
                    return self._reply(200, {"authorizations": listing})
                if method == "POST" and url.path == "/api/v2/authorizations" and operator:
                    request = json.loads(body)
                    token = secrets.token_urlsafe(32)
                    permissions = [(p["action"], p["resource"]["id"]) for p in request["permissions"]]
                    server.auths[_hash(token)] = {
                        "id": f"a{len(server.auths)}",
                        "status": "active",
                        "permissions": permissions,
                    }
                    server.created += 1
                    return self._reply(201, {"token": token, "status": "active"})  # the only time it is shown
                return self._reply(403, {"code": "forbidden"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def revoke(self, token: str) -> None:
        del self.auths[_hash(token)]

    def deactivate(self, token: str) -> None:
        self.auths[_hash(token)]["status"] = "inactive"


@pytest.fixture
def influx(tmp_path):
    server = FakeInflux2()
    server.thread.start()
    _write_secret(tmp_path / "influxdb" / "admin-token", server.operator, None)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _tokens(root: Path) -> dict[str, str]:
    return {rel: (root / rel).read_text().strip() for rel in ("detector/influx-token", "grafana/influx-token")}


def _ensure(root: Path, influx: FakeInflux2):
    return ensure_influx_tokens(root, url=influx.url, org="plm", bucket="plm", timeout_s=5, chown=False)


def test_valid_tokens_are_kept_though_the_listing_never_shows_them(tmp_path, influx):
    first = _ensure(tmp_path, influx)
    assert sorted(first.created) == ["detector/influx-token", "grafana/influx-token"] and influx.created == 2
    tokens = _tokens(tmp_path)
    for _ in range(3):  # every `docker compose up` runs the step again
        again = _ensure(tmp_path, influx)
        assert again.created == [] and sorted(again.kept) == sorted(tokens)
    assert influx.created == 2 and _tokens(tmp_path) == tokens
    assert influx.points_written == []  # the write check stores nothing


def test_revoked_inactive_or_wrongly_scoped_tokens_are_replaced(tmp_path, influx):
    _ensure(tmp_path, influx)
    tokens = _tokens(tmp_path)
    influx.revoke(tokens["detector/influx-token"])
    influx.deactivate(tokens["grafana/influx-token"])
    result = _ensure(tmp_path, influx)
    assert sorted(result.created) == ["detector/influx-token", "grafana/influx-token"]
    renewed = _tokens(tmp_path)
    assert all(renewed[rel] != tokens[rel] for rel in tokens)
    # Grafana's file holding the detector's write token: it cannot read the bucket, so it is replaced too
    _write_secret(tmp_path / "grafana/influx-token", renewed["detector/influx-token"], None)
    assert _ensure(tmp_path, influx).created == ["grafana/influx-token"]


def test_a_failing_server_is_an_error_not_a_reason_to_mint_tokens(tmp_path, influx):
    _ensure(tmp_path, influx)
    influx.fail_checks_with = 500
    with pytest.raises(StackError, match="HTTP 500 when the stored write token was tried"):
        _ensure(tmp_path, influx)
    assert influx.created == 2


def test_a_changed_operator_token_gets_the_exact_fix_once(tmp_path, influx, capsys):
    """A PLM_INFLUX_ADMIN_TOKEN changed after InfluxDB's setup (before init refused that): one clear exit."""
    _write_secret(tmp_path / "influxdb" / "admin-token", "not-the-token-influxdb-was-set-up-with", None)
    with pytest.raises(StackError) as exc:
        _ensure(tmp_path, influx)
    assert str(exc.value) == OPERATOR_TOKEN_REFUSED
    code = main(["stack", "influx-tokens", "--dir", str(tmp_path), "--url", influx.url, "--wait-s", "30"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("HTTP 401") == 1  # no retry loop on a refusal
    assert "/etc/influxdb2/influx-configs" in err and "--rotated influxdb/admin-token" in err
    assert "not-the-token-influxdb-was-set-up-with" not in err
