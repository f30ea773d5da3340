"""The team server's core, against a real server process: health, identity, OpenAPI, errors,
body limits, sessions, graceful stop, and the pinned people and policy files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _access_kit import events
from _serverproc import ServerProc
from oneoff._server.routing import ApiRoute

KEYS = dict[str, Path]
BOTH_STORES = pytest.mark.parametrize(
    "server", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def test_health_and_identity_need_no_auth(server: ServerProc) -> None:
    """Anyone may ask whether the server is up and which server, app and pinned set it is."""
    assert server.call("GET", "/v1/health").json == {"ok": True}
    info = server.call("GET", "/v1/server").json
    assert len(info["server_id"]) == 32
    assert int(info["server_id"], 16) >= 0
    assert info["app"] == "served"
    assert info["pinned_version"].startswith("pv:")
    assert "BEGIN PUBLIC KEY" in info["audit_public_key"]


def test_server_id_is_kept_across_restarts(server: ServerProc, server_app: Path) -> None:
    """The server id is made once and kept in the store: a restarted server is the same
    audience for signed statements."""
    first = server.server_id
    assert server.stop() == 0
    again = ServerProc(server_app).start()
    try:
        assert again.server_id == first
    finally:
        again.stop()


def test_openapi_documents_every_api_route(server: ServerProc) -> None:
    """/openapi.json is OpenAPI 3.1 and lists every /v1 route with its body schema."""
    from oneoff._app import open_app
    from oneoff._server.app import create_app
    from oneoff._server.context import ServerContext

    doc = server.call("GET", "/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    app = create_app(ServerContext(open_app(server.app_dir).project))
    v1 = [r for r in app.routes if str(getattr(r, "path", "")).startswith("/v1/")]
    undocumented = [r for r in v1 if not hasattr(r, "spec")]
    assert not undocumented, "every /v1 route needs a spec (routing.api_route or documented)"
    api = [r for r in app.routes if isinstance(r, ApiRoute)]
    assert api
    for route in api:
        operation = doc["paths"][route.spec.path][route.spec.method.lower()]
        if route.spec.body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema == route.spec.body
    assert doc["paths"]["/v1/session"]["post"]["security"] == [{"signedStatement": []}]


def test_unknown_route_is_404_and_wrong_method_405(server: ServerProc) -> None:
    """Paths the API does not have are not found; a known path with another method is 405."""
    assert server.call("GET", "/v1/nothing-here").status == 404
    assert server.call("DELETE", "/v1/health").status == 405


@BOTH_STORES
def test_session_token_reads_and_names_the_signer(server: ServerProc, server_keys: KEYS) -> None:
    """A signed POST /v1/session returns a token naming the signer, good for read calls."""
    answer = server.signed(server_keys["bob"], "POST", "/v1/session")
    assert answer.status == 200, answer
    assert answer.json["person"] == "bob"
    assert server.read(answer.json["token"], "/v1/server").status == 200


def test_session_takes_an_empty_object_only(server: ServerProc, server_keys: KEYS) -> None:
    """The session body is ``{}``: extra fields are a schema violation (422, exit 2)."""
    answer = server.signed(server_keys["bob"], "POST", "/v1/session", {"admin": True})
    assert answer.status == 422
    assert answer.error["exit"] == 2
    assert "body.admin is not allowed" in answer.error["message"]


def test_sigterm_stops_the_server_gracefully(server: ServerProc) -> None:
    """SIGTERM ends the server with exit status 0 (requests finished, store closed)."""
    assert server.stop() == 0
    assert "Traceback" not in server.output()


def test_first_start_pins_the_access_files(server: ServerProc, server_app: Path) -> None:
    """The first start copies the people and policy files into the store, audited once."""
    version = server.call("GET", "/v1/server").json["pinned_version"]
    server.stop()
    ServerProc(server_app).start().stop()  # a second start does not pin again
    pinned = events(server_app, "server.pinned")
    assert len(pinned) == 1
    assert pinned[0].payload["version"] == version


def test_a_changed_checkout_is_refused_until_repinned(
    server: ServerProc, server_app: Path, server_keys: KEYS, cli_env: dict[str, str]
) -> None:
    """A server whose checkout's people file differs from the pinned one refuses to start;
    `oneoff server pin` by a person the pinned policy lets release re-pins it (audited),
    and the server then starts with the new people."""
    server.stop()
    people = server_app / "people" / "allowed_signers"
    mallory = Path(f"{server_keys['mallory']}.pub").read_text().split()[:2]
    people.write_text(people.read_text() + f"mallory {mallory[0]} {mallory[1]} groups=dba\n")
    refused = ServerProc(server_app)
    try:
        with pytest.raises(RuntimeError, match="differ from those pinned"):
            refused.start()
    finally:
        refused.stop()
    assert events(server_app, "server.refused")

    def pin(who: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "oneoff", "server", "pin", "--app", str(server_app)]
        return subprocess.run(
            [*argv, "--key", str(server_keys[who])], capture_output=True, text=True,
            env=cli_env, timeout=120, check=False,
        )  # fmt: skip

    # mallory is in the new file, not the pinned one; alice may not release.
    for who in ("mallory", "alice"):
        denied = pin(who)
        assert denied.returncode == 3, denied.stderr
    assert len(events(server_app, "server.pinned")) == 1
    done = pin("bob")
    assert done.returncode == 0, done.stderr
    assert "by bob" in done.stdout
    repinned = events(server_app, "server.pinned")[-1]
    assert repinned.actor == "bob"
    assert repinned.payload["first"] is False
    again = ServerProc(server_app).start()
    try:
        assert again.signed(server_keys["mallory"], "POST", "/v1/session").status == 200
    finally:
        again.stop()


def test_a_changed_manifest_is_refused(server: ServerProc, server_app: Path) -> None:
    """Lowering a quorum in the server's oneoff.toml (or trusting another release key) is
    a change to who decides: the server refuses to start on it until a re-pin."""
    server.stop()
    manifest = server_app / "oneoff.toml"
    manifest.write_text(manifest.read_text().replace("quorum = 2", "quorum = 1"))
    refused = ServerProc(server_app)
    try:
        with pytest.raises(RuntimeError, match=r"the manifest \(sha256"):
            refused.start()
    finally:
        refused.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_store_going_away_is_503_then_recovers(
    server: ServerProc, server_keys: KEYS, pg_server: Any
) -> None:
    """With its database gone, a call answers 503 with the store's exit code 7 (JSON, no
    traceback); once the database is back, the same server process serves again."""
    import psycopg

    from oneoff._store.postgres import migrate

    token = server.token(server_keys["bob"])
    url = server.store_url
    assert url is not None
    name = url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        gone = server.read(token, "/v1/requests")
        assert gone.status == 503, gone
        assert gone.error["exit"] == 7
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate(url)
    # Each worker thread swaps its broken connection on its first failure: bounded tries.
    answers = [server.read(token, "/v1/requests").status for _ in range(20)]
    assert 200 in answers, answers
    assert set(answers) <= {200, 503}
    assert "Traceback" not in server.output()
