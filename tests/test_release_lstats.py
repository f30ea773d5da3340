"""The shared lstat comparison behind a warm verify: every path is checked exactly once, by
one of two processes, and a change anywhere, a dead child or a failed fork never reads as
"unchanged"."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._release import lstats
from oneoff._release.lstats import SPLIT_MIN, TAIL, keys_match

KEY = struct.Struct("<QqqQI")
N = SPLIT_MIN + 10
NAMES = [f"d{i % 20}/f{i}".encode() for i in range(N)]
# (start byte, end byte, first entry, end entry) of each chunk: cut by bytes, not entries.
CHUNKS = lstats._chunks(b"\x00".join(NAMES), N)
SHARED = len(CHUNKS) - TAIL  # chunks handed out through the queue; the tail is the parent's

two_cpus = pytest.mark.skipif(lstats._cpus() < 2, reason="the check forks only on 2+ CPUs")


def key_of(path: bytes) -> bytes:
    st = os.lstat(path)
    return KEY.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


def chunk_start(i: int) -> int:
    return CHUNKS[i][2]


def match(paths: list[bytes], keys: bytes) -> bool:
    """keys_match over ``paths``, all under one directory (as the stat cache calls it)."""
    prefix = os.path.dirname(os.path.dirname(paths[0])) + b"/"
    assert all(p.startswith(prefix) for p in paths)
    names = b"\x00".join(p[len(prefix) :] for p in paths)
    return keys_match(prefix, names, len(paths), keys)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root = tmp_path_factory.mktemp("lstats")
    paths = []
    for name in NAMES:
        path = root / os.fsdecode(name)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        paths.append(os.fsencode(path))
    return paths


@pytest.fixture
def keys(tree: list[bytes]) -> bytes:
    return b"".join(map(key_of, tree))


class Checks:
    """Which process checked which paths: one line per chunk checked, appended atomically
    by whichever process checks it (the parent or the forked child)."""

    def __init__(self, log: Path, tree: list[bytes]) -> None:
        self.log, self.index, self.parent = log, {p: i for i, p in enumerate(tree)}, os.getpid()
        log.touch()

    def record(self, paths: list[bytes]) -> None:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        line = (
            f"{os.getpid()} {self.index[paths[0]]} {len(paths)} "
            f"{int(gc.isenabled())} {int(signal.SIGTERM in mask and signal.SIGINT in mask)}\n"
        )
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def lines(self) -> list[tuple[bool, int, int, bool, bool]]:
        """(by the child, first index, count, gc enabled, signals blocked) per chunk."""
        out = []
        for line in self.log.read_text().splitlines():
            pid, first, count, collecting, blocked = map(int, line.split())
            out.append((pid != self.parent, first, count, bool(collecting), bool(blocked)))
        return out

    def checked(self, *, by_child: bool, first: int | None = None) -> bool:
        """Whether the child (or the parent) has checked a chunk (the one from ``first``)."""
        return any(c[0] == by_child and first in (None, c[1]) for c in self.lines())


@pytest.fixture
def checks(tmp_path: Path, tree: list[bytes], monkeypatch: pytest.MonkeyPatch) -> Checks:
    log = Checks(tmp_path / "checked", tree)
    real_live = lstats._live_keys

    def logged_live(pack: Callable[..., bytes], paths: list[bytes]) -> bytes | None:
        log.record(paths)
        return real_live(pack, paths)

    monkeypatch.setattr(lstats, "_live_keys", logged_live)
    return log


def hold_back(
    monkeypatch: pytest.MonkeyPatch, who: str, until: Callable[[], bool], what: str
) -> None:
    """Before taking its first chunk, ``who`` ("parent" or "child") waits until ``until()``."""
    real_take, parent, first = lstats._take, os.getpid(), [True]

    def take(queue: int) -> int | None:
        if first[0] and (os.getpid() == parent) == (who == "parent"):
            first[0] = False
            deadline = time.monotonic() + 30
            while not until():
                assert time.monotonic() < deadline, what
                time.sleep(0.001)
        return real_take(queue)

    monkeypatch.setattr(lstats, "_take", take)


@contextlib.contextmanager
def touched_file(path: bytes) -> Iterator[None]:
    """``path`` with its mtime one nanosecond later, put back afterwards."""
    old = os.lstat(path)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 1))
    try:
        yield
    finally:
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def test_an_unchanged_tree_matches(tree: list[bytes], keys: bytes) -> None:
    assert match(tree, keys)
    assert match(tree[:100], keys[: 100 * KEY.size])  # short: no fork


@pytest.mark.parametrize("where", [0, chunk_start(1) - 1, chunk_start(1), N // 2, -1])
def test_a_change_anywhere_is_seen(tree: list[bytes], keys: bytes, where: int) -> None:
    with touched_file(tree[where]):
        assert not match(tree, keys)


@pytest.mark.parametrize("where", [1, N // 2, -2])
def test_a_vanished_file_is_seen(tree: list[bytes], keys: bytes, where: int) -> None:
    target = Path(os.fsdecode(tree[where]))
    data = target.read_bytes()
    target.unlink()
    try:
        assert not match(tree, keys)
    finally:
        target.write_bytes(data)


def test_wrong_key_column_length_never_matches(tree: list[bytes], keys: bytes) -> None:
    assert not match(tree, keys[:-1])
    assert not match(tree[:-1], keys)


@two_cpus
def test_every_path_is_checked_exactly_once_by_one_of_two_processes(
    tree: list[bytes], keys: bytes, checks: Checks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent starts only once the child has checked a chunk: both must take part.
    hold_back(monkeypatch, "parent", partial(checks.checked, by_child=True), "child idle")
    assert match(tree, keys)
    lines = checks.lines()
    covered = sorted((first, count) for _child, first, count, _gc, _sig in lines)
    assert [first for first, _ in covered] == [chunk_start(i) for i in range(len(CHUNKS))]
    assert all(first + count == CHUNKS[i][3] for i, (first, count) in enumerate(covered))
    by_child = {first for child, first, *_ in lines if child}
    assert by_child
    assert len(by_child) < len(CHUNKS)
    # The tail is always the parent's: it checks it while the child exits.
    assert not by_child & {chunk_start(i) for i in range(SHARED, len(CHUNKS))}


@two_cpus
def test_the_child_runs_no_handler_and_no_collection(
    tree: list[bytes], keys: bytes, checks: Checks, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_back(monkeypatch, "parent", partial(checks.checked, by_child=True), "child idle")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert gc.isenabled()
    assert match(tree, keys)
    lines = checks.lines()
    assert all(not collecting and blocked for child, _f, _n, collecting, blocked in lines if child)
    # ... and this process is left as it was.
    assert gc.isenabled()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert all(collecting and not blocked for child, *_, collecting, blocked in lines if not child)


@two_cpus
def test_a_change_the_child_checks_is_seen(
    tree: list[bytes], keys: bytes, checks: Checks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent holds back until the child has checked chunk 0, which holds the change.
    until = partial(checks.checked, by_child=True, first=0)
    hold_back(monkeypatch, "parent", until, "the child never checked chunk 0")
    with touched_file(tree[3]):
        assert not match(tree, keys)
    assert checks.checked(by_child=True, first=0)


@two_cpus
def test_a_change_this_process_checks_stops_the_child_early(
    tree: list[bytes], keys: bytes, checks: Checks, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = os.getpid()
    real_live = lstats._live_keys

    def slow_in_child(pack: Callable[..., bytes], paths: list[bytes]) -> bytes | None:
        if os.getpid() != parent:
            time.sleep(0.2)  # a slow CPU: alone it would need 12 s for its share
        return real_live(pack, paths)

    monkeypatch.setattr(lstats, "_live_keys", slow_in_child)
    # The child starts only once this process has checked chunk 0, which holds the change.
    until = partial(checks.checked, by_child=False, first=0)
    hold_back(monkeypatch, "child", until, "this process never checked chunk 0")
    started = time.monotonic()
    with touched_file(tree[3]):
        assert not match(tree, keys)
    # The mismatch emptied the queue: the child stopped after at most the chunk it held.
    assert sum(1 for c in checks.lines() if c[0]) <= 1
    assert time.monotonic() - started < 10


@two_cpus
def test_a_child_that_dies_mid_check_never_proves_anything(
    tree: list[bytes], keys: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = os.getpid()
    real_take = lstats._take

    def dying_take(queue: int) -> int | None:
        i = real_take(queue)
        if os.getpid() != parent:
            os._exit(3)  # the chunk it took is never checked
        return i

    monkeypatch.setattr(lstats, "_take", dying_take)
    assert not match(tree, keys)


@two_cpus
def test_with_sigchld_ignored_it_still_works(tree: list[bytes], keys: bytes) -> None:
    # Inherited from whoever started us (the daemon runner keeps ignored signals ignored):
    # the kernel reaps the child itself, and waiting for it must not fail.
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert match(tree, keys)
        with touched_file(tree[N // 3]):
            assert not match(tree, keys)
    finally:
        signal.signal(signal.SIGCHLD, old)


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per os.fork() from here on (the fork still happens)."""
    calls: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        calls.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counting_fork)
    return calls


@two_cpus
def test_with_other_threads_it_stays_in_one_process(
    tree: list[bytes], keys: bytes, forks: list[int]
) -> None:
    assert match(tree, keys)
    assert forks == [1]  # alone, it shares the work
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert match(tree, keys)
        with touched_file(tree[-1]):
            assert not match(tree, keys)
    finally:
        stop.set()
        worker.join()
    assert forks == [1]  # with a second thread it never forked


@two_cpus
def test_a_thread_declared_fork_safe_counts_only_while_declared(
    tree: list[bytes], keys: bytes, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lstats, "_fork_safe", set())
    declared, undeclared = threading.Event(), threading.Event()
    leave, finish = threading.Event(), threading.Event()

    def waiter() -> None:
        with lstats.fork_safe_thread():
            declared.set()
            leave.wait()
        undeclared.set()
        finish.wait()  # still running, no longer declared

    worker = threading.Thread(target=waiter)
    worker.start()
    try:
        assert declared.wait(10)
        assert match(tree, keys)
        assert forks == [1]
        leave.set()
        assert undeclared.wait(10)
        assert match(tree, keys)  # beside an undeclared thread: in one process
    finally:
        leave.set()
        finish.set()
        worker.join()
    assert forks == [1]
    assert lstats._fork_safe == set()


@pytest.mark.parametrize("failing", ["fork", "second pipe"])
def test_without_a_fork_or_pipe_to_spare_it_checks_everything_here(
    tree: list[bytes], keys: bytes, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    real_pipe = os.pipe
    pipes: list[int] = []

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def one_pipe() -> tuple[int, int]:
        pipes.append(1)
        if len(pipes) % 2 == 0:
            raise OSError(24, "Too many open files")
        return real_pipe()

    if failing == "fork":
        monkeypatch.setattr(os, "fork", no_fork)
    else:
        monkeypatch.setattr(os, "pipe", one_pipe)
    before = sorted(os.listdir("/proc/self/fd"))
    assert match(tree, keys)
    with touched_file(tree[-1]):
        assert not match(tree, keys)
    assert sorted(os.listdir("/proc/self/fd")) == before  # no pipe left open


def test_pinned_to_one_cpu_it_does_not_fork(
    tree: list[bytes], keys: bytes, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert match(tree, keys)
    with touched_file(tree[-1]):
        assert not match(tree, keys)
    assert forks == []


def test_a_names_column_that_disagrees_with_the_count_never_matches(
    tree: list[bytes], keys: bytes
) -> None:
    prefix = os.path.dirname(os.path.dirname(tree[0])) + b"/"
    names = b"\x00".join(NAMES)
    assert keys_match(prefix, names, N, keys)
    assert not keys_match(prefix, names + b"\x00", N, keys)  # one name too many
    assert not keys_match(prefix, names.replace(b"\x00", b"/", 1), N, keys)  # too few
    assert not keys_match(prefix, b"", N, keys)
    assert keys_match(prefix, b"", 0, b"")  # nothing to check
    assert not keys_match(prefix, b"x", 0, b"")


@given(
    st.lists(st.binary(max_size=40).filter(lambda b: b"\x00" not in b), min_size=1,
             max_size=600)
)  # fmt: skip
def test_chunks_cover_every_name_once_in_order(names: list[bytes]) -> None:
    blob = b"\x00".join(names)
    chunks = lstats._chunks(blob, len(names))
    assert 1 <= len(chunks) <= lstats.CHUNKS
    assert chunks[0][2] == 0
    assert chunks[-1][3] == len(names)
    for (start, end, first, last), following in zip(chunks, [*chunks[1:], None], strict=True):
        assert blob[start:end].split(b"\x00") == names[first:last]
        if following is not None:
            assert following[0] == end + 1
            assert following[2] == last


@pytest.mark.parametrize(
    ("blob", "count", "keyed", "verdict"),
    [
        (b"", 1, [b""], True),  # the walked root alone
        (b"\x00f", 2, [b"", b"f"], True),  # the root, then one file
        (b"f", 1, [b"f"], True),  # one file, no root entry (a git listing)
        # Malformed, with keys that would pass if only the keys were compared:
        (b"\x00", 1, [b""], False),  # two empty names for one entry
        (b"", 2, [b"", b""], False),  # one name for two entries ("root/" is the root)
        (b"\x00f\x00", 2, [b"", b"f"], False),  # three names for two entries
    ],
)
def test_the_stat_cache_refuses_a_path_column_that_disagrees_with_its_count(
    tmp_path: Path, blob: bytes, count: int, keyed: list[bytes], verdict: bool
) -> None:
    from oneoff._release.statcache import StatCache

    (tmp_path / "f").write_bytes(b"x")
    root = os.fsencode(tmp_path)
    live = {b"": key_of(root), b"f": key_of(root + b"/f")}
    cache = StatCache(tmp_path / "cache")
    cache._path_blob, cache._count = blob, count
    cache._keys = b"".join(live[name] for name in keyed)
    assert cache._stats_match(root) is verdict


def test_a_thread_that_appears_just_before_the_fork_stops_it(
    tree: list[bytes], keys: bytes, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([True, False, True, False])  # alone when asked first, not at the fork

    monkeypatch.setattr(lstats, "_single_threaded", lambda: next(answers))
    assert match(tree, keys)
    with touched_file(tree[-1]):
        assert not match(tree, keys)
    assert forks == []
