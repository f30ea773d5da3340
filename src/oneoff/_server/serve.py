"""Serve the app with uvicorn on a local address; SIGTERM or SIGINT stop it gracefully.

uvicorn's own handlers finish the requests in flight, run the lifespan's shutdown (which
closes every store connection), then return: the process exits 0.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from oneoff._server.context import ServerContext

__all__ = ["parse_listen", "serve"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port); UsageError otherwise."""
    from oneoff.errors import UsageError

    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def serve(ctx: ServerContext, host: str, port: int, *, ready: str | None = None) -> int:
    """Run until signalled. ``ready``: a file to write ``host:port`` to once listening
    (tests wait for it, and port 0 needs it to be found)."""
    import asyncio

    from oneoff._server.app import create_app

    config = uvicorn.Config(
        create_app(ctx), host=host, port=port, log_level="warning", access_log=False,
        lifespan="on", server_header=False, proxy_headers=False,
    )  # fmt: skip
    server = _Server(config)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.stop)
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and ready is not None:
            bound = server.servers[0].sockets[0].getsockname()
            _write_ready(ready, f"{bound[0]}:{bound[1]}")
        await task

    asyncio.run(run())
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal asks it to stop and the process then exits 0 (uvicorn
    would re-raise the signal after its graceful shutdown, and die by it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        self.should_exit = True


def _write_ready(path: str, text: str) -> None:
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
