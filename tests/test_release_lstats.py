"""The shared lstat comparison behind a warm verify: every chunk counts, in either process."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest

from oneoff._release import lstats
from oneoff._release.lstats import CHUNKS, SPLIT_MIN, keys_match

KEY = struct.Struct("<QqqQI")


def key_of(path: bytes) -> bytes:
    st = os.lstat(path)
    return KEY.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root = tmp_path_factory.mktemp("lstats")
    paths = []
    for i in range(SPLIT_MIN + 10):
        path = root / f"d{i % 20}" / f"f{i}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        paths.append(os.fsencode(path))
    return paths


def test_an_unchanged_tree_matches(tree: list[bytes]) -> None:
    keys = b"".join(map(key_of, tree))
    assert keys_match(tree, keys, KEY)
    assert keys_match(tree[:100], keys[: 100 * KEY.size], KEY)  # short: no fork


CHUNK = (SPLIT_MIN + 10) // CHUNKS


@pytest.mark.parametrize("where", [0, CHUNK - 1, CHUNK, SPLIT_MIN // 2, -CHUNK, -1])
def test_a_change_in_any_chunk_is_seen(tree: list[bytes], where: int) -> None:
    keys = b"".join(map(key_of, tree))
    target = tree[where]
    old = os.lstat(target)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns + 1))
    try:
        assert not keys_match(tree, keys, KEY)
    finally:
        os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))


@pytest.mark.parametrize("where", [1, SPLIT_MIN // 2, -2])
def test_a_vanished_file_in_any_chunk_is_seen(tree: list[bytes], where: int) -> None:
    keys = b"".join(map(key_of, tree))
    target = Path(os.fsdecode(tree[where]))
    data = target.read_bytes()
    target.unlink()
    try:
        assert not keys_match(tree, keys, KEY)
    finally:
        target.write_bytes(data)


def test_both_processes_share_the_chunks_and_each_is_checked_once(
    tree: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = b"".join(map(key_of, tree))
    log = tmp_path / "taken"
    real_take = lstats._take

    def logged_take(queue: int) -> int | None:
        i = real_take(queue)
        if i is not None:  # one short line per chunk, appended atomically
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{os.getpid()} {i}\n".encode())
            finally:
                os.close(fd)
        return i

    def sharing_take(queue: int) -> int | None:
        i = logged_take(queue)
        if os.getpid() == parent:  # hold on until the child has taken a chunk too
            deadline = time.monotonic() + 30
            while not any(not line.startswith(mine) for line in log.read_text().splitlines()):
                assert time.monotonic() < deadline, "the child never took a chunk"
                time.sleep(0.001)
        return i

    parent, mine = os.getpid(), f"{os.getpid()} "
    monkeypatch.setattr(lstats, "_take", sharing_take)
    assert keys_match(tree, keys, KEY)
    taken = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for _pid, i in taken) == list(range(CHUNKS))
    assert len({pid for pid, _i in taken}) == 2  # this process and the child


def test_a_child_that_dies_mid_check_never_proves_anything(
    tree: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = b"".join(map(key_of, tree))
    parent = os.getpid()
    real_take = lstats._take

    def dying_take(queue: int) -> int | None:
        i = real_take(queue)
        if os.getpid() != parent:
            os._exit(3)  # the chunk it took is never checked
        return i

    monkeypatch.setattr(lstats, "_take", dying_take)
    assert not keys_match(tree, keys, KEY)


def test_a_mismatch_in_this_process_stops_the_child(
    tree: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = b"".join(map(key_of, tree))
    parent = os.getpid()
    real_take = lstats._take

    def stalling_take(queue: int) -> int | None:
        if os.getpid() != parent:
            os.pause()  # a child that would never finish
        return real_take(queue)

    monkeypatch.setattr(lstats, "_take", stalling_take)
    bad = bytes(len(keys))  # every chunk differs: this process sees it at once
    assert not keys_match(tree, bad, KEY)  # returns: the stalled child was killed, reaped


def test_wrong_key_column_length_never_matches(tree: list[bytes]) -> None:
    keys = b"".join(map(key_of, tree))
    assert not keys_match(tree, keys[:-1], KEY)
    assert not keys_match(tree[:-1], keys, KEY)


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


def test_with_other_threads_it_stays_in_one_process(tree: list[bytes], forks: list[int]) -> None:
    keys = b"".join(map(key_of, tree))
    assert keys_match(tree, keys, KEY)
    assert forks == [1]  # alone, it splits the work
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert keys_match(tree, keys, KEY)
        changed = tree[-1]
        old = os.lstat(changed)
        os.utime(changed, ns=(old.st_atime_ns, old.st_mtime_ns + 1))
        try:
            assert not keys_match(tree, keys, KEY)
        finally:
            os.utime(changed, ns=(old.st_atime_ns, old.st_mtime_ns))
    finally:
        stop.set()
        worker.join()
    assert forks == [1]  # with a second thread it never forked


def test_a_thread_declared_fork_safe_does_not_stop_the_split(
    tree: list[bytes], forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = b"".join(map(key_of, tree))
    monkeypatch.setattr(lstats, "_fork_safe", set())
    declared, stop = threading.Event(), threading.Event()

    def waiter() -> None:
        lstats.fork_safe_thread()
        declared.set()
        stop.wait()

    worker = threading.Thread(target=waiter)
    worker.start()
    try:
        declared.wait(10)
        assert keys_match(tree, keys, KEY)
    finally:
        stop.set()
        worker.join()
    assert forks == [1]


def test_without_a_fork_to_spare_it_checks_everything_here(
    tree: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = b"".join(map(key_of, tree))

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    before = sorted(os.listdir("/proc/self/fd"))
    assert keys_match(tree, keys, KEY)
    changed = tree[-1]
    old = os.lstat(changed)
    os.utime(changed, ns=(old.st_atime_ns, old.st_mtime_ns + 1))
    try:
        assert not keys_match(tree, keys, KEY)
    finally:
        os.utime(changed, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert sorted(os.listdir("/proc/self/fd")) == before  # no pipe left open
