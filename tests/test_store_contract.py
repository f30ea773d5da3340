"""The store contract: every backend (SQLite, PostgreSQL) passes these same tests.

The ``store`` fixture (tests/conftest.py) runs each test once per backend, the PostgreSQL
one against a real throw-away server.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from oneoff._store.interface import (
    ApprovalRecord,
    LockRecord,
    ReleaseRecord,
    RequestRecord,
    RunRecord,
    Store,
)
from oneoff.errors import AuditError, StoreError, UsageError


def record(run_id: str, **kw: object) -> RunRecord:
    base: dict[str, object] = {
        "id": run_id, "task": "t", "environment": "dev", "params": {"a": "1"},
        "principal": "os:me", "plan_hash": "sha256:x", "status": "running",
        "started_at": "2026-01-01T00:00:00.000Z", "runner_host": "h", "runner_pid": 1,
        "runner_token": "1",
    }  # fmt: skip
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def request_record(request_id: str, status: str = "pending") -> RequestRecord:
    return RequestRecord(
        id=request_id, task="wipe", environment="production", plan_hash="sha256:p",
        plan={"task": "wipe"}, requester="alice", created_at="2026-01-01T00:00:00Z",
        status=status,
    )  # fmt: skip


def test_run_roundtrip_and_finish_only_once(store: Store) -> None:
    """A run is stored, found by prefix, finished once; a second finish changes nothing."""
    with store.tx():
        store.create_run(record("rabc123"))
        store.create_run(record("rabd456", started_at="2026-01-02T00:00:00.000Z"))
    assert store.get_run("rabc").id == "rabc123"
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_run("rab")
    with pytest.raises(UsageError, match="invalid run id"):
        store.get_run("r%")
    with pytest.raises(UsageError, match="no run"):
        store.get_run("zzz")
    with store.tx():
        store.finish_run("rabc123", status="succeeded", exit_code=0, ended_at="t1")
        store.finish_run("rabc123", status="failed", exit_code=1, ended_at="t2")
    run = store.get_run("rabc123")
    assert (run.status, run.exit_code, run.ended_at, run.params) == (
        "succeeded",
        0,
        "t1",
        {"a": "1"},
    )
    assert [r.id for r in store.list_runs()] == ["rabd456", "rabc123"]
    assert [r.id for r in store.list_runs(status="running")] == ["rabd456"]
    assert [r.id for r in store.running_runs()] == ["rabd456"]
    assert store.mark_lost("rabd456", ended_at="t3") is True
    assert store.mark_lost("rabd456", ended_at="t4") is False
    assert store.get_run("rabd456").status == "lost"


def test_failed_transaction_leaves_nothing(store: Store) -> None:
    """An error inside a transaction rolls all of it back."""

    def fail_half_way() -> None:
        with store.tx():
            store.create_run(record("r1"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_half_way()
    assert store.list_runs() == []


def test_a_nested_transaction_joins_the_outer_one(store: Store) -> None:
    """A run's row and its audit event commit together, or neither does."""
    from oneoff._audit.log import AuditLog

    audit = AuditLog(store)

    def crash_between_the_two() -> None:
        with store.tx():
            store.create_run(record("r1"))
            audit.append("run.started", actor="os:me", run_id="r1")
            seen = store.connect_again()  # another connection sees neither yet
            try:
                assert seen.audit_head()[0] == 0
            finally:
                seen.close()
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash_between_the_two()
    assert audit.head() == 0
    with pytest.raises(UsageError, match="no run"):
        store.get_run("r1")
    with store.tx():
        store.create_run(record("r2"))
        audit.append("run.started", actor="os:me", run_id="r2")
    assert audit.head() == 1
    assert store.get_run("r2").id == "r2"


def test_a_transaction_left_open_is_refused_not_joined(store: Store) -> None:
    """A transaction some failure left open is not silently joined by the next write."""
    db = store.db  # type: ignore[attr-defined]
    db.execute("BEGIN")  # as if a COMMIT had failed half-way
    with pytest.raises(StoreError, match="still open"), store.tx():
        pass
    db.execute("ROLLBACK")
    with store.tx():
        store.create_run(record("r1"))
    assert store.get_run("r1").id == "r1"


def test_another_connection_sees_committed_work_from_another_thread(store: Store) -> None:
    """connect_again() gives a thread its own connection to the same store."""
    with store.tx():
        store.create_run(record("r1"))
    seen: list[str] = []

    def elsewhere() -> None:
        other = store.connect_again()
        try:
            seen.append(other.get_run("r1").id)
            with other.tx():
                other.create_run(record("r2"))
        finally:
            other.close()

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join(60)
    assert seen == ["r1"]
    assert store.get_run("r2").id == "r2"


def test_output_chunks_come_back_in_order_and_join_an_open_transaction(store: Store) -> None:
    """Output chunks are read back in order, and ones added in a failed transaction vanish."""
    with store.tx():
        store.create_run(record("r1"))
    store.add_output_chunks("r1", [(i, 1 + i % 2, 1, bytes([i])) for i in range(1, 41)])

    def crash_after_adding() -> None:
        with store.tx():
            store.add_output_chunks("r1", [(41, 1, 1, b"c")])
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash_after_adding()
    chunks = list(store.output_chunks("r1"))
    assert chunks == [(i, 1 + i % 2, 1, bytes([i])) for i in range(1, 41)]
    assert list(store.output_chunks("nope")) == []


def test_a_refused_write_is_not_called_corruption(store: Store) -> None:
    """A duplicate id is a refused write (exit 7), and nothing of its transaction lands."""
    with store.tx():
        store.create_run(record("r1"))

    def duplicate() -> None:
        with store.tx():
            store.create_run(record("r2"))
            store.create_run(record("r1"))

    with pytest.raises(StoreError, match="refused the write") as raised:
        duplicate()
    assert "corrupt" not in str(raised.value)
    with pytest.raises(UsageError, match="no run"):
        store.get_run("r2")


def test_an_interrupt_inside_a_transaction_stays_an_interrupt(store: Store) -> None:
    """Ctrl-C inside a transaction rolls it back and is still an interrupt."""

    def interrupted() -> None:
        with store.tx():
            store.create_run(record("r1"))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    with pytest.raises(UsageError, match="no run"):
        store.get_run("r1")
    with store.tx():
        store.create_run(record("r2"))


def release(rid: str, env: str = "production", version: int = 1) -> ReleaseRecord:
    return ReleaseRecord(
        id=rid, environment=env, version=version, document='{"v": 1}', signature=b"\x01" * 64,
        key_id="k1", created_at="2026-01-01T00:00:00Z", created_by="alice",
        code_entries='[["a.py", 420, 1, "00"]]',
    )  # fmt: skip


def test_releases_are_versioned_found_by_prefix_and_never_overwritten(store: Store) -> None:
    """Releases number per environment, resolve by id prefix, and a taken id is refused."""
    with store.tx():
        assert store.next_release_version("production") == 1
        store.add_release(release("rel_aa11"))
        store.add_release(release("rel_aa22", version=2))
        store.add_release(release("rel_bb11", env="staging"))
        store.set_current_release("production", "rel_aa11", updated_at="t1")
    with store.tx():
        assert store.next_release_version("production") == 3
        store.set_current_release("production", "rel_aa22", updated_at="t2")
    assert store.get_release("aa11").id == "rel_aa11"
    assert store.get_release("rel_bb").environment == "staging"
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_release("aa")
    with pytest.raises(UsageError, match="no release"):
        store.get_release("cc")
    found = store.release_by_version("production", 2)
    assert found is not None
    assert (found.id, found.signature) == ("rel_aa22", b"\x01" * 64)
    assert store.release_by_version("production", 9) is None
    assert [r.id for r in store.list_releases("production")] == ["rel_aa22", "rel_aa11"]
    assert [r.id for r in store.list_releases()] == ["rel_aa22", "rel_aa11", "rel_bb11"]
    assert store.current_release_id("production") == "rel_aa22"
    assert store.current_release_id("staging") is None
    assert store.release_code_entries("rel_aa11") == '[["a.py", 420, 1, "00"]]'
    with pytest.raises(StoreError, match="cannot store release"), store.tx():
        store.add_release(release("rel_cc11", version=2))  # production v2 is taken
    assert [r.id for r in store.list_releases("production")] == ["rel_aa22", "rel_aa11"]


def test_a_request_and_its_approvals_are_spent_once(store: Store) -> None:
    """A request is used at most once; a second approval by one person is refused, and
    that refusal does not undo the rest of its transaction."""
    approval = ApprovalRecord("q1", "bob", "sha256:p", "sig", "t1", "t9")
    with store.tx():
        store.create_request(request_record("q1"))
        store.create_request(request_record("q2"))
        assert store.add_approval(approval) is True
        assert store.add_approval(approval) is False
        store.create_run(record("r-after-refusal"))  # still lands with the transaction
    assert store.get_run("r-after-refusal").id == "r-after-refusal"
    assert store.get_request("q1").plan == {"task": "wipe"}
    assert [r.id for r in store.list_requests()] == ["q2", "q1"]
    with store.tx():
        assert store.use_request("q1", "run1", ["bob"]) is True
    with store.tx():
        assert store.use_request("q1", "run2", ["bob"]) is False
    assert store.get_request("q1").used_by_run == "run1"
    assert [a.used for a in store.approvals_for("q1")] == [True]
    assert store.set_request_status("q2", "denied", expect="pending") is True
    assert store.set_request_status("q2", "used", expect="pending") is False
    assert store.list_requests(status=None)[0].status in ("used", "denied")
    assert store.remember_nonce("n1", "alice", "2026-01-01T00:00:00Z") is True
    assert store.remember_nonce("n1", "alice", "2026-01-01T00:00:01Z") is False
    store.forget_nonces("2026-01-02T00:00:00Z")
    assert store.remember_nonce("n1", "alice", "2026-01-03T00:00:00Z") is True


def lock(name: str, run_id: str) -> LockRecord:
    return LockRecord(name, run_id, "alice", "host", 1, "t0", "t1")


def test_locks_are_taken_renewed_and_dropped(store: Store) -> None:
    """A held lock cannot be taken twice; renewal and release touch only one run's leases."""
    with store.tx():
        store.take_locks([lock("database", "r1"), lock("cache", "r1")])
    with pytest.raises(StoreError, match="refused the write"), store.tx():
        store.take_locks([lock("database", "r2")])
    assert [x.name for x in store.lock_holders()] == ["cache", "database"]
    assert [x.run_id for x in store.lock_holders(["database", "other"])] == ["r1"]
    assert store.renew_locks("r1", "t5") == 2
    assert store.renew_locks("r2", "t5") == 0
    assert store.drop_locks("r1", ["cache"]) == 1
    assert store.drop_locks("r1") == 1
    assert store.lock_holders() == []


def test_the_audit_log_chains_checkpoints_and_verifies(store: Store, tmp_path: Path) -> None:
    """Appends chain, filters decode the body, checkpoints sign it, and verify passes."""
    from oneoff._audit.keys import AuditKey
    from oneoff._audit.log import AuditLog
    from oneoff._audit.verify import prove_consistency, verify_log

    key = AuditKey(tmp_path)
    log = AuditLog(store, key)
    for i in range(5):
        log.append("run.started" if i % 2 else "x", actor="me", run_id=f"r{i % 2}")
    first = log.checkpoint()
    log.append("x", actor="me")
    latest = log.checkpoint()
    assert (first.size, latest.size) == (5, 6)
    assert [e.seq for e in log.events(run_id="r1")] == [2, 4]
    assert [e.seq for e in log.events(kind="x")] == [1, 3, 5, 6]
    assert [e.seq for e in log.events(since=4)] == [5, 6]
    report = verify_log(store, key.public())
    assert (report.events, report.checkpoints, report.checkpointed) == (6, 2, 6)
    assert store.audit_hash_at(6) == report.head
    assert len(store.audit_leaf_hashes(6)) == 6
    proof = prove_consistency(store, key.public(), first)
    assert proof.new.size == 6
    assert store.audit_first_gap() is None


def test_checkpoint_states_flag_foreign_rows_and_rows_are_read_by_size(
    store: Store, tmp_path: Path
) -> None:
    """Verify reads every checkpoint's size and tree state, the frontier withheld (None) from
    a row naming another key; full rows are read for a chosen set of sizes, missing ones left
    out."""
    from oneoff._audit.checkpoint import key_id
    from oneoff._audit.keys import AuditKey
    from oneoff._audit.log import AuditLog

    key = AuditKey(tmp_path)
    log = AuditLog(store, key)
    for _ in range(3):
        log.append("x", actor="me")
        log.checkpoint()
    rows = [tuple(r) for r in store.audit_checkpoint_rows()]
    states = [tuple(r) for r in store.audit_checkpoint_states(key_id(key.public()))]
    assert states == [(r[0], r[5]) for r in rows]
    assert [s for s, _ in states] == [1, 2, 3]
    assert [tuple(r) for r in store.audit_checkpoint_states("0" * 32)] == [
        (1, None), (2, None), (3, None)
    ]  # fmt: skip
    assert [tuple(r) for r in store.audit_checkpoint_rows_at([3, 1, 7])] == [rows[0], rows[2]]


def test_a_deleted_audit_event_is_found(store: Store, tmp_path: Path) -> None:
    """Deleting an event from the middle of the log fails verification, naming it."""
    from oneoff._audit.log import AuditLog
    from oneoff._audit.verify import verify_log

    log = AuditLog(store)
    for _ in range(4):
        log.append("x", actor="me")
    store.db.execute("DELETE FROM audit_events WHERE seq = 2")  # type: ignore[attr-defined]
    assert store.audit_first_gap() == 2
    with pytest.raises(AuditError, match="audit event 2 is missing"):
        verify_log(store, None)
    with pytest.raises(AuditError, match="does not hold events"):
        store.audit_leaf_hashes(4)


def test_cosignatures_are_stored_once_per_witness_and_checkpoint(store: Store) -> None:
    """A witness co-signs a checkpoint once; rows come back largest size first."""
    assert store.audit_cosignature_rows() == []
    with store.tx():
        assert store.audit_put_cosignature(4, "aa" * 16, 100, b"\x01" * 64) is True
        assert store.audit_put_cosignature(4, "aa" * 16, 200, b"\x02" * 64) is False
        assert store.audit_put_cosignature(6, "aa" * 16, 300, b"\x03" * 64) is True
        assert store.audit_put_cosignature(4, "bb" * 16, 100, b"\x04" * 64) is True
    rows = [tuple(r) for r in store.audit_cosignature_rows()]
    assert rows == [
        (6, "aa" * 16, 300, b"\x03" * 64),
        (4, "aa" * 16, 100, b"\x01" * 64),
        (4, "bb" * 16, 100, b"\x04" * 64),
    ]
