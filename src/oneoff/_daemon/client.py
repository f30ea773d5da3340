"""The CLI's side of the daemon: hand this invocation to a preloaded runner, or say no.

``via_daemon(argv)`` returns the exit code when a daemon ran the command, and ``None`` when
the caller must run it in-process: no daemon, the daemon refused (stale code, a process
that differs from it), or the invocation is one that stays in-process by rule:

- standard input is a terminal: prompts (confirmations, secret params) and interactive
  consoles need the caller's controlling terminal, which a forked runner cannot have;
- ``exec`` replaces the calling process; ``daemon`` manages the daemon itself;
- ``ONEOFF_DAEMON=off``.

Once the daemon has accepted, the command runs there exactly once: a failure after that is
reported, never retried in-process. Signals the client receives (SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1, SIGUSR2) are forwarded to the runner; if the client dies, the runner
stops the task as if it had received SIGTERM.

Imported on every CLI invocation: built-ins only (``_socket``, ``_signal``), no typing.
"""

from __future__ import annotations

import os
import sys

from oneoff._daemon.paths import DaemonPathError, install_identity, socket_path, trusted_dir
from oneoff._daemon.wire import WireError, encode, recv_frame, send_frame

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on this path
if TYPE_CHECKING:
    import _socket

__all__ = ["ARGC_AT", "FORWARDED_SIGNALS", "IN_PROCESS_COMMANDS", "STREAMS_AT", "via_daemon"]

# A run request's fields: b"run", version, executable, package, filesystem encoding,
# sys.flags, sys.path, then (encoding, errors) of stdin, stdout, stderr, then argv[0], the
# argument count, the arguments, and the environment as KEY=VALUE to the end.
STREAMS_AT = 7
ARGC_AT = 14

IN_PROCESS_COMMANDS = frozenset({"exec", "daemon"})
FORWARDED_SIGNALS = (1, 2, 3, 10, 12, 15)  # SIGHUP SIGINT SIGQUIT SIGUSR1 SIGUSR2 SIGTERM
_OFF = frozenset({"off", "0", "no", "false"})


def via_daemon(argv: list[str]) -> int | None:
    if os.environ.get("ONEOFF_DAEMON", "").lower() in _OFF:
        return None
    from oneoff.cli._words import wanted_command

    command = wanted_command(argv)
    if command is None or command in IN_PROCESS_COMMANDS:
        return None
    path = socket_path()
    try:
        os.lstat(path)
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return None  # no daemon (the common case), or a standard stream is closed
    if os.isatty(0):
        return None
    try:
        trusted_dir(os.path.dirname(path))
    except DaemonPathError as exc:
        _warn(f"ignoring the daemon socket: {exc}")
        return None
    sock = _connect(path)
    if sock is None:
        return None
    try:
        return _exchange(sock, argv)
    finally:
        sock.close()


def _warn(message: str) -> None:
    sys.stderr.write(f"oneoff: warning: {message}\n")


def _connect(path: str) -> _socket.socket | None:
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    except OSError:
        sock.close()
        return None  # a socket left behind by a daemon that is gone
    uid = int.from_bytes(cred[4:8], sys.byteorder)
    if uid != os.getuid():
        _warn(f"ignoring the daemon socket {path}: it is served by uid {uid}")
        sock.close()
        return None
    return sock


def _request(argv: list[str]) -> list[bytes]:
    from oneoff._version import __version__

    executable, package = install_identity()
    streams: list[bytes] = []
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        streams.append((getattr(stream, "encoding", None) or "utf-8").encode())
        streams.append((getattr(stream, "errors", None) or "strict").encode())
    fields = [
        b"run",
        __version__.encode(),
        os.fsencode(executable),
        os.fsencode(package),
        sys.getfilesystemencoding().encode(),
        repr(tuple(sys.flags)).encode(),
        os.fsencode("\0".join(sys.path)),
        *streams,
        os.fsencode(sys.argv[0] if sys.argv else "oneoff"),
        str(len(argv)).encode(),
        *(os.fsencode(arg) for arg in argv),
    ]
    fields.extend(key + b"=" + value for key, value in os.environb.items())
    return fields


def _exchange(sock: _socket.socket, argv: list[str]) -> int | None:
    import _socket

    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal  # the C module: `signal` would import enum

    try:
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        frame = encode(_request(argv))
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, cwd))
        sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(frame):
            sock.sendall(frame[sent:])
        reply = recv_frame(sock)
    except (OSError, WireError):
        return None  # the daemon went away before accepting: nothing ran
    finally:
        os.close(cwd)
    if reply[:1] == [b"refused"]:
        if os.environ.get("ONEOFF_DAEMON", "").lower() == "debug":
            _warn(f"the daemon refused: {reply[1].decode(errors='replace')}; running in-process")
        return None
    if reply[:1] != [b"accepted"]:
        return None

    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        try:  # noqa: SIM105 - contextlib costs an import on every invocation
            send_frame(sock, [b"sig", str(signum).encode()])
        except OSError:
            pass

    previous = {signum: _signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                fields = recv_frame(sock)
            except (OSError, WireError):
                if forwarded:  # the runner died of a signal we passed on: die "of" it too
                    return 128 + forwarded[-1]
                sys.stderr.write(
                    "oneoff: error: the daemon's runner ended without an exit code "
                    "(see `oneoff runs`)\n"
                )
                return 1
            if fields[:1] == [b"exit"] and len(fields) == 2:
                return int(fields[1])
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)
