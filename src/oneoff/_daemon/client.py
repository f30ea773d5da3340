"""The CLI's side of the daemon: hand this invocation to a preloaded runner, or say no.

``via_daemon(argv)`` returns the exit code when a daemon ran the command, and ``None`` when
the caller must run it in-process: no daemon, the daemon refused (stale code, a process
that differs from it) or did not answer in time, or the invocation is one that stays
in-process by rule:

- standard input is a terminal: prompts (confirmations, secret params) and interactive
  consoles need the caller's controlling terminal, which a forked runner cannot have;
- ``exec`` replaces the calling process; ``daemon`` manages the daemon itself;
- ``ONEOFF_DAEMON=off``; anything but Linux.

Exactly once: the runner announces itself ("accepted") and runs nothing until the client
answers "go". A client that gave up before (timeout, error) has closed the connection, so
the runner exits without running, and the client runs the command in-process instead.
After "go" the command is the daemon's: a failure is reported, never retried. Signals the
client receives and does not ignore (SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM) are
forwarded to the runner; if the client dies, the runner stops as if sent SIGTERM.

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
    import signal as _signal
else:
    import _signal  # the C module: `signal` would import enum

__all__ = [
    "ARGC_AT", "EXECUTABLE_AT", "FORWARDED_SIGNALS", "IN_PROCESS_COMMANDS", "PERSONALITY_AT",
    "SIGBLK_AT", "SIGIGN_AT", "STREAMS_AT", "STREAM_FIELDS", "caller_state", "identity_fields",
    "via_daemon",
]  # fmt: skip

# A run request's fields: b"run", version, interpreter identity, package, filesystem
# encoding, sys.flags, sys.path, warning and -X options; then the caller's personality,
# ignored and blocked signal masks (hex, from /proc/self) and sys.executable (the name it
# was started by: it ends up on the task's PATH); then (encoding, errors, buffering) of
# stdin, stdout and stderr; then argv[0], the argument count, the arguments, and the
# environment as KEY=VALUE to the end.
PERSONALITY_AT, SIGIGN_AT, SIGBLK_AT, EXECUTABLE_AT = 8, 9, 10, 11
STREAMS_AT = 12
STREAM_FIELDS = 3
ARGC_AT = STREAMS_AT + 3 * STREAM_FIELDS + 1

IN_PROCESS_COMMANDS = frozenset({"exec", "daemon"})
FORWARDED_SIGNALS = (
    _signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2,
    _signal.SIGTERM,
)  # fmt: skip
ANSWER_SECONDS = 5.0  # for the daemon to accept; the run itself may take any time
_OFF = frozenset({"off", "0", "no", "false"})


def via_daemon(argv: list[str]) -> int | None:
    mode = os.environ.get("ONEOFF_DAEMON", "").lower()
    if mode in _OFF or not sys.platform.startswith("linux"):
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
        return _exchange(sock, argv, debug=mode == "debug")
    finally:
        sock.close()


def _warn(message: str) -> None:
    from oneoff._log import log  # rare: text or JSON, as every other oneoff message

    log("daemon.fallback", message, level="warning")


def _connect(path: str) -> _socket.socket | None:
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.settimeout(ANSWER_SECONDS)  # a stopped or swamped daemon must not hang us
    try:
        sock.connect(path)
        cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    except OSError:
        sock.close()
        return None  # a socket left behind by a daemon that is gone, or no answer
    uid = int.from_bytes(cred[4:8], sys.byteorder)
    if uid != os.getuid():
        _warn(f"ignoring the daemon socket {path}: it is served by uid {uid}")
        sock.close()
        return None
    return sock


def caller_state() -> list[bytes]:
    """What the daemon cannot read about us reliably: personality, signal masks."""
    try:
        with open("/proc/self/personality", "rb") as fh:
            personality = fh.read().strip()
        with open("/proc/self/status", "rb") as fh:
            status = dict(line.partition(b":")[::2] for line in fh.read().splitlines())
        return [personality, status[b"SigIgn"].strip(), status[b"SigBlk"].strip()]
    except (OSError, KeyError):
        return [b"?", b"?", b"?"]  # refused by the daemon: it never guesses


def identity_fields() -> list[bytes]:
    """Fields 1-7 of a run request: what must be the same in the caller and the daemon
    (oneoff version, interpreter, installation, filesystem encoding, flags, import path,
    warning and -X options). Both sides build them here."""
    from oneoff._version import __version__

    executable, package = install_identity()
    return [
        __version__.encode(),
        os.fsencode(executable),
        os.fsencode(package),
        sys.getfilesystemencoding().encode(),
        repr(tuple(sys.flags)).encode(),
        os.fsencode("\0".join(sys.path)),
        repr((sys.warnoptions, sorted(sys._xoptions.items()))).encode(),
    ]


def _request(argv: list[str]) -> list[bytes]:
    streams: list[bytes] = []
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        streams.append((getattr(stream, "encoding", None) or "utf-8").encode())
        streams.append((getattr(stream, "errors", None) or "strict").encode())
        line = b"L" if getattr(stream, "line_buffering", False) else b""
        streams.append(line + (b"W" if getattr(stream, "write_through", False) else b""))
    fields = [
        b"run",
        *identity_fields(),
        *caller_state(),
        os.fsencode(sys.executable),
        *streams,
        os.fsencode(sys.argv[0] if sys.argv else "oneoff"),
        str(len(argv)).encode(),
        *(os.fsencode(arg) for arg in argv),
    ]
    fields.extend(key + b"=" + value for key, value in os.environb.items())
    return fields


def _exchange(sock: _socket.socket, argv: list[str], *, debug: bool) -> int | None:
    import _socket

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
        if reply[:1] == [b"accepted"]:
            send_frame(sock, [b"go"])  # from here on the command is the daemon's
    except (OSError, WireError):
        return None  # no "go" was sent: nothing ran, nothing will
    finally:
        os.close(cwd)
    if reply[:1] != [b"accepted"]:
        if debug and reply[:1] == [b"refused"] and len(reply) == 2:
            _warn(f"the daemon refused: {reply[1].decode(errors='replace')}; running in-process")
        return None
    sock.settimeout(None)
    return _await_exit(sock)


def _await_exit(sock: _socket.socket) -> int:
    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        try:  # noqa: SIM105 - contextlib costs an import on every invocation
            send_frame(sock, [b"sig", str(signum).encode()])
        except OSError:
            pass

    previous = {}
    for signum in FORWARDED_SIGNALS:
        if _signal.getsignal(signum) != _signal.SIG_IGN:  # ignored stays ignored (nohup)
            previous[signum] = _signal.signal(signum, forward)
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
            if fields[:1] == [b"exit"] and len(fields) == 2 and fields[1].isdigit():
                return int(fields[1])
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)
