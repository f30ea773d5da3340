"""Forwarded headers against REAL server processes: believed only from a reverse proxy
named with --trusted-proxy, so a client cannot choose its own address (to dodge the
failed-authentication limit) or scheme, and behind a named TLS proxy each client is
counted on its own and the console sees the https its browser used."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from _serverproc import Response, ServerProc
from oneoff._identity import Signer
from oneoff._server.proxies import trusted_proxies
from oneoff._weblogin import login_link, login_statement
from oneoff.errors import UsageError
from test_attacks_server_flood import in_one_window

KEYS = dict[str, Path]
LIMIT = 3


@pytest.fixture(autouse=True)
def _low_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEOFF_SERVER_AUTH_FAILURES", str(LIMIT))


def forged_read(server: ServerProc, forwarded_for: str | None = None) -> Response:
    headers = {"Authorization": "Bearer forged.token"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return server.call("GET", "/v1/requests", headers=headers)


def behind_proxy(app_dir: Path) -> ServerProc:
    return ServerProc(app_dir, args=("--trusted-proxy", "127.0.0.1")).start()


def test_a_client_cannot_dodge_the_limit_by_naming_other_addresses(server: ServerProc) -> None:
    """Without --trusted-proxy, X-Forwarded-For is ignored: a client that names a new
    address on every failed call is still counted as itself, and throttled."""
    in_one_window()
    for n in range(LIMIT):
        assert forged_read(server, f"10.0.0.{n}").status == 401
    assert forged_read(server, "10.9.9.9").status == 429


def test_behind_a_trusted_proxy_each_client_is_counted_on_its_own(server_app: Path) -> None:
    """Behind a named proxy, one client's failures throttle that client, not everyone
    else who comes through the same proxy."""
    server = behind_proxy(server_app)
    try:
        in_one_window()
        for _ in range(LIMIT):
            assert forged_read(server, "10.0.0.1").status == 401
        assert forged_read(server, "10.0.0.1").status == 429
        assert forged_read(server, "10.0.0.2").status == 401
        # The right-most address the proxy did not add is the client: one it was handed
        # by the client itself is not believed.
        assert forged_read(server, "10.0.0.2, 10.0.0.1").status == 429
    finally:
        server.stop()


def _login(server: ServerProc, key: Path, headers: dict[str, str]) -> Response:
    """The console's login form posted with ``headers`` (an https Origin, as a browser on
    https sends it)."""
    link = login_link("https://x", login_statement(server.server_id), Signer(key, agent=False))
    body = urllib.parse.urlencode({"token": link.split("#", 1)[1]}).encode()
    sent = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    return server.call("POST", "/console/login", body=body, headers=sent)


def test_the_console_behind_a_trusted_tls_proxy_sets_a_secure_cookie(
    server_app: Path, server_keys: KEYS
) -> None:
    """A browser on https through a named TLS-terminating proxy logs in: the origin check
    expects https, and the session cookie is Secure under the __Host- name."""
    server = behind_proxy(server_app)
    try:
        own = f"https://{server.host}:{server.port}"
        answer = _login(server, server_keys["bob"], {"X-Forwarded-Proto": "https", "Origin": own})
        assert answer.status == 303, answer
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-oneoff_session=")
        assert "secure" in cookie.lower()
    finally:
        server.stop()


def test_a_client_cannot_claim_https_itself(server: ServerProc, server_keys: KEYS) -> None:
    """Without --trusted-proxy, X-Forwarded-Proto is ignored: the scheme stays http and an
    https Origin is a foreign one, and the login is refused."""
    own = f"https://{server.host}:{server.port}"
    answer = _login(server, server_keys["bob"], {"X-Forwarded-Proto": "https", "Origin": own})
    assert answer.status == 401, answer
    assert f"comes from {own}, not http://".encode() in answer.raw
    assert "set-cookie" not in {k.lower() for k in answer.headers}


@pytest.mark.parametrize("bad", ["*", "localhost", "10.0.0.300", "10.0.0.0/33", ""])
def test_only_addresses_and_networks_can_be_trusted(bad: str) -> None:
    """Anything but an IP address or network is refused (exit 2) naming it, `*` too:
    trusting every address would let any client choose its own."""
    with pytest.raises(UsageError, match="--trusted-proxy must be an IP address or network"):
        trusted_proxies([bad])
    assert trusted_proxies(["10.0.0.7/24", "::1", "::1"]) == ("10.0.0.0/24", "::1")


def test_the_cli_refuses_a_bad_trusted_proxy_in_one_line(server_app: Path) -> None:
    """`oneoff server --trusted-proxy '*'` exits 2 with one line, before it listens."""
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", "server", "--app", str(server_app),
         "--listen", "127.0.0.1:0", "--trusted-proxy", "*"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "--trusted-proxy must be an IP address or network" in done.stderr
    assert "Traceback" not in done.stderr
