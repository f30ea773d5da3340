"""Inside a fork of the daemon: take over the caller's process state, then run the CLI.

What is taken from the caller: standard streams (the descriptors themselves, and the text
encodings and buffering Python chose for them), working directory (as a descriptor, so the
same directory even if its path changed), umask, signal dispositions and mask, environment,
``sys.argv``. What must already be equal (checked by the daemon before forking): see
``peer`` and ``request``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import threading
import time

from oneoff._daemon.client import (
    ARGC_AT,
    EXECUTABLE_AT,
    FORWARDED_SIGNALS,
    SIGBLK_AT,
    SIGIGN_AT,
    STREAM_FIELDS,
    STREAMS_AT,
)
from oneoff._daemon.wire import WireError, recv_frame, send_frame

__all__ = ["adopt_signals", "become_caller", "run_for_caller"]

GO_SECONDS = 10.0  # how long the fork waits for the client's "go" before giving up


def _text_stream(fd: int, encoding: bytes, errors: bytes, mode: bytes) -> io.TextIOWrapper:
    write = fd != 0
    raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    buffered: io.BufferedWriter | io.BufferedReader
    buffered = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
    return io.TextIOWrapper(
        buffered,
        encoding=encoding.decode(),
        errors=errors.decode(),
        newline="\n",  # as Python's own standard streams on POSIX: a CR stays a CR
        line_buffering=b"L" in mode,
        write_through=b"W" in mode,
    )


def _mask(hex_mask: bytes) -> set[int]:
    bits = int(hex_mask, 16)
    return {s for s in signal.valid_signals() if bits >> (int(s) - 1) & 1}


def adopt_signals(ignored: bytes, blocked: bytes) -> None:
    """The caller's dispositions as an in-process run would have them: what it ignored
    stays ignored (nohup, background jobs), SIGINT raises KeyboardInterrupt as Python sets
    it up, everything else is default; then the caller's signal mask."""
    ignore = _mask(ignored)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if signum in ignore:
            handler: signal.Handlers | object = signal.SIG_IGN
        elif signum == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        if signal.getsignal(signum) is handler:
            continue  # most already are (a sigaction per signal costs ~5 us)
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(signum, handler)  # type: ignore[arg-type]
    signal.pthread_sigmask(signal.SIG_SETMASK, _mask(blocked))


def become_caller(fields: list[bytes], fds: list[int], umask: int) -> list[str]:
    """Adopt the caller's streams, directory, umask, signals and environment; return its
    argv. The daemon blocked SIGTERM and SIGINT around the fork; this unblocks them."""
    os.setpgid(0, 0)  # out of the daemon's process group: its signals are not ours
    from oneoff import _proctree

    _proctree.PARENT_GUARDS_TASKS = True  # the daemon outlives us and kills our orphans
    # And should the daemon die (SIGKILL), the run is stopped as if told SIGTERM.
    daemon = os.getppid()
    _proctree.Libc().prctl(_proctree.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != daemon:
        raise WireError("the daemon is gone")
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target, inheritable=True)
    os.fchdir(fds[3])
    for fd in fds:
        os.close(fd)
    os.umask(umask)

    streams = fields[STREAMS_AT : STREAMS_AT + 3 * STREAM_FIELDS]
    sys.stdin, sys.stdout, sys.stderr = (
        _text_stream(fd, *streams[fd * STREAM_FIELDS : (fd + 1) * STREAM_FIELDS])
        for fd in (0, 1, 2)
    )
    argc = int(fields[ARGC_AT])
    first = ARGC_AT + 1
    argv = [os.fsdecode(arg) for arg in fields[first : first + argc]]
    if len(argv) != argc:
        raise WireError("malformed request: argv is cut short")
    sys.argv = [os.fsdecode(fields[ARGC_AT - 1]), *argv]
    # The same interpreter (checked), by the name the caller used: it is on a task's PATH.
    sys.executable = os.fsdecode(fields[EXECUTABLE_AT])
    os.environ.clear()
    for item in fields[first + argc :]:
        key, sep, value = item.partition(b"=")
        if sep and key and b"\0" not in item:
            os.environb[key] = value
    time.tzset()  # the caller's TZ, as the time module would have read it at start-up
    adopt_signals(fields[SIGIGN_AT], fields[SIGBLK_AT])
    return argv


_replied = threading.Event()  # the exit code is out: the caller may hang up now


def _listen_to_caller(conn: socket.socket) -> None:
    """Forward the caller's signals to this process; its disappearance before the reply
    is a SIGTERM (after it, the held book-keeping must be allowed to finish)."""
    from oneoff._release.lstats import fork_safe_thread

    me = os.getpid()
    with fork_safe_thread():  # blocked in recv, or signalling: a warm verify may still fork
        while True:
            try:
                fields = recv_frame(conn)
            except (OSError, WireError):
                if not _replied.is_set():
                    os.kill(me, signal.SIGTERM)  # the caller is gone: stop as if told to
                return
            if fields[:1] == [b"sig"] and len(fields) == 2 and fields[1].isdigit():
                signum = int(fields[1])
                if signum in FORWARDED_SIGNALS:
                    os.kill(me, signum)


def run_for_caller(conn: socket.socket, argv: list[str]) -> int:
    """Announce, wait for "go", run the CLI, send the exit code; the fork's exit status.

    Without "go" (the client timed out, died or fell back to running in-process) nothing
    runs: a command is never run twice.
    """
    conn.settimeout(GO_SECONDS)
    send_frame(conn, [b"accepted"])
    try:
        if recv_frame(conn) != [b"go"]:
            return 0
    except (OSError, WireError):
        return 0
    conn.settimeout(None)
    threading.Thread(target=_listen_to_caller, args=(conn,), daemon=True).start()
    from oneoff import _after
    from oneoff.cli import main

    _after.hold()
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
        _replied.set()
        with contextlib.suppress(OSError):
            send_frame(conn, [b"exit", str(code).encode()])
    _after.run_held()
    return code
