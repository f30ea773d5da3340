"""`oneoff login --web` and the console's HTTP answers, without a browser: bad input,
single use, headers, and what a session may not do."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from _serverproc import Response, ServerProc


def login_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "ONEOFF_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", "oneoff", "login", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        ((), 2, "pass --web"),
        (("--web",), 2, "which server?"),
        (("--web", "--server", "ftp://x"), 2, "not a usable server URL"),
        (("--web", "--server", "http://127.0.0.1:9/?q=1"), 2, "not a usable server URL"),
        (("--web", "--server", "http://oneoff.example"), 2, "use https"),
        (("--web", "--server", "http://127.0.0.1:9"), 3, "signed with your SSH key"),
    ],
)
def test_login_refuses_bad_input_with_one_line(args, code, says, tmp_path) -> None:
    """Missing --web, server or key, or a URL that is not a server's, exit 2 or 3 with one
    line and no traceback."""
    done = login_cli(*args, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_login_to_an_unreachable_server_is_one_line(server_keys, tmp_path) -> None:
    """Nothing listening at --server: exit 7 (the server is the store), saying so."""
    done = login_cli("--web", "--server", "http://127.0.0.1:9", "--key", str(server_keys["bob"]))
    assert done.returncode == 7, done.stderr
    assert "127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_login_finds_the_server_in_the_manifest(server: ServerProc, server_keys) -> None:
    """Without --server or $ONEOFF_SERVER, `[server] url` in the app's oneoff.toml names it."""
    with open(server.app_dir / "oneoff.toml", "a") as manifest:
        manifest.write(f'\n[server]\nurl = "http://{server.host}:{server.port}"\n')
    done = login_cli("--web", "--key", str(server_keys["bob"]), cwd=server.app_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"http://{server.host}:{server.port}/console/login#")


def post_login(server: ServerProc, token: str, origin: str | None = "same") -> Response:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if origin == "same":
        headers["Origin"] = f"http://{server.host}:{server.port}"
    elif origin is not None:
        headers["Origin"] = origin
    body = urllib.parse.urlencode({"token": token}).encode()
    return server.call("POST", "/console/login", body=body, headers=headers)


def test_a_login_link_works_once_and_sets_a_strict_cookie(server: ServerProc, server_keys) -> None:
    """The link's token, posted from our origin, sets an HttpOnly SameSite=Strict cookie
    (not Secure over http); posted again it is refused (401) and audited."""
    done = login_cli(
        "--web", "--server", f"http://{server.host}:{server.port}", "--key", str(server_keys["bob"])
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().split("#", 1)[1]
    first = post_login(server, token)
    assert first.status == 303, first
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("oneoff_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    again = post_login(server, token)
    assert again.status == 401
    assert b"already used" in again.raw
    assert "set-cookie" not in again.headers


def test_a_login_post_from_another_origin_is_refused(server: ServerProc, server_keys) -> None:
    """A valid token posted by another site's page (or with no origin at all) logs no one in."""
    done = login_cli(
        "--web", "--server", f"http://{server.host}:{server.port}", "--key", str(server_keys["bob"])
    )
    token = done.stdout.strip().split("#", 1)[1]
    assert post_login(server, token, origin="http://evil.example").status == 401
    assert post_login(server, token, origin=None).status == 401
    # Refused before its nonce was spent: the person can still use their link.
    assert post_login(server, token).status == 303


def test_console_pages_carry_the_security_headers(server: ServerProc) -> None:
    """Every console answer, the login page, a redirect and a static file, has the CSP."""
    for path in ("/console/login", "/console/", "/", "/static/console.js"):
        answer = server.call("GET", path)
        assert answer.status in (200, 303), (path, answer)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert server.call("GET", "/static/../app.py").status == 404
    assert server.call("GET", "/static/nope.js").status == 404


def test_a_session_cookie_is_not_an_api_token(server: ServerProc, server_keys) -> None:
    """An API session token set as the console cookie opens no page: the keys differ."""
    token = server.token(server_keys["bob"])
    page = server.call("GET", "/console/", headers={"Cookie": f"oneoff_session={token}"})
    assert page.status == 303
    assert page.headers["location"] == "/console/login"


def cookie_of(server: ServerProc, key: Path) -> dict[str, str]:
    """A console session's Cookie header, from a login link the CLI signed."""
    done = login_cli("--web", "--server", f"http://{server.host}:{server.port}", "--key", str(key))
    answer = post_login(server, done.stdout.strip().split("#", 1)[1])
    assert answer.status == 303, answer
    return {"Cookie": answer.headers["set-cookie"].split(";", 1)[0]}


def cli(server: ServerProc, *args: str) -> str:
    """The CLI on the server's own store (its SQLite file, or its PostgreSQL database)."""
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", *args],
        cwd=server.app_dir, capture_output=True, text=True, timeout=300, env=server.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def request_migrate(server: ServerProc, keys: dict[str, Path], target: str) -> str:
    import json

    out = cli(server, "request", "migrate", "--env", "production", "-p", f"target={target}",
              "--key", str(keys["alice"]), "--json")  # fmt: skip
    return str(json.loads(out)["id"])


def test_a_request_shows_how_it_differs_from_the_last_run(server: ServerProc, server_keys) -> None:
    """After migrate ran to 0042, a request for 0043 shows the changed argv and param,
    and nothing else (the rest of the plan is the same)."""
    first = request_migrate(server, server_keys, "0042")
    for who in ("bob", "carol"):
        cli(server, "approve", first, "--key", str(server_keys[who]), "--yes")
    cli(server, "run", "migrate", "--env", "production", "--request", first,
        "--key", str(server_keys["alice"]))  # fmt: skip
    second = request_migrate(server, server_keys, "0043")
    page = server.call(
        "GET", f"/console/requests/{second}", headers=cookie_of(server, server_keys["bob"])
    )
    assert page.status == 200, page
    diff = page.raw.decode().split('<table id="diff">', 1)[1].split("</table>", 1)[0]
    assert "<td>argv</td>" in diff
    assert "<td>params</td>" in diff
    assert "0042" in diff
    assert "0043" in diff
    assert diff.count("<tr>") == 3  # the header, argv, params


def test_a_tampered_stored_plan_is_refused_not_shown(server: ServerProc, server_keys) -> None:
    """A request whose stored plan was edited (argv changed in the database) is shown as
    refused, without the edited plan or an approve form, and the refusal is audited."""
    import json
    import sqlite3

    from oneoff._app import open_app

    request_id = request_migrate(server, server_keys, "0042")
    db = sqlite3.connect(server.app_dir / ".oneoff" / "state.db")
    with db:
        (plan,) = db.execute("SELECT plan FROM requests WHERE id = ?", (request_id,)).fetchone()
        edited = json.loads(plan)
        edited["document"]["argv"][-1] = "9999"
        db.execute("UPDATE requests SET plan = ? WHERE id = ?", (json.dumps(edited), request_id))
    db.close()
    page = server.call(
        "GET", f"/console/requests/{request_id}", headers=cookie_of(server, server_keys["bob"])
    )
    text = page.raw.decode()
    assert 'id="plan-refused"' in text
    assert "9999" not in text
    assert 'id="approve-form"' not in text
    app = open_app(server.app_dir)
    try:
        refused = [e for e in app.audit.events(kind="approval.refused")]
    finally:
        app.close()
    assert refused[-1].actor == "bob"
    assert "does not match its plan hash" in refused[-1].payload["reason"]


def test_a_session_may_deny_only_what_policy_lets_it_approve(
    server: ServerProc, server_keys
) -> None:
    """dave (oncall) may not approve migrate, so his session cannot deny it either (403);
    the request stays pending."""
    request_id = request_migrate(server, server_keys, "0042")
    headers = cookie_of(server, server_keys["dave"])
    page = server.call("GET", f"/console/requests/{request_id}", headers=headers)
    csrf = page.raw.decode().split('name="csrf" value="', 1)[1].split('"', 1)[0]
    body = urllib.parse.urlencode({"csrf": csrf, "reason": "no"}).encode()
    answer = server.call(
        "POST", f"/console/requests/{request_id}/deny", body=body,
        headers={**headers, "Origin": f"http://{server.host}:{server.port}",
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert answer.status == 403, answer
    from oneoff._app import open_app

    app = open_app(server.app_dir)
    try:
        assert app.store.get_request(request_id).status == "pending"
    finally:
        app.close()


def test_reading_needs_a_session(server: ServerProc, server_keys) -> None:
    """Without a cookie, pages redirect to the login page and streams and fragments are 401."""
    request_id = request_migrate(server, server_keys, "0042")
    assert (
        server.call("GET", f"/console/requests/{request_id}").headers["location"]
        == "/console/login"
    )
    assert server.call("GET", f"/console/requests/{request_id}/approvals").status == 401
    assert server.call("GET", "/console/runs/r1/stream").status == 401
    assert server.call("GET", "/console/pending").status == 401


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_every_page_renders_on_both_stores(
    request: pytest.FixtureRequest, backend: str, server_app, server_factory, server_keys
) -> None:
    """Logged in, each console page answers 200 with the server's SQLite or PostgreSQL
    store, and the login is in the audit page (which the pinned policy lets the dba group
    export) with its proof status."""
    import json

    (server_app / "policies" / "audit.cedar").write_text(
        '@id("dba-export")\npermit (principal in Oneoff::Group::"dba", '
        'action == Oneoff::Action::"audit-export", resource);\n'
    )
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    server = server_factory(server_app, url)

    # In development: the throw-away database has no production release.
    out = cli(server, "request", "migrate", "--env", "development", "--key",
              str(server_keys["alice"]), "--json")  # fmt: skip
    request_id = str(json.loads(out)["id"])
    headers = cookie_of(server, server_keys["bob"])
    for path in (
        "/console/",
        "/console/pending",
        f"/console/requests/{request_id}",
        f"/console/requests/{request_id}/approvals",
        "/console/runs?status=running&task=migrate",
        "/console/audit?kind=console.login",
        "/console/break-glass",
    ):
        answer = server.call("GET", path, headers=headers)
        assert answer.status == 200, (path, answer)
    audit = server.call("GET", "/console/audit?kind=console.login", headers=headers).raw.decode()
    assert "console.login" in audit
    assert "after the newest signed checkpoint" in audit or "in signed checkpoint" in audit
