"""The daemon: preload oneoff, listen on a private socket, fork one runner per request.

The daemon itself stays stateless: it imports modules and never opens an app, a store or a
key, so every fork starts from the same clean state an in-process run starts from. It is
single-threaded (forking a threaded process is unsafe), reads one request at a time with a
short timeout, and exits after ``idle`` seconds without requests, on ``oneoff daemon
stop``, on SIGTERM, or as soon as oneoff's code on disk no longer matches what it loaded.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from oneoff._daemon.client import ARGC_AT
from oneoff._daemon.paths import install_identity, socket_path, trusted_dir
from oneoff._daemon.peer import differences, process_traits, umask_of
from oneoff._daemon.wire import WireError, decode, frame_size, recv_frame, send_frame
from oneoff._version import __version__

__all__ = ["DaemonInfo", "daemon_status", "preload", "serve", "stop_daemon"]

_REQUEST_TIMEOUT = 5.0
_FDS = 4  # stdin, stdout, stderr, working directory
# Imported inside functions on the run path; the daemon imports them once for every fork.
_LAZY_IMPORTS = (
    "argparse", "ctypes", "datetime", "encodings.utf_16_be", "getpass", "hashlib", "hmac",
    "json", "pty", "secrets", "selectors", "shutil", "sqlite3", "subprocess", "termios",
    "threading", "tomllib", "uuid", "zlib", "ahocorasick_rs",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.hazmat.primitives.serialization",
)  # fmt: skip
_SKIP = ("oneoff.__main__", "oneoff.testing")


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the accept loop."""


@dataclass
class DaemonInfo:
    pid: int
    socket: str
    started: float
    served: int
    idle: float


@dataclass
class _State:
    path: str
    idle: float
    code: list[str]
    fingerprint: list[tuple[int, int, int]]
    traits: dict[str, str]
    started: float = field(default_factory=time.time)
    served: int = 0
    last: float = field(default_factory=time.monotonic)
    children: set[int] = field(default_factory=set)


def preload() -> None:
    """Import every oneoff module (and what the run path imports lazily), once; build the
    command-line parser; then freeze what exists so forks' garbage collections leave the
    shared pages alone."""
    import gc
    import pkgutil

    import oneoff
    from oneoff.cli._parser import prebuild_parser

    for name in _LAZY_IMPORTS:
        importlib.import_module(name)
    for info in pkgutil.walk_packages(oneoff.__path__, "oneoff."):
        if not info.name.startswith(_SKIP):
            importlib.import_module(info.name)
    prebuild_parser()
    _warm_libraries()
    gc.collect()
    gc.freeze()


def _warm_libraries() -> None:
    """First-use costs paid once here instead of in every fork: OpenSSL and SQLite set-up,
    argparse's and the default secret patterns' regexes. Only constants and throw-away
    values are touched: the daemon never holds an app's data, config or keys."""
    import hashlib
    import sqlite3

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from oneoff._environ import secret_key_matcher
    from oneoff._manifest import DEFAULT_SECRET_PATTERNS
    from oneoff.cli._parser import build_parser

    throwaway = Ed25519PrivateKey.generate()
    throwaway.public_key().verify(throwaway.sign(b"warm-up"), b"warm-up")
    hashlib.sha256(b"warm-up").hexdigest()
    sqlite3.connect(":memory:").close()
    secret_key_matcher(DEFAULT_SECRET_PATTERNS)("WARM_UP")
    build_parser().parse_known_args(["run", "task", "--env", "e", "--param", "a=b"])


def code_paths() -> list[str]:
    """Where oneoff's loaded code lives: its files, their directories, the import path."""
    paths = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and (name == "oneoff" or name.startswith("oneoff.")):
            paths.add(file)
            paths.add(os.path.dirname(file))
    return sorted(paths)


def code_fingerprint(paths: list[str]) -> list[tuple[int, int, int]]:
    """Their stat data: an edit, a new module or a reinstall changes it."""
    prints = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            prints.append((-1, -1, -1))
            continue
        prints.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return prints


def _control(kind: bytes, directory: str | None) -> list[bytes] | None:
    path = socket_path(directory)
    try:
        trusted_dir(os.path.dirname(path))
    except Exception:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_REQUEST_TIMEOUT)
    try:
        sock.connect(path)
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        ))  # fmt: skip
        if uid != os.getuid():
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


def serve(directory: str | None, idle: float, *, foreground: bool, ready: int = -1) -> int:
    """Run the daemon until it is stopped; ``ready`` (a pipe) hears once it listens."""
    path = socket_path(directory)
    preload()
    code = code_paths()
    state = _State(
        path=path, idle=idle, code=code, fingerprint=code_fingerprint(code),
        traits=process_traits(),
    )  # fmt: skip
    listener, inode = _listen(path)
    if ready >= 0:
        os.write(ready, f"{os.getpid()}\n".encode())
        os.close(ready)
    if not foreground:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    def on_term(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    listener.settimeout(1.0)
    try:
        while True:
            _reap(state)
            if time.monotonic() - state.last > state.idle:
                break
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                if not _handle(conn, listener, state):
                    break
            finally:
                conn.close()
    except _Stop:
        pass
    finally:
        listener.close()
        _unlink_if_ours(path, inode)
    return 0


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
    return listener, inode


def _unlink_if_ours(path: str, inode: int) -> None:
    # A newer daemon may have taken the name over since; only remove our own socket file.
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def _reap(state: _State) -> None:
    for pid in list(state.children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            state.children.discard(pid)


def _receive(conn: socket.socket) -> tuple[list[bytes], list[int]]:
    """One request and the descriptors that came with it (closed again on any error)."""
    fds: list[int] = []
    try:
        data, ancdata, flags, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(_FDS * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if flags & socket.MSG_CTRUNC:
            raise WireError("too many descriptors")
        while len(data) < 4:
            more = conn.recv(4 - len(data))
            if not more:
                raise WireError("the peer closed the connection")
            data += more
        size = frame_size(data[:4])
        body = bytearray(data[4:])
        while len(body) < size:
            more = conn.recv(min(size - len(body), 1 << 20))
            if not more:
                raise WireError("the peer closed the connection")
            body += more
        if len(body) != size:
            raise WireError("malformed message: bytes after the frame")
        return decode(bytes(body)), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _handle(conn: socket.socket, listener: socket.socket, state: _State) -> bool:
    """Serve one connection; False when the daemon should exit."""
    conn.settimeout(_REQUEST_TIMEOUT)  # a caller that connects and says nothing can't stall us
    try:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        ))  # fmt: skip
        if uid != os.getuid():
            return True
        fields, fds = _receive(conn)
    except (OSError, WireError):
        return True
    try:
        kind = fields[0] if fields else b""
        if kind == b"status":
            send_frame(conn, [
                b"status", str(os.getpid()).encode(), repr(state.started).encode(),
                str(state.served).encode(), repr(state.idle).encode(),
            ])  # fmt: skip
            return True
        if kind == b"stop":
            send_frame(conn, [b"stopping"])
            return False
        if kind != b"run":
            send_frame(conn, [b"refused", b"unknown request"])
            return True
        state.last = time.monotonic()  # only runs keep the daemon alive, not status polls
        reason = _refusal(fields, fds, pid, state)
        if reason is not None:
            send_frame(conn, [b"refused", reason.encode()])
            return not reason.startswith("oneoff's code")
        umask = umask_of(pid)
        assert umask is not None  # _refusal checked it
        child = os.fork()
        if child == 0:
            _run_forked(conn, listener, fields, fds, umask)  # never returns
        state.children.add(child)
        state.served += 1
        return True
    except (OSError, WireError):
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _refusal(fields: list[bytes], fds: list[int], pid: int, state: _State) -> str | None:
    executable, package = install_identity()
    expected = {
        1: __version__.encode(),
        2: os.fsencode(executable),
        3: os.fsencode(package),
        4: sys.getfilesystemencoding().encode(),
        5: repr(tuple(sys.flags)).encode(),
        6: os.fsencode("\0".join(sys.path)),
    }
    if len(fields) <= ARGC_AT or len(fds) != _FDS or not fields[ARGC_AT].isdigit():
        return "malformed request"
    for index, value in expected.items():
        if fields[index] != value:
            return "a different interpreter, oneoff version, installation or import path"
    if code_fingerprint(state.code) != state.fingerprint:
        return "oneoff's code changed on disk since the daemon started"
    if umask_of(pid) is None:
        return "the caller's umask cannot be read"
    differ = differences(state.traits, pid)
    if differ:
        return "the caller differs from the daemon in: " + ", ".join(differ)
    return None


def _run_forked(
    conn: socket.socket,
    listener: socket.socket,
    fields: list[bytes],
    fds: list[int],
    umask: int,
) -> None:
    """In the fork: become the caller's runner, run ``main(argv)``, report, exit."""
    from oneoff._daemon.runner import become_caller, run_for_caller

    code = 1
    try:
        listener.close()
        argv = become_caller(fields, fds, umask)
        fds.clear()
        code = run_for_caller(conn, argv)
    finally:
        os._exit(code)
