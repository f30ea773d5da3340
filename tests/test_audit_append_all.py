"""Events appended together (a decision and its outcome) are consecutive in the chain and
land all or none, on both stores, from many threads at once; an approval through the
server audits Cedar's decision and the approval in one commit."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from _serverproc import ServerProc, signed_headers
from oneoff._audit.log import AuditEvent, AuditLog
from oneoff._audit.verify import verify_log
from oneoff._identity import NAMESPACE_APPROVE, Signer, approval_statement, iso, utc_now
from oneoff._store.interface import RequestRecord, Store
from oneoff.errors import AuditError
from test_server_races import ask

THREADS = 6
ROUNDS = 5


def test_events_appended_together_stay_together_under_concurrency(store: Store) -> None:
    """Threads appending three events at a time beside threads appending one: each trio
    gets three consecutive numbers, in its order, and the whole log verifies."""
    trios: list[list[AuditEvent]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Barrier(THREADS)

    def work(i: int) -> None:
        own = store.connect_again()
        try:
            log = AuditLog(own)
            go.wait()
            for n in range(ROUNDS):
                if i % 2:
                    log.append("single", actor=f"t{i}", payload={"n": n})
                    continue
                trio = log.append_all(
                    [{"kind": f"part{k}", "actor": f"t{i}", "payload": {"n": n}} for k in range(3)]
                )
                with lock:
                    trios.append(trio)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert len(trios) == (THREADS // 2) * ROUNDS
    for trio in trios:
        assert [e.kind for e in trio] == ["part0", "part1", "part2"]
        assert [e.seq for e in trio] == [trio[0].seq, trio[0].seq + 1, trio[0].seq + 2]
        assert trio[1].prev_hash == trio[0].hash
        assert trio[2].prev_hash == trio[1].hash
    stored = {e.seq: e for e in AuditLog(store).events()}
    for trio in trios:
        assert [stored[e.seq].body for e in trio] == [e.body for e in trio]
    assert verify_log(store, None).events == (THREADS // 2) * ROUNDS * 4


def test_events_appended_together_land_all_or_none(store: Store) -> None:
    """If one of the events cannot be recorded, none of them is: the log is unchanged."""
    log = AuditLog(store)
    log.append("before", actor="t")
    with pytest.raises(AuditError, match="cannot be recorded"):
        log.append_all(
            [
                {"kind": "fine", "actor": "t"},
                {"kind": "float", "actor": "t", "payload": {"x": 0.5}},
            ]
        )
    assert [e.kind for e in log.events()] == ["before"]
    assert log.append_all([]) == []


def test_an_approval_audits_its_decision_and_itself_in_one_commit(
    server: ServerProc, server_keys: dict[str, Path], server_app: Path
) -> None:
    """Through the server, Cedar's decision on the approval and the approval itself are
    two consecutive audit events: nothing of another call comes between them."""
    from _access_kit import events

    request = RequestRecord(**ask(server, server_keys, server_app))
    version, when = request.policy_version or "", iso(utc_now())
    data = approval_statement(request, version, when)
    signature = Signer(server_keys["bob"], agent=False).sign(data, NAMESPACE_APPROVE).decode()
    path = f"/v1/requests/{request.id}/approvals"
    body = json.dumps({"time": when, "policy_version": version, "signature": signature}).encode()
    headers = signed_headers(server_keys["bob"], "POST", path, body, server.server_id)
    assert server.call("POST", path, body=body, headers=headers).status == 201
    log = events(server_app)
    approved = next(e for e in log if e.kind == "request.approved")
    decided = next(e for e in log if e.seq == approved.seq - 1)
    assert decided.kind == "access.decided"
    assert (decided.actor, decided.payload["action"], decided.payload["allowed"]) == (
        "bob",
        "approve",
        True,
    )
