"""The team server's connection limits, as ``oneoff server`` options set them.

Outside the ``oneoff._server`` package on purpose: the CLI's help reads these defaults on
every start, and the first import from that package (a directory scan, then its modules;
``oneoff._server.connections`` imports uvicorn) cost each command about 2 ms. A plain
class for the same reason (a NamedTuple or dataclass costs a millisecond more)."""

from __future__ import annotations

__all__ = ["DEFAULT", "Limits"]


class Limits:
    """How long calls may take to arrive and to finish, and how many one address holds."""

    __slots__ = ("per_address", "request_timeout", "stop_grace")

    def __init__(self, request_timeout: int = 30, per_address: int = 64, stop_grace: int = 20):
        #: Seconds a connection has to deliver a whole request (1 MiB bodies need ~35 kB/s).
        self.request_timeout = request_timeout
        #: Connections one client address may hold at once, per server process.
        self.per_address = per_address
        #: Seconds calls in flight get to finish once the server is asked to stop.
        self.stop_grace = stop_grace


DEFAULT = Limits()
