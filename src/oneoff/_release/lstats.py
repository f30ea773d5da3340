"""Compare many paths' lstat keys with recorded ones, on two cores when that pays.

A warm verify is one ``lstat`` per file, and on a VM each costs ~2.5 µs of kernel time
that no path trick avoids (relative lookups and per-directory descriptors measured no
faster). Threads do not help: every return from the syscall fights for the GIL. A forked
child does: it checks the second half of the paths while this process checks the first,
and reports one byte. The child touches no lock, file or module state of ours; it runs
only lstat, struct packing and a comparison, then ``os._exit``. Forking is skipped when
this process has other threads (a fork could copy a lock another thread holds) unless they
declared themselves safe with ``fork_safe_thread`` (a thread that only waits in a system
call, like the daemon runner's signal listener), for short lists, and on one CPU.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from itertools import starmap
from operator import attrgetter

__all__ = ["SPLIT_MIN", "STAT_FIELDS", "fork_safe_thread", "keys_match"]

SPLIT_MIN = 4000  # below this a fork (~1-2 ms) costs more than half the lstats save
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


def keys_match(paths: list[bytes], keys: bytes, key: struct.Struct) -> bool:
    """True when ``paths`` lstat to exactly ``keys`` (``key``-packed, in order)."""
    if len(keys) != len(paths) * key.size:
        return False
    half = len(paths) // 2
    if len(paths) < SPLIT_MIN or (os.cpu_count() or 1) < 2 or not _single_threaded():
        return _live_keys(key.pack, paths) == keys
    cut = half * key.size
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return _live_keys(key.pack, paths) == keys
    if pid == 0:  # the child: second half, one byte back, gone
        status = 1
        try:
            os.close(read_end)
            same = _live_keys(key.pack, paths[half:]) == keys[cut:]
            os.write(write_end, b"1" if same else b"0")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        mine = _live_keys(key.pack, paths[:half]) == keys[:cut]
        theirs = os.read(read_end, 1) == b"1"  # EOF (a dead child) reads as "not proven"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return mine and theirs
