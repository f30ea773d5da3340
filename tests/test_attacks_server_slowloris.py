"""Attacks on the server's connections by a client with no credentials at all: connecting
and sending nothing, or a request's headers without their end, or headers without the body
they announce ("slowloris"). uvicorn waited for each for ever, so one address could hold
every file descriptor the server had. Now a request must arrive whole within
``--request-timeout`` (408, closed) and one address holds at most
``--connections-per-address`` connections (503, closed); a trusted proxy is exempt."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _serverproc import ServerProc


@contextlib.contextmanager
def served(app: Path, *args: str) -> Iterator[ServerProc]:
    server = ServerProc(app, args=args)
    try:
        yield server.start()
    finally:
        server.stop()


def connect(server: ServerProc, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=60)
    if first:
        sock.sendall(first)
    return sock


def answer(sock: socket.socket) -> tuple[float, bytes]:
    """Everything the server sends until it closes the connection, and when it closed
    (seconds from now); a connection still open after 60 s raises (the old behaviour)."""
    start = time.monotonic()
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    sock.close()
    return time.monotonic() - start, got


def status_and_error(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


SILENT = b""
HALF_HEADERS = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
NO_BODY = b"POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900\r\n\r\n{"


@pytest.mark.parametrize("first", [SILENT, HALF_HEADERS, NO_BODY], ids=["silent", "half", "body"])
def test_a_request_that_never_arrives_whole_is_cut_with_408(server_app: Path, first: bytes) -> None:
    """A connection that stays silent, stops mid-headers, or withholds the body it
    announced gets a 408 (a oneoff error in JSON) and is closed after the deadline."""
    with served(server_app, "--request-timeout", "2") as server:
        took, raw = answer(connect(server, first))
        assert 1.5 < took < 30
        status, error = status_and_error(raw)
        assert status == 408
        assert "did not arrive whole in time" in str(error["message"])
        assert server.call("GET", "/v1/health").status == 200  # everyone else is served


def test_a_kept_alive_connection_must_send_each_later_request_whole_in_time(
    server_app: Path,
) -> None:
    """After one answered call on a kept-alive connection, a second request whose headers
    stop half-way is cut too (the deadline is armed again for every request)."""
    with served(server_app, "--request-timeout", "2") as server:
        sock = connect(server, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"}" not in first:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the first answer: {first!r}"
            first += chunk
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(HALF_HEADERS)
        took, raw = answer(sock)
        assert took < 30
        assert status_and_error(raw)[0] == 408


def test_a_request_sent_slowly_but_within_the_deadline_is_served(server_app: Path) -> None:
    """A request that trickles in, byte groups apart, but is whole before the deadline is
    answered as usual: the limit is on the whole request, not on its pace."""
    with served(server_app, "--request-timeout", "10") as server:
        sock = connect(server)
        for part in (b"GET /v1/he", b"alth HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.3)  # the trickle itself is what is tested
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        sock.close()
        assert data.startswith(b"HTTP/1.1 200")


def test_one_address_cannot_hold_more_than_its_share_of_connections(server_app: Path) -> None:
    """With a cap of 8, eight idle connections from one address are held, the ninth is
    answered 503 and closed at once; when one of the eight goes, a new one is accepted."""
    with served(server_app, "--connections-per-address", "8", "--request-timeout", "120") as server:
        held = [connect(server) for _ in range(8)]
        took, raw = answer(connect(server))
        assert took < 30
        status, error = status_and_error(raw)
        assert status == 503
        assert "too many connections from your address" in str(error["message"])
        held.pop().close()
        deadline = time.monotonic() + 60
        while True:  # the server sees the close a moment later
            response = server.call("GET", "/v1/health")
            if response.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status == 200
        for sock in held:
            sock.close()


def test_a_trusted_proxy_is_not_capped(server_app: Path) -> None:
    """Every client behind a trusted proxy shares its address, so the proxy is exempt from
    the cap (it must enforce its own limits): a ninth connection from it is served."""
    args = ("--connections-per-address", "8", "--trusted-proxy", "127.0.0.1")
    with served(server_app, *args) as server:
        held = [connect(server) for _ in range(8)]
        assert server.call("GET", "/v1/health").status == 200
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--request-timeout", "0"), ("--request-timeout", "3601"),
     ("--connections-per-address", "0"), ("--stop-grace", "-1"), ("--stop-grace", "soon")],
)  # fmt: skip
def test_limits_out_of_range_are_usage_errors(server_app: Path, option: str, value: str) -> None:
    """Each limit outside its range is refused up front with exit 2, naming the option."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "oneoff", "server", "--app", str(server_app),
         "--listen", "127.0.0.1:0", option, value],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert option in result.stderr
    assert "Traceback" not in result.stderr
