"""Requests, approvals and denials through a real server process, signed by the tests' keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _access_kit import events
from _serverproc import ServerProc
from oneoff._app import open_app
from oneoff._canonical import canonical_json
from oneoff._identity import (
    NAMESPACE_APPROVE,
    NAMESPACE_REQUEST,
    Signer,
    approval_statement,
    iso,
    request_statement,
    utc_now,
)
from oneoff._pipeline import RunRequest, make_plan
from oneoff._store.interface import RequestRecord

KEYS = dict[str, Path]


def plan_json(app_dir: Path, task: str = "migrate", env: str = "production") -> dict[str, Any]:
    """``oneoff plan --json`` of ``task`` in ``env``, made on the served checkout."""
    app = open_app(app_dir)
    try:
        return make_plan(app, RunRequest(task, env)).to_json()
    finally:
        app.close()


def request_body(
    keys: KEYS, who: str, plan: dict[str, Any], *, action: str = "request", **kw: Any
) -> dict[str, Any]:
    doc = plan["document"]
    statement = request_statement(
        action, app=doc["app"], task=doc["task"], environment=doc["environment"],
        plan_hash=plan["hash"], **kw,
    )  # fmt: skip
    signature = Signer(keys[who], agent=False).sign(canonical_json(statement), NAMESPACE_REQUEST)
    return {"statement": statement, "signature": signature.decode()}


def ask(server: ServerProc, keys: KEYS, who: str, plan: dict[str, Any]) -> Any:
    body = {"plan": plan, "plan_hash": plan["hash"], **request_body(keys, who, plan)}
    return server.signed(keys[who], "POST", "/v1/requests", body)


def approval(server: ServerProc, keys: KEYS, who: str, answer: dict[str, Any]) -> Any:
    request = RequestRecord(**answer["request"])
    version, time = request.policy_version or "", iso(utc_now())
    data = approval_statement(request, version, time)
    signature = Signer(keys[who], agent=False).sign(data, NAMESPACE_APPROVE).decode()
    body = {"time": time, "policy_version": version, "signature": signature}
    return server.signed(keys[who], "POST", f"/v1/requests/{request.id}/approvals", body)


def test_request_and_two_approvals(server: ServerProc, server_keys: KEYS) -> None:
    """alice asks for a production migrate; bob and carol (dba) approve it; the request and
    its approvals are readable with a session token and audited in the server's log."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    assert created.status == 201, created
    request = created.json["request"]
    assert request["requester"] == "alice"
    assert request["status"] == "pending"
    for who in ("bob", "carol"):
        answer = approval(server, server_keys, who, created.json)
        assert answer.status == 201, answer
        assert answer.json["approval"]["approver"] == who
    shown = server.read(server_keys["dave"], f"/v1/requests/{request['id'][:9]}")
    assert shown.status == 200, shown
    assert [a["approver"] for a in shown.json["approvals"]] == ["bob", "carol"]
    listed = server.read(server_keys["dave"], "/v1/requests", query="status=pending")
    assert [r["request"]["id"] for r in listed.json["requests"]] == [request["id"]]
    kinds = [e.kind for e in events(server.app_dir) if e.kind.startswith("request.")]
    assert kinds == ["request.created", "request.approved", "request.approved"]


def test_plan_hash_mismatch_is_refused(server: ServerProc, server_keys: KEYS) -> None:
    """A plan document changed after hashing (argv swapped) is refused: the server
    recomputes the hash and records nothing."""
    plan = plan_json(server.app_dir)
    plan["document"]["argv"] = ["python", "-c", "print('something else')"]
    answer = ask(server, server_keys, "alice", plan)
    assert answer.status == 400, answer
    assert "hashes to" in answer.error["message"]
    assert server.read(server_keys["bob"], "/v1/requests").json == {"requests": []}


def test_self_approval_and_wrong_group_are_refused(server: ServerProc, server_keys: KEYS) -> None:
    """The requester cannot approve their own request, and dave (not dba) cannot approve a
    migrate: both exit 4 (ApprovalError), 409, and nothing is recorded."""
    created = ask(server, server_keys, "bob", plan_json(server.app_dir))
    assert created.status == 201, created
    for who, words in (("bob", "self-approval"), ("dave", "not in group 'dba'")):
        answer = approval(server, server_keys, who, created.json)
        assert answer.status == 409, answer
        assert answer.error["exit"] == 4
        assert words in answer.error["message"]
    rid = created.json["request"]["id"]
    assert server.read(server_keys["bob"], f"/v1/requests/{rid}").json["approvals"] == []


def test_statement_of_another_person_is_refused(server: ServerProc, server_keys: KEYS) -> None:
    """bob cannot send a request carrying alice's signed statement (403)."""
    plan = plan_json(server.app_dir)
    body = {"plan": plan, "plan_hash": plan["hash"], **request_body(server_keys, "alice", plan)}
    answer = server.signed(server_keys["bob"], "POST", "/v1/requests", body)
    assert answer.status == 403, answer
    assert "signed by alice" in answer.error["message"]


def test_requester_withdraws_and_the_request_is_closed(
    server: ServerProc, server_keys: KEYS
) -> None:
    """A signed denial by the requester withdraws the request; approving it after is 409."""
    plan = plan_json(server.app_dir)
    created = ask(server, server_keys, "alice", plan)
    rid = created.json["request"]["id"]
    body = {"reason": "wrong target", **request_body(server_keys, "alice", plan, action="deny",
                                                      request_id=rid)}  # fmt: skip
    denied = server.signed(server_keys["alice"], "POST", f"/v1/requests/{rid}/denials", body)
    assert denied.status == 200, denied
    assert denied.json["request"]["status"] == "denied"
    late = approval(server, server_keys, "bob", created.json)
    assert late.status == 409
    assert "not pending" in late.error["message"]


def test_unknown_request_is_404(server: ServerProc, server_keys: KEYS) -> None:
    """Reading a request that does not exist is 404, with oneoff's usage exit code."""
    answer = server.read(server_keys["bob"], "/v1/requests/qnope")
    assert answer.status == 404
    assert answer.error["exit"] == 2


@pytest.mark.parametrize("status", ["bogus", "pending'--"])
def test_bad_status_filter_is_422(server: ServerProc, server_keys: KEYS, status: str) -> None:
    """The status filter takes only the known states."""
    answer = server.read(server_keys["bob"], "/v1/requests", query=f"status={status}")
    assert answer.status == 422, answer


def test_values_the_server_cannot_verify_are_shown_masked(
    server: ServerProc, server_keys: KEYS, tmp_path: Path
) -> None:
    """A plan fingerprinted with a machine's own key (not the server's): the server cannot
    check a shown value against the plan, so it stores it masked (never as if verified),
    and the request can still be approved; with the server's key the value is verified."""
    import shutil

    laptop = tmp_path / "laptop" / server.app_dir.name  # the app is named by its directory
    shutil.copytree(server.app_dir, laptop, ignore=shutil.ignore_patterns(".oneoff"))
    plan = plan_json(laptop, "noop", "development")
    assert plan["env"]["GREETING"]["value"] == "hi"
    created = ask(server, server_keys, "alice", plan)
    assert created.status == 201, created
    shown = created.json["request"]["plan"]["env"]["GREETING"]
    assert shown["value"].startswith("****")
    assert approval(server, server_keys, "bob", created.json).status == 201
    # Fingerprinted with the server's key (oneoff._fpkey), the same value from the same
    # laptop is verified and shown as is.
    from oneoff._fpkey import use_server_key

    app = open_app(laptop)
    try:
        token = server.token(server_keys["alice"])
        use_server_key(
            app, server.server_id, lambda: server.read(token, "/v1/fingerprint-key").json
        )
        keyed = make_plan(app, RunRequest("noop", "development")).to_json()
    finally:
        app.close()
    here = ask(server, server_keys, "alice", keyed)
    assert here.json["request"]["plan"]["env"]["GREETING"]["value"] == "hi"
    # So is a plan made locally on the server's own checkout: its store holds that key.
    there = ask(server, server_keys, "alice", plan_json(server.app_dir, "noop", "development"))
    assert there.json["request"]["plan"]["env"]["GREETING"]["value"] == "hi"


def test_malformed_statement_and_time_are_bad_input(server: ServerProc, server_keys: KEYS) -> None:
    """A statement with a float (no canonical form) and an approval whose time is not a
    timestamp are bad input (400, exit 2), never a server error."""
    plan = plan_json(server.app_dir)
    body = {"plan": plan, "plan_hash": plan["hash"], **request_body(server_keys, "alice", plan)}
    body["statement"] = dict(body["statement"], time=1.5)
    answer = server.signed(server_keys["alice"], "POST", "/v1/requests", body)
    assert answer.status == 400, answer
    created = ask(server, server_keys, "alice", plan)
    rid = created.json["request"]["id"]
    bad = {"time": "2026-13-45T99:00:00Z", "policy_version": "pv:x", "signature": "x"}
    late = server.signed(server_keys["bob"], "POST", f"/v1/requests/{rid}/approvals", bad)
    assert late.status == 400, late
    assert late.error["exit"] == 2
