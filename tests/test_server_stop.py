"""A stopping server stops: calls still in flight get ``--stop-grace`` seconds, then are
cut. Without that bound uvicorn waits for them forever, so a client that sends a call's
headers but never its body (or a live output stream, as long as its run) kept a SIGTERMed
server running, and kept workers orphaned by a SIGKILLed parent serving with nobody left
to kill them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _grant_kit import wait_for
from _serverproc import ServerProc
from test_server_workers import gone, workers_of


@contextlib.contextmanager
def served(app: Path, *args: str, workers: int = 1) -> Iterator[ServerProc]:
    """A server whose request deadline (an hour) cannot be what ends a held call."""
    server = ServerProc(app, workers=workers, args=("--request-timeout", "3600", *args))
    try:
        yield server.start()
    finally:
        server.stop()


def held_call(server: ServerProc) -> socket.socket:
    """A call whose headers arrive but whose body never does: it is in flight until cut.
    A call answered on another connection afterwards shows the server has read it."""
    sock = socket.create_connection((server.host, server.port), timeout=120)
    sock.sendall(
        b"POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    assert server.call("GET", "/v1/health").status == 200
    return sock


def wait_closed(sock: socket.socket) -> None:
    """Read to the end: returns once the peer closed (EOF or reset); a timeout raises."""
    sock.settimeout(30)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    finally:
        sock.close()


def test_sigterm_cuts_a_call_that_never_finishes_after_the_grace(server_app: Path) -> None:
    """A SIGTERMed server with a call stuck in flight exits 0 once the grace is over, and
    the stuck client's connection is closed, instead of waiting for it forever."""
    with served(server_app, "--stop-grace", "2") as server:
        held = held_call(server)
        assert server.proc is not None
        asked = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=90) == 0
        assert time.monotonic() - asked < 60  # the grace (2 s) ended it, not the deadline
        wait_closed(held)
        with pytest.raises(ConnectionRefusedError):
            server.call("GET", "/v1/health")


def test_orphaned_workers_stop_after_the_grace_even_with_calls_in_flight(
    server_app: Path,
) -> None:
    """SIGKILL of the supervising parent while every worker holds a call that never
    finishes: the workers (sent SIGTERM by the kernel) still stop within the grace; no
    orphan lingers serving its stuck calls."""
    with served(server_app, "--stop-grace", "2", workers=2) as server:
        pids = workers_of(server)
        held = [held_call(server) for _ in range(6)]  # most likely on both workers
        assert server.proc is not None
        try:
            server.proc.kill()
            server.proc.wait(timeout=60)
            wait_for(lambda: all(gone(pid) for pid in pids), "every worker to stop", timeout=60)
        finally:
            for sock in held:
                sock.close()
            for pid in pids:  # none is left behind, even when the check above failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
