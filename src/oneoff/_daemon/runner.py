"""Inside a fork of the daemon: take over the caller's process state, then run the CLI.

What is taken from the caller: standard streams (the descriptors themselves, and the text
encodings Python chose for them), working directory (as a descriptor, so the same
directory even if its path changed), umask, environment, ``sys.argv``. What must already be
equal (checked by the daemon before forking): everything in ``peer.process_traits``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import threading

from oneoff._daemon.client import ARGC_AT, FORWARDED_SIGNALS, STREAMS_AT
from oneoff._daemon.wire import WireError, recv_frame, send_frame

__all__ = ["become_caller", "run_for_caller"]


def _text_stream(fd: int, encoding: bytes, errors: bytes, *, write: bool) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    buffered: io.BufferedWriter | io.BufferedReader
    buffered = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
    return io.TextIOWrapper(
        buffered,
        encoding=encoding.decode(),
        errors=errors.decode(),
        line_buffering=write and (fd == 2 or os.isatty(fd)),  # as Python's own start-up does
    )


def become_caller(fields: list[bytes], fds: list[int], umask: int) -> list[str]:
    """Adopt the caller's streams, directory, umask and environment; return its argv."""
    os.setpgid(0, 0)  # out of the daemon's process group: its signals are not ours
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGCHLD):  # fmt: skip
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target, inheritable=True)
    os.fchdir(fds[3])
    for fd in fds:
        os.close(fd)
    os.umask(umask)

    streams = fields[STREAMS_AT : STREAMS_AT + 6]
    sys.stdin = _text_stream(0, streams[0], streams[1], write=False)
    sys.stdout = _text_stream(1, streams[2], streams[3], write=True)
    sys.stderr = _text_stream(2, streams[4], streams[5], write=True)

    argc = int(fields[ARGC_AT])
    first = ARGC_AT + 1
    argv = [os.fsdecode(arg) for arg in fields[first : first + argc]]
    if len(argv) != argc:
        raise WireError("malformed request: argv is cut short")
    sys.argv = [os.fsdecode(fields[ARGC_AT - 1]), *argv]
    os.environ.clear()
    for item in fields[first + argc :]:
        key, sep, value = item.partition(b"=")
        if sep and key and b"\0" not in item:
            os.environb[key] = value
    return argv


def _listen_to_caller(conn: socket.socket) -> None:
    """Forward the caller's signals to this process; its disappearance is a SIGTERM."""
    me = os.getpid()
    while True:
        try:
            fields = recv_frame(conn)
        except (OSError, WireError):
            os.kill(me, signal.SIGTERM)  # the caller is gone: stop as a runner told to stop
            return
        if fields[:1] == [b"sig"] and len(fields) == 2 and fields[1].isdigit():
            signum = int(fields[1])
            if signum in FORWARDED_SIGNALS:
                os.kill(me, signum)


def run_for_caller(conn: socket.socket, argv: list[str]) -> int:
    """Run the CLI for the caller and send it the exit code; the fork's own exit status."""
    conn.settimeout(None)
    send_frame(conn, [b"accepted"])
    threading.Thread(target=_listen_to_caller, args=(conn,), daemon=True).start()
    from oneoff.cli import main

    code = 1
    try:
        code = main(argv)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()  # what an in-process crash would print
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError):
            send_frame(conn, [b"exit", str(code).encode()])
    return code
