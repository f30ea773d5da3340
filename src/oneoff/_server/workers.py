"""Several server processes on one listening socket, supervised by the process that bound it.

Why: one Python process runs one call's checks at a time (the GIL), so a server process
uses one core whatever the machine has. The parent binds the socket and builds the
ServerContext (pinning checks, server id, token and fingerprint keys, the audit key made
if new: all of it in the store or the state directory, shared by every worker), then forks
``n`` workers that each serve that socket with uvicorn; the kernel hands each new
connection to one of them. Nothing a call checks lives in one worker's memory only: nonces,
approvals, run grants, locks and the audit chain are in the store, whose write lock
serializes every process's transactions and audit batches.

The parent only supervises, fail closed:

* ``ready`` runs once every worker listens (not before: a supervisor or test that sees the
  ready file gets a whole server);
* SIGTERM or SIGINT to the parent stops every worker gracefully (calls in flight finish),
  exit 0 once all of them exited 0;
* a worker that dies while the server runs (a crash, the OOM killer's SIGKILL) is logged
  and the whole server stops, exit 1: no half-dead server keeps answering with some of its
  workers gone. Run it under a supervisor that restarts it (systemd ``Restart=on-failure``);
* a worker cancels the calls still in flight ``stop_grace`` seconds after being asked to stop
  (``serve_socket``); one that outlives ``stop_grace + STOP_MARGIN`` seconds is killed (exit 1).
  Workers get SIGTERM if the parent itself dies (PR_SET_PDEATHSIG), and then stop within
  ``stop_grace`` on their own: no live stream keeps an orphaned worker serving.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from oneoff._log import log
from oneoff.errors import OneoffError

if TYPE_CHECKING:
    import socket

    from oneoff._server.context import ServerContext
    from oneoff._server_limits import Limits

__all__ = ["STOP_MARGIN", "supervise"]

#: Seconds past the calls' grace a worker gets to shut down (close its store), then SIGKILL.
STOP_MARGIN = 10.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


def supervise(
    ctx: ServerContext, sock: socket.socket, n: int, on_ready: Callable[[], None], limits: Limits
) -> int:
    """Fork ``n`` workers serving ``sock``; return the server's exit status once they end.
    ``limits.stop_grace``: seconds a stopping worker gives its calls in flight."""
    patience = limits.stop_grace + STOP_MARGIN
    if threading.active_count() > 1:  # forking a threaded process copies held locks
        raise OneoffError("internal error: the server started threads before its workers")
    ready_r, ready_w = os.pipe()
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w, ready_r):
        os.set_blocking(fd, False)
    previous = {s: signal.signal(s, _note) for s in _SIGNALS}
    old_wakeup = signal.set_wakeup_fd(wake_w)
    parent = os.getpid()
    workers: dict[int, int] = {}  # pid -> worker number
    try:
        for number in range(1, n + 1):
            pid = os.fork()
            if pid == 0:
                _worker(ctx, sock, parent, ready_w, (ready_r, wake_r, wake_w), limits)
            workers[pid] = number
        sock.close()  # the workers hold it; closed there, the port is free again
        os.close(ready_w)
        ready_w = -1
        return _watch(workers, n, ready_r, wake_r, on_ready, patience)
    finally:
        _stop(workers, wake_r, patience)
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for fd in (ready_r, ready_w, wake_r, wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _note(signum: int, frame: object) -> None:
    """The wakeup pipe carries the signal's number to ``_watch``: nothing to do here."""


def _watch(
    workers: dict[int, int],
    n: int,
    ready_r: int,
    wake_r: int,
    on_ready: Callable[[], None],
    patience: float,
) -> int:
    listening = 0
    with selectors.DefaultSelector() as selector:
        selector.register(ready_r, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _events in selector.select():
                if key.fd == ready_r:
                    got = _drain(ready_r)
                    listening += len(got)
                    if got and listening == n:
                        on_ready()
                        log("server.workers", f"serving with {n} worker processes", workers=n)
                    continue
                signums = set(_drain(wake_r))
                if signums & {signal.SIGTERM, signal.SIGINT}:
                    return _graceful(workers, wake_r, patience)
                if signal.SIGCHLD in signums:
                    died = _reap(workers)
                    if died:
                        return 1


def _drain(fd: int) -> bytes:
    out = b""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while chunk := os.read(fd, 512):
            out += chunk
    return out


def _reap(workers: dict[int, int]) -> bool:
    """Collect workers that ended; True (logged) if any did: the server must stop."""
    died = False
    for pid in list(workers):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            continue
        number = workers.pop(pid)
        log(
            "server.worker_died",
            f"server worker {number} (pid {pid}) {_describe(status)}; stopping the server",
            level="error",
            hint="the other workers finish their calls and stop; restart the server",
            pid=pid,
        )
        died = True
    return died


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _graceful(workers: dict[int, int], wake_r: int, patience: float) -> int:
    """Ask every worker to stop; 0 if each exited 0 within ``patience`` seconds."""
    import select

    code = 0
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + patience
    while workers and time.monotonic() < deadline:
        for pid in list(workers):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                workers.pop(pid)
                if status != 0:
                    code = 1
        if workers:  # woken by a worker's exit (SIGCHLD), else look again in a moment
            select.select([wake_r], [], [], 0.5)
            _drain(wake_r)
    if workers:
        code = 1
    return code


def _stop(workers: dict[int, int], wake_r: int, patience: float) -> None:
    """Whatever is still running when the supervisor ends (an error, a worker died):
    SIGTERM, then SIGKILL after ``patience`` seconds; every worker is reaped."""
    if not workers:
        return
    if _graceful(workers, wake_r, patience) and workers:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            workers.pop(pid)


def _worker(
    ctx: ServerContext,
    sock: socket.socket,
    parent: int,
    ready_w: int,
    close: tuple[int, ...],
    limits: Limits,
) -> NoReturn:
    """One worker process (after fork): serve until told to stop; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        from oneoff._proctree import PR_SET_PDEATHSIG, Libc

        Libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the death signal was set
            os._exit(1)
        from oneoff._server.serve import serve_socket

        def listening() -> None:
            os.write(ready_w, b"r")

        code = serve_socket(ctx, sock, listening, limits)
    except BaseException as exc:  # a worker reports, then always exits
        with contextlib.suppress(Exception):
            log("server.worker_failed", f"server worker failed: {exc!r}", level="error")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
