"""The server's connection limits (``oneoff._server.connections``) against a real uvicorn
serving a small ASGI app in this process, where a response can be made as slow as a live
output stream: the request clock never fires into another response, an early answer is
not followed by a 408, and the per-address cap counts IPv4-mapped and IPv6 clients as the
hosts they are."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from oneoff._server.connections import client_key, guarded_protocol
from oneoff._server_limits import Limits

uvicorn = pytest.importorskip("uvicorn")

STREAM_CHUNKS = 6  # one every 0.5 s: the stream outlasts the 1 s request timeout


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["path"] == "/stream":  # as a live output stream: longer than the deadline
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(STREAM_CHUNKS):
            await send(
                {"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True}
            )
            await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/early":  # answers before reading the body, as a refused call does
        headers = [(b"content-length", b"4")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": b"nope"})
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message["body"])
        if not message.get("more_body"):
            break
    body = b"got %d" % size
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serving(
    *,
    host: str = "127.0.0.1",
    trusted: tuple[str, ...] = (),
    per_address: int = 64,
    timeout: int = 1,
) -> Iterator[int]:
    """A uvicorn on ``host`` with the guarded protocol (request timeout 1 s); its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(64)
    limits = Limits(request_timeout=timeout, per_address=per_address, stop_grace=1)
    config = uvicorn.Config(
        app, http=guarded_protocol(trusted, limits), ws="none", lifespan="on",
        log_level="critical", loop="asyncio",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the server thread ended before it started"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)  # polling a real condition (started), not a fixed wait
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def exchange(port: int, data: bytes, *, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a new connection; everything received until the server closes."""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(data)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
    return got


WITHHELD = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"


def test_a_pipelined_request_is_not_timed_while_a_stream_is_answered() -> None:
    """A request pipelined behind a live stream (its body withheld) is not timed while the
    stream runs, longer than the timeout: the stream arrives whole, and the 408 for the
    withheld request follows it, never inside it."""
    with serving() as port:
        got = exchange(port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" + WITHHELD)
    stream, _, rest = got.partition(b"0\r\n\r\n")  # the chunked stream's last chunk
    assert stream.startswith(b"HTTP/1.1 200")
    assert b"408" not in stream
    for i in range(STREAM_CHUNKS):
        assert b"data: %d\n\n" % i in stream
    assert rest.startswith(b"HTTP/1.1 408")


def test_an_answer_given_before_the_body_is_not_followed_by_a_408() -> None:
    """A call answered before its body arrived (a refusal) is closed when the body never
    comes, without a second answer appended to the first."""
    with serving() as port:
        got = exchange(port, b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    assert got.startswith(b"HTTP/1.1 401")
    assert got.count(b"HTTP/1.1") == 1


def test_a_whole_request_after_a_slow_answer_is_served() -> None:
    """A kept-alive connection whose first answer took longer than the timeout still gets
    its next, whole request answered."""
    with serving() as port:
        got = exchange(
            port,
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
    assert got.count(b"HTTP/1.1 200") == 2
    assert got.endswith(b"got 2")


def test_an_ipv4_client_on_a_dual_stack_listener_is_one_address() -> None:
    """On a dual-stack listener an IPv4 client arrives as ``::ffff:a.b.c.d``: the cap
    counts it as its IPv4 address, and a trusted IPv4 proxy stays exempt."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with serving(host="::", per_address=2, timeout=120) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(2)]
        assert b"HTTP/1.1 503" in exchange(port, b"")
        for sock in held:
            sock.close()
    with serving(host="::", per_address=2, trusted=("127.0.0.1",), timeout=120) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(2)]
        got = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200")
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("not an address", "not an address"),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_slash_64(address: str, key: str) -> None:
    """A host given an IPv6 /64 cannot dodge the cap by rotating through it; an
    IPv4-mapped address is its IPv4 address."""
    assert client_key(address) == key
