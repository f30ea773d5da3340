"""Compare many paths' lstat keys with recorded ones, on two cores when that pays.

A warm verify is one ``lstat`` per file. Here each costs ~1.6 µs in the kernel (a C loop
measures the same) and ~1 µs more to build the stat result in Python; relative lookups
and per-directory descriptors save too little to pay for themselves. Threads do not help:
every return from the syscall fights for the GIL. A forked child does: both processes
take chunks of the paths from a shared queue until it is empty, so a CPU that runs slower
(a busy VM host) takes fewer, and the child reports one byte. The child runs with every
signal blocked and the garbage collector off, so no handler, finalizer or cleanup of ours
runs in it; it does only lstat, struct packing and comparisons, then ``os._exit``. Forking
is skipped when this process has other threads (a fork could copy a lock another thread
holds) unless they are inside ``fork_safe_thread`` (a thread that only waits in system
calls, like the daemon runner's signal listener), for short lists, and on one CPU.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import struct
from collections.abc import Callable, Iterator
from itertools import starmap
from operator import attrgetter

__all__ = [
    "CHUNKS", "KEY", "SPLIT_MIN", "STAT_FIELDS", "TAIL", "fork_safe_thread", "keys_match",
    "stat_key",
]  # fmt: skip

SPLIT_MIN = 4000  # below this a fork (~1-2 ms) costs more than half the lstats save
CHUNKS = 64  # work is shared in this many chunks (at most 256: a chunk number is a byte)
TAIL = 2  # the last chunks stay out of the queue: this process checks them while the
# child's exit (~1 ms of address-space teardown) runs
# What a stat cache key holds, in order, and how it is packed.
STAT_FIELDS = attrgetter("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_mode")
KEY = struct.Struct("<QqqQI")


def stat_key(st: os.stat_result) -> bytes:
    return KEY.pack(*STAT_FIELDS(st))


def _live_keys(pack: Callable[..., bytes], paths: list[bytes]) -> bytes | None:
    try:
        return b"".join(starmap(pack, map(STAT_FIELDS, map(os.lstat, paths))))
    except OSError:
        return None  # a path vanished or became unreadable: not unchanged


_fork_safe: set[int] = set()


@contextlib.contextmanager
def fork_safe_thread() -> Iterator[None]:
    """While inside, the calling thread counts as harmless to fork beside: it must hold no
    lock a child could need (it blocks in system calls and does nothing lock-taking)."""
    import threading
    import warnings

    # Python 3.12+ warns about any fork beside another thread; this one is declared safe.
    warnings.filterwarnings(
        "ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning, __name__
    )
    tid = threading.get_native_id()
    _fork_safe.add(tid)
    try:
        yield
    finally:
        _fork_safe.discard(tid)  # a later thread may reuse the id


def _single_threaded() -> bool:
    try:
        threads = {int(tid) for tid in os.listdir("/proc/self/task")}  # OS threads
    except OSError:
        return False
    return len(threads - _fork_safe) == 1


def _cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _take(queue: int) -> int | None:
    """The next chunk number from the shared queue, or None once it is empty."""
    taken = os.read(queue, 1)
    return taken[0] if taken else None


def _drain(queue: int) -> None:
    """Empty the queue, so a child still taking chunks stops after the one it holds."""
    while os.read(queue, CHUNKS):
        pass


def _paths(prefix: bytes, names: bytes) -> list[bytes]:
    """``prefix + name`` for each NUL-separated name (built in C, one list)."""
    return (prefix + names.replace(b"\x00", b"\x00" + prefix)).split(b"\x00")


def _chunks(names: bytes, count: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, first, last)`` byte and entry ranges of up to CHUNKS chunks of about
    equal size, cut at separators; entries ``first..last-1`` are ``names[start:end]``."""
    out: list[tuple[int, int, int, int]] = []
    start = first = 0
    for i in range(1, CHUNKS):
        cut = names.find(b"\x00", max(start, len(names) * i // CHUNKS))
        if cut < 0:
            break
        last = first + names.count(b"\x00", start, cut) + 1
        out.append((start, cut, first, last))
        start, first = cut + 1, last
    out.append((start, len(names), first, count))
    return out


def keys_match(prefix: bytes, names: bytes, count: int, keys: bytes) -> bool:
    """True when the ``count`` paths ``prefix + name`` (``names`` NUL-separated, in order)
    lstat to exactly ``keys`` (``stat_key``s, in the same order)."""
    if len(keys) != count * KEY.size:
        return False
    if count == 0 or names.count(b"\x00") != count - 1:
        return count == 0 and not names  # malformed unless both are empty
    size, pack = KEY.size, KEY.pack
    if count < SPLIT_MIN or _cpus() < 2 or not _single_threaded():
        return _live_keys(pack, _paths(prefix, names)) == keys
    chunks = _chunks(names, count)

    def chunk_matches(i: int) -> bool:
        # Each process builds only the paths it checks: no work before the fork, and no
        # shared objects whose reference counts would copy pages on write.
        start, end, first, last = chunks[i]
        paths = _paths(prefix, names[start:end])
        return len(paths) == last - first and (
            _live_keys(pack, paths) == keys[first * size : last * size]
        )

    # Chunks are handed out through a pipe both processes read one byte at a time (a pipe
    # read is atomic, so each chunk goes to exactly one of them): whichever CPU runs faster
    # takes more, and neither waits long for the other at the end.
    shared = max(0, len(chunks) - TAIL)
    opened: list[int] = []
    child: list[int] = []  # the pid, recorded before any signal handler could interrupt
    try:
        try:
            queue, fill = os.pipe()
            opened += (queue, fill)
            os.write(fill, bytes(range(shared)))  # far below the pipe's capacity
            opened.remove(fill)
            os.close(fill)  # so an empty queue reads as EOF
            result, report = os.pipe()
            opened += (result, report)
            _fork(child)
        except OSError:  # no descriptors or processes to spare: do it all here
            return _live_keys(pack, _paths(prefix, names)) == keys
        if child == [0]:  # the child: chunks until the queue is empty, one byte back, gone
            status = 1
            try:
                same = True
                while same and (i := _take(queue)) is not None:
                    same = chunk_matches(i)
                os.write(report, b"1" if same else b"0")
                status = 0
            finally:
                os._exit(status)
        opened.remove(report)
        os.close(report)  # so a child that dies reads as EOF
        mine = True
        while mine and (i := _take(queue)) is not None:
            mine = chunk_matches(i)
        for i in range(shared, len(chunks)):
            mine = mine and chunk_matches(i)
        # EOF (a dead child) or b"0" is "not proven".
        return mine and os.read(result, 1) == b"1"
    finally:
        try:
            if child:
                _drain(queue)  # after a mismatch or an exception here: the child stops
        finally:
            for fd in opened:
                os.close(fd)
            if child:
                with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: reaped
                    os.waitpid(child[0], 0)


def _fork(child: list[int]) -> None:
    """Fork, appending the pid to ``child``. The child runs no signal handler and no
    garbage collection, so no finalizer or cleanup of this process's runs twice (only the
    standard library's own after-fork hooks run in it), and it leaves by ``os._exit``.
    OSError when it cannot, or when another thread appeared since the caller looked."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    collecting = gc.isenabled()
    gc.disable()
    try:
        if not _single_threaded():  # again, just before: a declared thread may have left
            raise OSError(errno.EAGAIN, "another thread is running")
        child.append(os.fork())
    finally:
        if child != [0]:  # this process: as it was; the child keeps everything blocked
            if collecting:
                gc.enable()
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
