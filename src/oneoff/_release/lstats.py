"""Compare many paths' lstat keys with recorded ones, on two cores when that pays.

A warm verify is one ``lstat`` per file. Here each costs ~1.6 µs in the kernel (a C loop
measures the same) and ~1 µs more to build the stat result in Python; relative lookups
and per-directory descriptors save too little to pay for themselves. Threads do not help:
every return from the syscall fights for the GIL. A forked child does: both processes
take chunks of the paths from a shared queue until it is empty, so a CPU that runs slower
(a busy VM host) takes fewer, and the child reports one byte. The child touches no lock,
file or module state of ours; it runs only lstat, struct packing and a comparison, then
``os._exit``. Forking is skipped when this process has other threads (a fork could copy a
lock another thread holds) unless they declared themselves safe with
``fork_safe_thread`` (a thread that only waits in a system call, like the daemon runner's
signal listener), for short lists, and on one CPU.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Callable
from itertools import starmap
from operator import attrgetter

__all__ = ["SPLIT_MIN", "STAT_FIELDS", "fork_safe_thread", "keys_match"]

SPLIT_MIN = 4000  # below this a fork (~1-2 ms) costs more than half the lstats save
CHUNKS = 64  # work is shared in this many chunks (at most 256: a chunk number is a byte)
TAIL = 3  # the child leaves the last chunks to this process: its exit (~1 ms) overlaps them
# What a stat cache key holds, in order (packed by the caller's struct).
STAT_FIELDS = attrgetter("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_mode")


def _live_keys(pack: Callable[..., bytes], paths: list[bytes]) -> bytes | None:
    try:
        return b"".join(starmap(pack, map(STAT_FIELDS, map(os.lstat, paths))))
    except OSError:
        return None  # a path vanished or became unreadable: not unchanged


_fork_safe: set[int] = set()


def fork_safe_thread() -> None:
    """Declare the calling thread harmless to fork beside: it holds no lock a child could
    need (it only blocks in system calls and never runs while the forking thread holds the
    GIL)."""
    import threading

    _fork_safe.add(threading.get_native_id())


def _single_threaded() -> bool:
    try:
        threads = {int(tid) for tid in os.listdir("/proc/self/task")}  # OS threads
    except OSError:
        return False
    return len(threads - _fork_safe) == 1


def _take(queue: int) -> int | None:
    """The next chunk number from the shared queue, or None once it is empty."""
    taken = os.read(queue, 1)
    return taken[0] if taken else None


def keys_match(paths: list[bytes], keys: bytes, key: struct.Struct) -> bool:
    """True when ``paths`` lstat to exactly ``keys`` (``key``-packed, in order)."""
    if len(keys) != len(paths) * key.size:
        return False
    if len(paths) < SPLIT_MIN or (os.cpu_count() or 1) < 2 or not _single_threaded():
        return _live_keys(key.pack, paths) == keys
    # Chunks are handed out through a pipe both processes read one byte at a time (a pipe
    # read is atomic, so each chunk goes to exactly one of them): whichever CPU runs faster
    # takes more, and neither waits long for the other at the end.
    size, pack = key.size, key.pack
    bounds = [len(paths) * i // CHUNKS for i in range(CHUNKS + 1)]

    def chunk_matches(i: int) -> bool:
        start, end = bounds[i], bounds[i + 1]
        return _live_keys(pack, paths[start:end]) == keys[start * size : end * size]

    fds: list[int] = []
    try:
        queue, fill = os.pipe()
        fds += (queue, fill)
        os.write(fill, bytes(range(CHUNKS)))  # far below the pipe's capacity: never blocks
        os.close(fill)  # so an empty queue reads as EOF
        fds.remove(fill)
        result, report = os.pipe()
        fds += (result, report)
        pid = os.fork()
    except OSError:  # no descriptors or processes to spare: do it all here
        for fd in fds:
            os.close(fd)
        return _live_keys(pack, paths) == keys
    if pid == 0:  # the child: chunks until the queue is empty, one byte back, gone
        status = 1
        try:
            os.close(result)
            same = True
            while same and (i := _take(queue)) is not None:
                same = chunk_matches(i)
                if i >= CHUNKS - TAIL:
                    break  # the parent takes the rest while this exit runs
            os.write(report, b"1" if same else b"0")
            status = 0
        finally:
            os._exit(status)
    os.close(report)
    mine = theirs = False
    try:
        mine = True
        while mine and (i := _take(queue)) is not None:
            mine = chunk_matches(i)
        if mine:  # EOF (a dead child) reads as "not proven"
            theirs = os.read(result, 1) == b"1"
        else:
            os.kill(pid, signal.SIGKILL)  # not reaped yet, so the pid is still ours
    finally:
        os.close(result)
        os.close(queue)
        os.waitpid(pid, 0)
    return mine and theirs
