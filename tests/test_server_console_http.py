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
        (("--web", "--server", "ftp://x"), 2, "http(s) URL"),
        (("--web", "--server", "http://127.0.0.1:9/?q=1"), 2, "http(s) URL"),
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
    """Nothing listening at --server: exit 2, saying so."""
    done = login_cli("--web", "--server", "http://127.0.0.1:9", "--key", str(server_keys["bob"]))
    assert done.returncode == 2
    assert "cannot reach the server" in done.stderr
    assert "Traceback" not in done.stderr


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
