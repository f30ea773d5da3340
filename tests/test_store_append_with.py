"""``Store.audit_append_with``: a call's own writes and their audit events commit together,
in both stores, alone or among concurrent appenders (PostgreSQL's group commit)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from oneoff._audit.log import AuditLog
from oneoff._audit.verify import verify_log
from oneoff._store.interface import ApprovalRecord, RequestRecord, Store
from oneoff.errors import StoreError

THREADS = 8


def approval(request_id: str, who: str) -> ApprovalRecord:
    return ApprovalRecord(
        request_id=request_id, approver=who, plan_hash="sha256:" + "0" * 64,
        signature="sig", created_at="2026-12-07T00:00:00Z", expires_at="2026-12-07T01:00:00Z",
    )  # fmt: skip


def make_request(store: Store, request_id: str = "q1") -> None:
    record = RequestRecord(
        id=request_id, task="migrate", environment="production", plan_hash="sha256:" + "0" * 64,
        plan={}, requester="alice", created_at="2026-12-07T00:00:00Z", status="pending",
    )  # fmt: skip
    with store.tx():
        store.create_request(record)


def writes(nonce: str, record: ApprovalRecord, *, fail: bool = False) -> Any:
    """A call's writes: spend ``nonce``, store ``record``, audit what they found; raise
    after writing when ``fail``."""

    def write(store: Store) -> Sequence[dict[str, Any]]:
        fresh = store.remember_nonce(nonce, record.approver, "2026-12-07T00:00:00Z")
        added = fresh and store.add_approval(record)
        if fail:
            raise RuntimeError("the call failed after writing")
        return [{"kind": "request.approved" if added else "approval.refused",
                 "actor": record.approver}]  # fmt: skip

    return write


def refuse_audit_inserts(store: Store) -> None:
    """Make every later audit INSERT fail, as a full disk or a broken log would."""
    db: Any = store.db  # type: ignore[attr-defined]
    if type(store).__name__ == "SQLiteStore":
        db.execute(
            "CREATE TEMP TRIGGER refuse_audit BEFORE INSERT ON audit_events"
            " BEGIN SELECT RAISE(ABORT, 'the audit log refuses writes'); END"
        )
        return
    db.execute(
        "CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the audit log refuses writes'; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
        " FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
    )


def test_writes_and_events_commit_together(store: Store) -> None:
    """The writes land with the events the write function returns, which see what the
    writes found: a second call with the same nonce stores nothing and audits a refusal."""
    make_request(store)
    log = AuditLog(store)
    first = log.append_with(writes("n1", approval("q1", "bob")))
    again = log.append_with(writes("n1", approval("q1", "carol")))
    assert [e.kind for e in first + again] == ["request.approved", "approval.refused"]
    assert [a.approver for a in store.approvals_for("q1")] == ["bob"]
    assert [e.kind for e in log.events()] == ["request.approved", "approval.refused"]


def test_a_write_that_raises_leaves_nothing(store: Store) -> None:
    """A write function that raises after writing: its nonce and approval are rolled back,
    no event is appended, its error reaches the caller; the call can then be made again."""
    make_request(store)
    log = AuditLog(store)
    with pytest.raises(RuntimeError, match="failed after writing"):
        log.append_with(writes("n1", approval("q1", "bob"), fail=True))
    assert list(store.approvals_for("q1")) == []
    assert list(log.events()) == []
    assert [e.kind for e in log.append_with(writes("n1", approval("q1", "bob")))] == [
        "request.approved"
    ]


def test_a_failed_audit_write_undoes_the_calls_writes(store: Store) -> None:
    """When the audit INSERT itself fails, the approval and the nonce written before it in
    the same transaction are gone too (StoreError): all or none."""
    make_request(store)
    log = AuditLog(store)
    refuse_audit_inserts(store)
    with pytest.raises(StoreError):
        log.append_with(writes("n1", approval("q1", "bob")))
    assert list(store.approvals_for("q1")) == []
    assert store.remember_nonce("n1", "bob", "2026-12-07T00:00:00Z")  # never spent


@pytest.mark.postgres
def test_one_appenders_failure_spares_the_others_in_its_batch(pg_url: str) -> None:
    """Appenders with writes queued behind one batch share the next (PostgreSQL's group
    commit); the one whose write raises fails alone (its writes rolled back, the batch
    written again without it), the others' writes and events all land, and the chain
    verifies."""
    from oneoff._store.postgres import PostgresStore
    from oneoff._store.postgres_group import group_for

    stores = [PostgresStore(pg_url) for _ in range(THREADS)]
    make_request(stores[0])
    group = group_for(pg_url)
    batches = group.batches
    release, holding = threading.Event(), threading.Event()
    results: dict[int, Any] = {}

    def one(i: int) -> None:
        write = writes(f"n{i}", approval("q1", f"p{i}"), fail=i == 3)

        def first(store: Store) -> Sequence[dict[str, Any]]:
            holding.set()
            assert release.wait(120)  # holds the batch open while the others queue
            return write(store)  # type: ignore[no-any-return]

        try:
            results[i] = AuditLog(stores[i]).append_with(first if i == 0 else write)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    try:
        threads[0].start()
        wait_for(holding.is_set, "the first batch is open")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(group._queue) == THREADS - 1, "the others are queued")
        release.set()
        for t in threads:
            t.join(timeout=120)
        assert isinstance(results[3], RuntimeError), results[3]
        assert all(isinstance(results[i], list) for i in range(THREADS) if i != 3), results
        assert group.batches == batches + 2  # the first, then the others in one
        approvers = sorted(a.approver for a in stores[0].approvals_for("q1"))
        assert approvers == sorted(f"p{i}" for i in range(THREADS) if i != 3)
        assert stores[0].remember_nonce("n3", "p3", "2026-12-07T00:00:00Z")
        log = AuditLog(stores[0])
        assert sorted(e.actor for e in log.events()) == approvers
        verify_log(stores[0], None)  # AuditError on any fork or gap
    finally:
        release.set()
        for s in stores:
            s.close()


def wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def test_the_stale_nonce_sweep_uses_an_index(store: Store) -> None:
    """The sweep's DELETE of stale nonces finds them through the ``seen_at`` index (a
    migration of both schemas), not by reading every nonce of the last minutes."""
    db: Any = store.db  # type: ignore[attr-defined]
    sweep = "DELETE FROM nonces WHERE seen_at < '2026-12-07T00:00:00Z'"
    if type(store).__name__ == "SQLiteStore":
        plan = " ".join(str(row) for row in db.execute("EXPLAIN QUERY PLAN " + sweep))
    else:
        with store.tx():  # planner settings for this transaction only
            db.execute("SET LOCAL enable_seqscan = off")
            plan = " ".join(str(row) for row in db.execute("EXPLAIN " + sweep))
    assert "nonces_seen_at" in plan, plan
    store.remember_nonce("old", "bob", "2026-12-06T00:00:00Z")
    store.remember_nonce("new", "bob", "2026-12-08T00:00:00Z")
    store.forget_nonces("2026-12-07T00:00:00Z")
    assert store.remember_nonce("old", "bob", "2026-12-06T00:00:00Z")  # forgotten
    assert not store.remember_nonce("new", "bob", "2026-12-08T00:00:00Z")  # kept


def test_an_approval_is_stored_only_with_a_fresh_nonce(store: Store) -> None:
    """``add_approval_spending`` spends the nonce and stores the approval in one step:
    ``(True, True)`` the first time; a spent nonce stores nothing ``(False, False)``; a
    fresh nonce for an approver who already approved spends it and stores nothing."""
    make_request(store)
    with store.tx():
        first = store.add_approval_spending(approval("q1", "bob"), "n1", "bob", "t")
        replayed = store.add_approval_spending(approval("q1", "carol"), "n1", "carol", "t")
        twice = store.add_approval_spending(approval("q1", "bob"), "n2", "bob", "t")
    assert (first, replayed, twice) == ((True, True), (False, False), (True, False))
    assert [a.approver for a in store.approvals_for("q1")] == ["bob"]
    assert not store.remember_nonce("n2", "bob", "t")  # spent by the refused one
