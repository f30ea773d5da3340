"""A runner forked ahead of time, so a request does not wait for ``fork()``.

The daemon keeps one spare fork waiting on a private socket pair. When a request passes
every check, the daemon hands the spare the client's connection, descriptors and request
(SCM_RIGHTS), and forks the next spare after the client is on its way. A spare is a plain
fork of the stateless daemon: it holds nothing a fresh fork would not. While it waits it
keeps SIGTERM and SIGINT blocked (their handlers are still the daemon's), and it exits as
soon as the daemon closes the pair (stop, crash or exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from oneoff._daemon.request import FDS
from oneoff._daemon.wire import (
    WireError,
    decode,
    encode,
    frame_size,
    recv_exact,
    recv_frame,
    send_frame,
)

__all__ = ["Spare", "close_inherited_fds", "fork_runner"]

_BLOCKED = {signal.SIGTERM, signal.SIGINT}


def close_inherited_fds(keep: set[int]) -> None:
    """Close every descriptor above stderr but ``keep``: a wrapper's lock or a pipe someone
    waits on must not stay open in a long-lived process."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # EBADF: the listing's own descriptor
                os.close(fd)


def run_forked(
    conn: socket.socket,
    fields: list[bytes],
    fds: list[int],
    umask: int,
    verdict: socket.socket | None = None,
) -> None:
    """In a fork: become the caller's runner, run ``main(argv)``, report, exit. With
    ``verdict``, first wait there for the daemon's checks: "go", or a refusal to pass on."""
    code = 1
    approved = verdict is None  # with a verdict to wait for, stay silent until it says go
    try:
        keep = {conn.fileno(), *fds, *([verdict.fileno()] if verdict else [])}
        # Other clients' connections and descriptors, the listener, the selector: not ours.
        close_inherited_fds(keep)
        from oneoff._daemon.runner import become_caller, run_for_caller

        argv = become_caller(fields, fds, umask)
        if verdict is not None:
            answer = recv_frame(verdict)
            verdict.close()
            if answer != [b"go"]:
                reason = answer[1] if answer[:1] == [b"refused"] and len(answer) == 2 else b"?"
                send_frame(conn, [b"refused", reason])
                code = 0
                return
            approved = True
        code = run_for_caller(conn, argv)
    except BaseException:
        if approved:  # before "go" the client runs the command itself: no noise for it
            import traceback

            traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(Exception):
                sys.stderr.flush()
    finally:
        os._exit(code)


def fork_runner(conn: socket.socket, fields: list[bytes], fds: list[int], umask: int) -> int:
    """Fork a runner now (no spare at hand); its pid."""
    # No SIGTERM may reach the fork while it still has the daemon's handler (which would
    # unwind into serve's clean-up and unlink the live socket); the fork unblocks them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        child = os.fork()
        if child == 0:
            run_forked(conn, fields, list(fds), umask)  # never returns
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
    return child


class Spare:
    """One waiting fork and the daemon's end of its socket pair."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:
                ours.close()
                _wait_for_work(theirs)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
        theirs.close()
        self.pid, self.sock = pid, ours

    def hand_over(
        self, conn: socket.socket, fields: list[bytes], fds: list[int], umask: int
    ) -> bool:
        """Give the spare this request; False if it is gone (fork a runner instead)."""
        frame = encode([str(umask).encode(), *fields])
        try:
            sent = socket.send_fds(self.sock, [frame], [conn.fileno(), *fds])
            if sent < len(frame):
                self.sock.sendall(frame[sent:])
        except OSError:
            return False
        return True

    def verdict(self, reason: str | None) -> bool:
        """Tell a spare that has a request whether the checks passed; False if it is gone."""
        try:
            send_frame(self.sock, [b"go"] if reason is None else [b"refused", reason.encode()])
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()  # an idle spare reads EOF and exits; a handed-over one runs on


def _wait_for_work(sock: socket.socket) -> None:
    """The spare's life: wait for one request (or EOF), then become its runner."""
    try:
        close_inherited_fds({sock.fileno()})
        # The descriptors travel with the first bytes of the frame.
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, FDS + 1)
        while head and len(head) < 4:
            more = sock.recv(4 - len(head))
            head += more
            if not more:
                break
        if len(head) < 4 or len(fds) != FDS + 1:
            os._exit(0)  # the daemon went away, or sent nothing we can use
        fields = decode(recv_exact(sock, frame_size(head)))
    except (OSError, WireError):
        os._exit(0)
    if len(fields) < 2 or not fields[0].isdigit():
        os._exit(1)
    conn = socket.socket(fileno=fds[0])
    run_forked(conn, fields[1:], fds[1:], int(fields[0]), verdict=sock)  # never returns
