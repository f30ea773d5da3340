"""Serve the app with uvicorn on a local address; SIGTERM or SIGINT stop it gracefully.

The listening socket is bound here, before any worker starts: a port that is taken is one
clear error, and with ``workers > 1`` every worker process accepts on that one socket
(``oneoff._server.workers`` supervises them). uvicorn's own handlers finish the requests in
flight, run the lifespan's shutdown (which closes every store connection), then return:
the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn

from oneoff.errors import OneoffError

if TYPE_CHECKING:
    from oneoff._server.context import ServerContext
    from oneoff._server_limits import Limits

__all__ = ["BACKLOG", "bind", "parse_listen", "serve", "serve_socket"]

#: Connections the kernel queues for the workers to accept (uvicorn's default).
BACKLOG = 2048


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port); UsageError otherwise."""
    from oneoff.errors import UsageError

    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; OneoffError (one line) if it cannot be."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OneoffError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise OneoffError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    ctx: ServerContext,
    host: str,
    port: int,
    *,
    ready: str | None = None,
    workers: int = 1,
    limits: Limits | None = None,
) -> int:
    """Run until signalled. ``ready``: a file to write ``host:port`` to once every worker
    listens (tests wait for it, and port 0 needs it to be found); ``limits``: request
    deadline, connections per address, stop grace (``oneoff._server.connections``)."""
    from oneoff._server_limits import Limits

    limits = limits or Limits()
    sock = bind(host, port)
    bound = sock.getsockname()
    where = f"{bound[0]}:{bound[1]}"
    if workers > 1:
        from oneoff._server.workers import supervise

        return supervise(ctx, sock, workers, lambda: _announce(ready, where), limits)
    try:
        return serve_socket(ctx, sock, lambda: _announce(ready, where), limits)
    finally:
        sock.close()


def serve_socket(
    ctx: ServerContext, sock: socket.socket, on_ready: Callable[[], None], limits: Limits
) -> int:
    """Serve on the listening ``sock`` in this process until SIGTERM or SIGINT; 0 once
    stopped, 1 if it never started. ``on_ready`` runs once it accepts calls. Once asked to
    stop, calls in flight get ``limits.stop_grace`` seconds, then are cancelled: without
    that bound a live output stream (as long as its run) or a client that sends headers
    but never its body would keep the process alive forever (uvicorn waits unboundedly by
    default), and a worker orphaned by a SIGKILLed parent has nobody left to kill it."""
    from oneoff._server.app import create_app
    from oneoff._server.connections import guarded_protocol

    trusted = list(ctx.trusted_proxies)
    config = uvicorn.Config(
        create_app(ctx), log_level="warning", access_log=False, lifespan="on",
        server_header=False, backlog=BACKLOG, timeout_graceful_shutdown=limits.stop_grace,
        http=guarded_protocol(ctx.trusted_proxies, limits),
        # No WebSocket routes: an Upgrade request is answered as plain HTTP, and never
        # hands its connection to another protocol behind the limits' back.
        ws="none",
        # Forwarded headers only from the proxies named (oneoff._server.proxies): from
        # anyone else they would let a client pick its own address and scheme.
        proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
    )  # fmt: skip
    server = _Server(config)
    # Everything made so far (modules, the app, the pinned gate) lives as long as the
    # process: out of the collector's sight, a full collection does not walk it again and
    # again while calls wait (a pause in the tail of every call's latency).
    import gc

    gc.collect()
    gc.freeze()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.stop)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            on_ready()
        await task

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run())
    return 0 if server.started else 1


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the `server` extra brings it: it spends
    less CPU per call), else asyncio's own."""
    import importlib

    try:
        uvloop = importlib.import_module("uvloop")  # optional: no stubs needed to check this
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal asks it to stop and the process then exits 0 (uvicorn
    would re-raise the signal after its graceful shutdown, and die by it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        self.should_exit = True


def _announce(ready: str | None, where: str) -> None:
    if ready is not None:
        _write_ready(ready, where)


def _write_ready(path: str, text: str) -> None:
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
