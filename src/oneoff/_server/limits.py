"""The server's connection limits, as ``oneoff server`` options set them (kept apart from
``oneoff._server.connections``, which imports uvicorn: the CLI's help reads these
defaults without loading the server; a NamedTuple, as `dataclasses` would cost the
CLI's start 6 ms)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DEFAULT", "Limits"]


class Limits(NamedTuple):
    """How long calls may take to arrive and to finish, and how many one address holds."""

    #: Seconds a connection has to deliver a whole request (1 MiB bodies need ~35 kB/s).
    request_timeout: int = 30
    #: Connections one client address may hold at once, per server process.
    per_address: int = 64
    #: Seconds calls in flight get to finish once the server is asked to stop.
    stop_grace: int = 20


DEFAULT = Limits()
