"""The daemon: preload oneoff, listen on a private socket, fork one runner per request.

The daemon itself stays stateless: it imports modules and never opens an app, a store or a
key, so every fork starts from the same clean state an in-process run starts from. It is
single-threaded (forking a threaded process is unsafe) and reads requests without blocking:
a client that stalls mid-request holds only its own connection, for at most
``REQUEST_SECONDS``. It exits after ``idle`` seconds without runs, on ``oneoff daemon
stop``, on SIGTERM, or as soon as the code on disk no longer matches what it loaded.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

from oneoff._daemon.guard import Guard
from oneoff._daemon.paths import socket_path, trusted_dir
from oneoff._daemon.peer import process_traits, umask_of
from oneoff._daemon.preload import code_paths, preload
from oneoff._daemon.request import FDS, STALE, Baseline, quick_refusal, refusal
from oneoff._daemon.spare import Spare, close_inherited_fds, fork_runner
from oneoff._daemon.wire import MAX_FRAME, WireError, decode, frame_size, recv_frame, send_frame

__all__ = ["REQUEST_SECONDS", "DaemonInfo", "daemon_status", "serve", "stop_daemon"]

REQUEST_SECONDS = 2.0  # to send a whole request once connected
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass
class DaemonInfo:
    pid: int
    socket: str
    started: float
    served: int
    idle: float


@dataclass
class _Pending:
    """A connection whose request is still arriving."""

    pid: int
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


@dataclass
class _State:
    base: Baseline
    idle: float
    guard: Guard
    sel: selectors.BaseSelector
    started: float = field(default_factory=time.time)
    served: int = 0
    last: float = field(default_factory=time.monotonic)
    stop: bool = False
    terms: int = 0  # SIGTERM/SIGINT/SIGHUP received: one stops, a second abandons the guard
    spare: Spare | None = None

    def sweep(self) -> None:
        """Reap what ended; stop watching runners that did (see guard.py)."""
        running = len(self.guard.runners)
        for pidfd in self.guard.sweep(self.spare.pid if self.spare else None):
            self.sel.unregister(pidfd)
            os.close(pidfd)
        if len(self.guard.runners) < running:
            self.last = time.monotonic()  # idle time counts from the end of the last run

    def watch(self, pid: int) -> None:
        pidfd = self.guard.watch(pid)
        if pidfd >= 0:
            self.sel.register(pidfd, selectors.EVENT_READ)


def _peer(conn: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _CRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    )
    return pid, uid


def _control(kind: bytes, directory: str | None) -> list[bytes] | None:
    path = socket_path(directory)
    try:
        trusted_dir(os.path.dirname(path))
    except Exception:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REQUEST_SECONDS * 2)
    try:
        sock.connect(path)
        if _peer(sock)[1] != os.getuid():
            return None
        send_frame(sock, [kind])
        return recv_frame(sock)
    except (OSError, WireError):
        return None
    finally:
        sock.close()


def daemon_status(directory: str | None = None) -> DaemonInfo | None:
    reply = _control(b"status", directory)
    if not reply or reply[0] != b"status" or len(reply) != 5:
        return None
    return DaemonInfo(
        pid=int(reply[1]), socket=socket_path(directory), started=float(reply[2]),
        served=int(reply[3]), idle=float(reply[4]),
    )  # fmt: skip


def stop_daemon(directory: str | None = None) -> bool:
    reply = _control(b"stop", directory)
    return reply is not None and reply[:1] == [b"stopping"]


def serve(
    directory: str | None, idle: float, *, foreground: bool, ready: int = -1, lock: int = -1
) -> int:
    """Run the daemon until it is stopped. ``ready`` (a pipe) hears our pid once we listen;
    ``lock`` (held by the starter) is released then, not before."""
    close_inherited_fds({ready, lock})
    path = socket_path(directory)
    preload()
    sel = selectors.DefaultSelector()
    state = _State(base=Baseline(code_paths(), process_traits()), idle=idle, guard=Guard(), sel=sel)
    listener, inode = _listen(path)
    for fd in (ready, lock):
        if fd >= 0:
            if fd == ready:
                os.write(ready, f"{os.getpid()}\n".encode())
            os.close(fd)
    if not foreground:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    def on_term(signum: int, frame: object) -> None:
        # Never raise from here: a signal between fork() and watch() must not lose a runner.
        state.stop = True
        state.terms += 1

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_term)
    pending: dict[socket.socket, _Pending] = {}
    sel.register(listener, selectors.EVENT_READ)
    try:
        try:
            _serve_requests(listener, pending, state)
        finally:
            if state.spare is not None:
                state.spare.close()
                state.guard.retire(state.spare.pid)
                state.spare = None
            for conn in list(pending):
                _drop(sel, pending, conn)
            sel.unregister(listener)
            listener.close()
            _unlink_if_ours(path, inode)
    finally:
        # Whatever ended the loop (stop, idle, a signal, an error), new commands now run
        # in-process or reach a new daemon; keep guarding runs in progress until they end.
        _guard_until_done(state)
        sel.close()
    return 0


def _guard_until_done(state: _State) -> None:
    while state.terms < 2:
        state.sweep()
        if not state.guard.busy():
            return
        # Orphans or retiring forks end within milliseconds; runners are woken by pidfds.
        quick = state.guard.killed or state.guard.retiring
        state.sel.select(0.05 if quick else 1.0)


def _serve_requests(
    listener: socket.socket, pending: dict[socket.socket, _Pending], state: _State
) -> None:
    sel = state.sel
    while not state.stop:
        state.sweep()
        if state.spare is None:
            with contextlib.suppress(OSError):  # no spare: requests fork on arrival
                state.spare = Spare()
        now = time.monotonic()
        if now - state.last > state.idle and not pending and not state.guard.runners:
            return
        for conn in [c for c, p in pending.items() if p.deadline <= now]:
            _drop(sel, pending, conn)  # too slow: it holds nothing but itself
        timeout = min([1.0, *(p.deadline - now for p in pending.values())])
        for key, _ in sel.select(max(timeout, 0.0)):
            if key.fileobj is listener:
                _accept(listener, sel, pending)
            elif isinstance(key.fileobj, socket.socket):
                _read(key.fileobj, sel, pending, state)
            # else: a runner's pidfd; the next sweep reaps it and kills what it left


def _start_runner(
    conn: socket.socket,
    fields: list[bytes],
    request: _Pending,
    umask: int | None,
    spare: Spare | None,
    state: _State,
) -> int | None:
    """The runner serving this request, or None when it was refused (and told so)."""
    if (
        spare is not None
        and umask is not None
        and quick_refusal(fields, request.fds, state.base) is None
        and spare.hand_over(conn, fields, request.fds, umask)
    ):
        # The spare takes the caller's state while the checks run here; it answers the
        # client itself, and runs nothing unless told "go".
        reason = refusal(fields, request.fds, request.pid, state.base)
        state.stop = reason == STALE
        return spare.pid if spare.verdict(reason) and reason is None else None
    reason = refusal(fields, request.fds, request.pid, state.base)
    if reason is not None or umask is None:
        send_frame(conn, [b"refused", (reason or "the caller's umask").encode()])
        state.stop = reason == STALE
        return None
    return fork_runner(conn, fields, request.fds, umask)


def _listen(path: str) -> tuple[socket.socket, int]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{path}.{os.getpid()}"
    old_umask = os.umask(0o177)
    try:
        listener.bind(staging)
    finally:
        os.umask(old_umask)
    inode = os.lstat(staging).st_ino
    os.rename(staging, path)  # atomically replaces a socket left by a daemon that died
    listener.listen(64)
    listener.setblocking(False)
    return listener, inode


def _unlink_if_ours(path: str, inode: int) -> None:
    # A newer daemon may have taken the name over since; only remove our own socket file.
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def _accept(
    listener: socket.socket, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending]
) -> None:
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return
    except OSError:  # EMFILE, ENFILE, ENOMEM: wait a little, keep serving and guarding
        time.sleep(0.05)
        return
    try:
        pid, uid = _peer(conn)
    except OSError:
        conn.close()
        return
    if uid != os.getuid():
        conn.close()
        return
    conn.setblocking(False)
    pending[conn] = _Pending(pid=pid, deadline=time.monotonic() + REQUEST_SECONDS)
    sel.register(conn, selectors.EVENT_READ)


def _drop(
    sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending], conn: socket.socket
) -> None:
    sel.unregister(conn)
    pending.pop(conn).close_fds()
    conn.close()


def _read(
    conn: socket.socket,
    sel: selectors.BaseSelector,
    pending: dict[socket.socket, _Pending],
    state: _State,
) -> None:
    """Take what arrived; once a whole request is in, answer it."""
    request = pending[conn]
    try:
        data, ancdata, flags, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(FDS * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                request.fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if flags & socket.MSG_CTRUNC or len(request.fds) > FDS or not data:
            raise WireError("closed, or too many descriptors")
        request.data += data
        if len(request.data) < 4:
            return
        size = frame_size(bytes(request.data[:4]))
        if len(request.data) < 4 + size:
            return
        if len(request.data) > 4 + size or size > MAX_FRAME:
            raise WireError("bytes after the frame")
        fields = decode(bytes(request.data[4:]))
    except BlockingIOError:
        return
    except (OSError, WireError):
        _drop(sel, pending, conn)
        return
    sel.unregister(conn)
    del pending[conn]
    try:
        conn.setblocking(True)
        conn.settimeout(REQUEST_SECONDS)
        _answer(conn, fields, request, state)
    except (OSError, WireError):
        pass
    finally:
        request.close_fds()
        conn.close()


def _answer(conn: socket.socket, fields: list[bytes], request: _Pending, state: _State) -> None:
    kind = fields[0] if fields else b""
    if kind == b"status":
        send_frame(conn, [
            b"status", str(os.getpid()).encode(), repr(state.started).encode(),
            str(state.served).encode(), repr(state.idle).encode(),
        ])  # fmt: skip
        return
    if kind == b"stop":
        send_frame(conn, [b"stopping"])
        state.stop = True
        return
    if kind != b"run":
        send_frame(conn, [b"refused", b"unknown request"])
        return
    state.last = time.monotonic()  # only runs keep the daemon alive, not status polls
    umask = umask_of(request.pid)
    spare, state.spare = state.spare, None
    child = None
    try:
        child = _start_runner(conn, fields, request, umask, spare, state)
    finally:
        if spare is not None:
            spare.close()
            if spare.pid != child:
                state.guard.retire(spare.pid)  # it refused, or never got the request
    if child is None:
        return
    state.watch(child)
    state.served += 1
