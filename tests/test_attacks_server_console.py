"""Attacks on the web console and the HTTP surface of a REAL server process: cross-site
POSTs, redirects, static paths, oversized queries and the address it listens on."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _access_kit import events
from _serverproc import ServerProc
from test_attacks_server import (
    ask,
    console_login,
    console_post,
    csrf_of,
    plan_json,
    status_of,
)

KEYS = dict[str, Path]


FORGERIES = ("no-origin", "other-origin", "no-token", "other-sessions-token")


@pytest.mark.parametrize("action", ["deny", "approve", "logout"])
def test_every_console_post_refuses_a_cross_site_forgery(
    server: ServerProc, server_keys: KEYS, action: str
) -> None:
    """Deny, approve and log out each refuse (403, audited) a POST without our origin or
    without this session's CSRF token, and the request stays pending."""
    import urllib.parse

    rid = ask(server, server_keys, "alice", plan_json(server.app_dir)).json["request"]["id"]
    bob, carol = (console_login(server, server_keys[who]) for who in ("bob", "carol"))
    path = "/console/logout" if action == "logout" else f"/console/requests/{rid}/{action}"
    for forgery in FORGERIES:
        page = server.call("GET", f"/console/requests/{rid}", headers=bob)
        form = {"csrf": csrf_of(page), "reason": "forged", "signature": "x", "time": "x"}
        if forgery == "other-sessions-token":
            form["csrf"] = csrf_of(server.call("GET", f"/console/requests/{rid}", headers=carol))
        elif forgery == "no-token":
            del form["csrf"]
        if forgery in ("no-origin", "other-origin"):
            headers = {**bob, "Content-Type": "application/x-www-form-urlencoded"}
            if forgery == "other-origin":
                headers.update({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
            body = urllib.parse.urlencode(form).encode()
            answer = server.call("POST", path, body=body, headers=headers)
        else:
            answer = console_post(server, path, form, bob)
        assert answer.status == 403, (forgery, answer)
        assert "set-cookie" not in answer.headers
        assert status_of(server, rid) == "pending"
        refused = events(server.app_dir, "auth.refused")[-1]
        assert (refused.actor, refused.payload["path"]) == ("bob", path), forgery


def test_login_redirects_only_to_the_console(server: ServerProc, server_keys: KEYS) -> None:
    """Whatever a login link's page is given to follow (next=, a scheme-relative or
    backslash path), a login lands on /console/ of this server."""
    from oneoff._identity import Signer
    from oneoff._weblogin import login_link, login_statement

    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        link = login_link("http://x", login_statement(server.server_id), Signer(
            server_keys["bob"], agent=False))  # fmt: skip
        import urllib.parse

        body = urllib.parse.urlencode({"token": link.split("#", 1)[1], "next": target}).encode()
        answer = server.call(
            "POST", "/console/login", query=urllib.parse.urlencode({"next": target}), body=body,
            headers={"Origin": f"http://{server.host}:{server.port}",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert answer.status == 303, answer
        assert answer.headers["location"] == "/console/"


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e%2fconsole%2fstatic%2fconsole.js",
        "/static/console.js%00.css",
        "/static/..\\..\\oneoff.toml",
        "/static/CONSOLE.JS",
    ],
)
def test_static_serves_its_own_files_only(server: ServerProc, path: str) -> None:
    """An encoded traversal, a NUL, a backslash or another case under /static is 404."""
    answer = server.call("GET", path)
    assert answer.status == 404, answer
    assert b"[tasks" not in answer.raw


def test_a_huge_query_is_refused_and_the_server_stays_up(
    server: ServerProc, server_keys: KEYS
) -> None:
    """A 1 MB query string, a 40 kB unknown parameter and a 40 kB status value are each
    refused without a crash, and the server answers the next call."""
    token = server.token(server_keys["bob"])
    auth = {"Authorization": f"Bearer {token}"}
    for query in ("status=" + "p" * 40_000, "x" * 40_000 + "=1"):
        answer = server.call("GET", "/v1/requests", query=query, headers=auth)
        assert 400 <= answer.status < 500, answer
        assert len(answer.raw) < 2_000
    try:
        answer = server.call("GET", "/v1/requests", query="status=" + "p" * 1_000_000, headers=auth)
        assert 400 <= answer.status < 500, answer
    except (ConnectionError, OSError):
        pass  # the HTTP parser may close the connection on a request line this long
    assert server.call("GET", "/v1/health").status == 200
    assert "crashed" not in server.output()


def test_the_server_listens_on_loopback_by_default(server_app: Path) -> None:
    """A bare `oneoff server` binds 127.0.0.1:8421, never every interface."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8421))
        except OSError:
            pytest.skip("port 8421 is in use on this machine")
    ready = Path(tempfile.mkdtemp(prefix="oneoff-listen-")) / "ready"
    log = ready.with_name("log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oneoff", "server", "--app", str(server_app),
             "--ready-file", str(ready)],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a real condition (the ready file)
        assert ready.exists(), log.read_text()
        assert ready.read_text().strip() == "127.0.0.1:8421"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_the_console_shows_the_audit_log_only_to_whom_policy_lets_export_it(
    server: ServerProc, server_keys: KEYS
) -> None:
    """dave, whom the pinned policy refuses audit-export (the API answers 403), cannot read
    the audit events through the console either."""
    assert server.read(server_keys["dave"], "/v1/audit/events").status == 403
    page = server.call("GET", "/console/audit", headers=console_login(server, server_keys["dave"]))
    assert page.status == 403, page
    assert b"server.pinned" not in page.raw
