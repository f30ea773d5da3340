"""Connection limits: each request must arrive whole within a deadline, and one client
address holds a bounded number of connections.

Threat: a client with no credentials at all (nothing it sends is ever checked) opens
connections and sends nothing, or a request's headers without their end, or headers
without the body they announce. uvicorn waits for such a request for ever (its keep-alive
timer runs only between requests), so each connection stays open, and a few thousand of
them from one address exhaust the server's file descriptors: nobody can then approve,
run or read the audit log ("slowloris"). So, per server process:

* a connection must deliver a complete request (headers and body) within
  ``request_timeout`` seconds of connecting, and every later request on a kept-alive
  connection within as long from its first byte; else it gets ``408 Request Timeout`` and
  is closed (a call the app has already begun to answer is not cut by this: the deadline
  stops counting once the whole request is in);
* one client address holds at most ``per_address`` connections at a time; more get
  ``503`` and are closed at once. A ``--trusted-proxy`` is exempt (every client behind it
  shares its address): the proxy itself must then enforce its own timeouts and limits
  (nginx's ``client_header_timeout``, ``client_body_timeout`` and ``limit_conn``).

Not defended here: many addresses at once (a botnet) and clients with valid credentials;
see README "Limits".
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oneoff._server_limits import Limits
from oneoff.errors import OneoffError

__all__ = ["guarded_protocol"]


def _answer(status: str, message: str, hint: str) -> bytes:
    """A whole HTTP answer carrying a oneoff error, as the app's own errors do (JSON)."""
    import json

    from oneoff._server.errors import error_body

    body = json.dumps(error_body(OneoffError(message, hint=hint))).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_TIMEOUT = _answer(
    "408 Request Timeout",
    "the request did not arrive whole in time: the server closed the connection",
    "a slow or stalled network between you and the server; try again",
)
_BUSY = _answer(
    "503 Service Unavailable",
    "too many connections from your address are open at once",
    "close idle connections, or (behind a reverse proxy) start the server with "
    "--trusted-proxy naming it",
)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address; an IPv4-mapped one (``::ffff:a.b.c.d``, as a dual-stack
    listener sees an IPv4 client) as the IPv4 address it is. None if not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(address: str) -> str:
    """Whose share a connection counts against: the IPv4 address (IPv4-mapped too), else
    the IPv6 /64 (one host is given a whole /64 and could rotate through it), else the
    text as is."""
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def guarded_protocol(trusted_proxies: tuple[str, ...], limits: Limits) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol (httptools) with the limits above; give it as
    ``uvicorn.Config(http=...)``.

    The request clock runs only while the server waits for the client with nothing of its
    own to send on the connection: from the connection's start, or a request's first byte,
    to the request's end. It stops while an earlier response on the connection is being
    sent (a pipelined request is not read meanwhile, and a 408 must never land inside
    another response, such as a live output stream) and starts afresh when that response
    is complete and a request is still arriving.
    """
    request_timeout, per_address = limits.request_timeout, limits.per_address
    exempt = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
    open_from: Counter[str] = Counter()  # this process's connections, by client_key

    def is_exempt(address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in exempt)

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None
        _receiving = False  # a request has begun to arrive and is not whole yet
        _current: Any = None  # that request's cycle, once its headers are in

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if not is_exempt(address):
                key = client_key(address)
                if open_from[key] >= per_address:
                    transport.write(_BUSY)
                    transport.close()
                    return
                open_from[key] += 1
                self._counted = key
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                open_from[self._counted] -= 1
                if open_from[self._counted] <= 0:
                    del open_from[self._counted]
                self._counted = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            answering = self.cycle is not None and not self.cycle.response_complete
            super().on_message_begin()
            self._receiving, self._current = True, None
            if self._deadline is None and not answering:
                self._arm()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._current = self.cycle
            if self.pipeline:  # queued behind a response in flight: not read meanwhile
                self._disarm()

        def on_message_complete(self) -> None:
            self._receiving = False
            self._disarm()  # the whole request is in: the app answers in its own time
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._receiving and self._deadline is None and not self.transport.is_closing():
                self._arm()  # a request still arriving, now with nothing else in the way

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(request_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            answered = self._current is not None and self._current.response_started
            if not answered:  # (an app may answer before reading the body: then just close)
                self.transport.write(_TIMEOUT)
            self.transport.close()

    return GuardedProtocol
