"""An approval through the API is one transaction: its nonce, the approval and its audit
events land together or not at all (PostgreSQL's group commit, a real server process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _serverproc import ServerProc, signed_headers
from oneoff._identity import NAMESPACE_APPROVE, Signer, approval_statement, iso, utc_now
from oneoff._store.interface import RequestRecord
from test_server_access import ask, plan_json

KEYS = dict[str, Path]


def signed_approval(
    server: ServerProc, keys: KEYS, who: str, answer: dict[str, Any]
) -> tuple[str, bytes, dict[str, str]]:
    """An approval call, signed once: path, body and envelope headers (to send twice)."""
    import json

    request = RequestRecord(**answer["request"])
    version, time = request.policy_version or "", iso(utc_now())
    data = approval_statement(request, version, time)
    signature = Signer(keys[who], agent=False).sign(data, NAMESPACE_APPROVE).decode()
    body = json.dumps({"time": time, "policy_version": version, "signature": signature})
    path = f"/v1/requests/{request.id}/approvals"
    headers = signed_headers(keys[who], "POST", path, body.encode(), server.server_id)
    return path, body.encode(), headers


def set_audit_refusal(url: str, on: bool) -> None:
    """Make PostgreSQL refuse (or accept again) every ``request.approved`` audit event, as
    a failing disk or a broken log would refuse it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        if not on:
            db.execute("DROP TRIGGER refuse_approved ON audit_events")
            return
        db.execute(
            "CREATE OR REPLACE FUNCTION refuse_approved() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN IF convert_from(NEW.body, 'UTF8') LIKE '%request.approved%' THEN"
            " RAISE EXCEPTION 'the audit log refuses writes'; END IF; RETURN NEW; END $$"
        )
        db.execute(
            "CREATE TRIGGER refuse_approved BEFORE INSERT ON audit_events"
            " FOR EACH ROW EXECUTE FUNCTION refuse_approved()"
        )


def approved_events(url: str) -> list[Any]:
    from oneoff._audit.log import AuditLog
    from oneoff._store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        return [e for e in AuditLog(store).events() if e.kind == "request.approved"]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_failed_audit_write_leaves_no_approval_and_the_call_can_be_sent_again(
    server_app: Path, server_factory: Any, pg_url: str, server_keys: KEYS
) -> None:
    """When the approval's audit event cannot be written, the call fails (503) and leaves
    nothing: no approval, its nonce unspent; the same signed call, sent again once the log
    takes writes, is accepted (201) and audited once; a third copy is a replay (409)."""
    server = server_factory(server_app, pg_url)
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    assert created.status == 201, created
    path, body, headers = signed_approval(server, server_keys, "bob", created.json)
    set_audit_refusal(pg_url, True)
    try:
        failed = server.call("POST", path, body=body, headers=headers)
    finally:
        set_audit_refusal(pg_url, False)
    assert failed.status == 503, failed
    request_id = created.json["request"]["id"]
    shown = server.read(server_keys["dave"], f"/v1/requests/{request_id}")
    assert shown.json["approvals"] == [], shown
    again = server.call("POST", path, body=body, headers=headers)
    assert again.status == 201, again
    assert again.json["approval"]["approver"] == "bob"
    assert [e.actor for e in approved_events(pg_url)] == ["bob"]
    replay = server.call("POST", path, body=body, headers=headers)
    assert replay.status == 409, replay
    assert "replayed" in replay.error["message"]


@pytest.mark.parametrize("server", ["sqlite", "postgres"], indirect=True)
def test_a_refused_approval_spends_its_nonce(server: ServerProc, server_keys: KEYS) -> None:
    """An approval refused by its checks (alice approving her own request) still spends
    the call's nonce: the same call sent again is a replay (409), audited as one."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    path, body, headers = signed_approval(server, server_keys, "alice", created.json)
    refused = server.call("POST", path, body=body, headers=headers)
    assert refused.status in (403, 409), refused
    assert "self-approval" in refused.error["message"]
    again = server.call("POST", path, body=body, headers=headers)
    assert again.status == 409, again
    assert "replayed" in again.error["message"]
