"""Group commit of audit appends on PostgreSQL: one transaction for many appenders, from
threads and from processes, and never an event reported that is not durable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oneoff._audit.keys import AuditKey
from oneoff._audit.log import AuditEvent, AuditLog
from oneoff._audit.verify import verify_log
from oneoff._store.postgres import PostgresStore
from oneoff._store.postgres_group import GroupCommit, group_for
from oneoff._store.postgres_schema import WRITE_LOCK
from oneoff.errors import StoreError

pytestmark = [pytest.mark.postgres]

WORKER = Path(__file__).with_name("_pg_worker.py")
THREADS = 8


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


class Appenders:
    """THREADS threads, each with its own connection, appending one event each."""

    def __init__(self, url: str) -> None:
        self.stores = [PostgresStore(url) for _ in range(THREADS)]
        self.events: dict[int, AuditEvent] = {}
        self.errors: dict[int, BaseException] = {}
        self.threads = [threading.Thread(target=self._one, args=(i,)) for i in range(THREADS)]

    def _one(self, i: int) -> None:
        try:
            self.events[i] = AuditLog(self.stores[i]).append("x", actor=f"t{i}")
        except BaseException as exc:
            self.errors[i] = exc

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=120)
        for s in self.stores:
            s.close()


@pytest.fixture
def held_write_lock(pg_url: str) -> Iterator[Callable[[], None]]:
    """The store-wide write lock, held by this test until it calls the returned release."""
    import psycopg

    conn = psycopg.connect(pg_url, autocommit=True)
    conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")

    def release() -> None:
        conn.execute("COMMIT")

    yield release
    conn.close()


def queued(group: GroupCommit) -> int:
    with group._lock:
        return len(group._queue)


def test_appenders_waiting_together_share_one_commit(
    pg_url: str, held_write_lock: Callable[[], None]
) -> None:
    """Eight threads appending while the write lock is busy land in one batch, one commit:
    each learns a distinct seq, and the stored events are exactly the ones returned."""
    group = group_for(pg_url)
    appenders = Appenders(pg_url)
    appenders.start()
    # The first became the leader and waits for the lock; the other seven queue behind it.
    wait_until(lambda: queued(group) == THREADS, "every appender queued")
    held_write_lock()
    appenders.join()
    assert appenders.errors == {}
    assert group.batches == 1
    assert group.events == THREADS
    assert sorted(e.seq for e in appenders.events.values()) == list(range(1, THREADS + 1))
    store = PostgresStore(pg_url)
    try:
        stored = {e.seq: e for e in AuditLog(store).events()}
        for event in appenders.events.values():
            assert stored[event.seq].body == event.body
            assert stored[event.seq].hash == event.hash
        assert verify_log(store, None).events == THREADS
    finally:
        store.close()


def test_a_failed_batch_fails_every_appender_in_it(
    pg_url: str, held_write_lock: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's connection killed after the batch's INSERT, before COMMIT: every one of
    the eight appenders gets a StoreError, none of their events is in the log, and the next
    append works and chains from the empty log."""
    import psycopg

    group = group_for(pg_url)
    inside, go_on = threading.Event(), threading.Event()
    leader_pid: list[int] = []
    commit = PostgresStore._commit

    def held_commit(self: PostgresStore) -> None:
        leader_pid.append(self.db.info.backend_pid)
        inside.set()
        assert go_on.wait(120)
        commit(self)

    monkeypatch.setattr(PostgresStore, "_commit", held_commit)
    appenders = Appenders(pg_url)
    appenders.start()
    wait_until(lambda: queued(group) == THREADS, "every appender queued")
    held_write_lock()
    assert inside.wait(120)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (leader_pid[0],))
    go_on.set()
    appenders.join()
    monkeypatch.undo()
    assert appenders.events == {}
    assert set(appenders.errors) == set(range(THREADS))
    assert all(isinstance(e, StoreError) for e in appenders.errors.values())
    assert len({str(e) for e in appenders.errors.values()}) == 1
    store = PostgresStore(pg_url)
    try:
        assert store.audit_head()[0] == 0
        assert AuditLog(store).append("after", actor="t").seq == 1
        assert verify_log(store, None).events == 1
    finally:
        store.close()


def test_an_append_inside_a_transaction_lands_with_it(pg_url: str) -> None:
    """An append inside the caller's transaction is not group-committed: rolled back with it."""
    store = PostgresStore(pg_url)
    try:

        def append_then_fail() -> None:
            with store.tx():
                AuditLog(store).append("x", actor="a")
                raise RuntimeError("abandon")

        with pytest.raises(RuntimeError):
            append_then_fail()
        assert store.audit_head()[0] == 0
        assert group_for(pg_url).batches == 0
    finally:
        store.close()


def spawn(url: str, state: Path, index: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), "audit-threads", url, str(state), str(index)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def outcome(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.slow
def test_processes_of_threads_append_one_chain(pg_url: str, tmp_path: Path) -> None:
    """Three processes of four threads appending at once: one chain that verifies, every
    appender's returned seq holds exactly its own event, and appends were batched."""
    env = {"THREADS": "4", "APPENDS": "25"}
    procs = [spawn(pg_url, tmp_path, i, env) for i in range(3)]
    wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == 3, "workers connected")
    (tmp_path / "go").touch()
    results = [outcome(p) for p in procs]
    told = {seq: actor for r in results for actor, seq in r["seqs"].items()}
    assert sorted(told) == list(range(1, 3 * 4 * 25 + 1))
    store = PostgresStore(pg_url)
    try:
        assert {e.seq: e.actor for e in AuditLog(store).events()} == told
        assert verify_log(store, None).events == 300
    finally:
        store.close()
    assert sum(r["events"] for r in results) == 300  # each through the group commit
    assert sum(r["batches"] for r in results) < 300  # and some of them shared a commit


@pytest.mark.slow
def test_an_appender_killed_mid_batch_leaves_a_consistent_chain(
    pg_url: str, tmp_path: Path
) -> None:
    """A process SIGKILLed after its batch's INSERT, before COMMIT (holding the write lock):
    none of its events is stored, the other processes' appends go on, and the chain, with a
    checkpoint signed after, verifies."""
    staller = spawn(pg_url, tmp_path, 9, {"THREADS": "4", "APPENDS": "5", "STALL": "1"})
    wait_until(lambda: (tmp_path / "ready-9").exists(), "the staller connected")
    (tmp_path / "go").touch()
    wait_until(lambda: (tmp_path / "stalled").exists(), "a batch stalled before COMMIT")
    others = [spawn(pg_url, tmp_path, i, {"THREADS": "2", "APPENDS": "10"}) for i in range(2)]
    wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == 3, "workers connected")
    os.kill(staller.pid, signal.SIGKILL)
    staller.communicate(timeout=60)
    results = [outcome(p) for p in others]
    told = {seq: actor for r in results for actor, seq in r["seqs"].items()}
    (tmp_path / "key").mkdir()
    key = AuditKey(tmp_path / "key")
    key.ensure()
    store = PostgresStore(pg_url)
    try:
        stored = {e.seq: e.actor for e in AuditLog(store).events()}
        assert not any(actor.startswith("w9") for actor in stored.values())
        assert stored == told
        assert len(told) == 40
        AuditLog(store, key).checkpoint()
        report = verify_log(store, key.public(), all_signatures=True)
        assert report.events == 40
        assert report.checkpointed == 40
    finally:
        store.close()
