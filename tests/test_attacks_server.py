"""An attacker's tries against a REAL team server process (tests/_serverproc.py): each one
is refused with a clean answer, changes nothing, and is visible in the audit log."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from _access_kit import events, signers_text
from _serverproc import Response, ServerProc
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


def plan_json(
    app_dir: Path, task: str = "migrate", env: str = "production", **params: str
) -> dict[str, Any]:
    """``oneoff plan --json`` of ``task`` in ``env``, made on the served checkout."""
    app = open_app(app_dir)
    try:
        return make_plan(app, RunRequest(task, env, params=params)).to_json()
    finally:
        app.close()


def signed_statement(
    keys: KEYS, who: str, plan: dict[str, Any], action: str = "request", **kw: Any
) -> dict[str, Any]:
    doc = plan["document"]
    statement = request_statement(
        action, app=doc["app"], task=doc["task"], environment=doc["environment"],
        plan_hash=plan["hash"], **kw,
    )  # fmt: skip
    signature = Signer(keys[who], agent=False).sign(canonical_json(statement), NAMESPACE_REQUEST)
    return {"statement": statement, "signature": signature.decode()}


def ask(server: ServerProc, keys: KEYS, who: str, plan: dict[str, Any]) -> Response:
    body = {"plan": plan, "plan_hash": plan["hash"], **signed_statement(keys, who, plan)}
    return server.signed(keys[who], "POST", "/v1/requests", body)


def approval_body(
    keys: KEYS, who: str, request: dict[str, Any], *, version: str | None = None, time: str = ""
) -> dict[str, Any]:
    """``who``'s signed approval of ``request`` (over ``version``, default the request's)."""
    record = RequestRecord(**request)
    version = record.policy_version or "" if version is None else version
    time = time or iso(utc_now())
    data = approval_statement(record, version, time)
    signature = Signer(keys[who], agent=False).sign(data, NAMESPACE_APPROVE).decode()
    return {"time": time, "policy_version": version, "signature": signature}


def approvals_of(server: ServerProc, keys: KEYS, request_id: str) -> list[str]:
    shown = server.read(keys["dave"], f"/v1/requests/{request_id}")
    assert shown.status == 200, shown
    return [a["approver"] for a in shown.json["approvals"]]


def status_of(server: ServerProc, request_id: str) -> str:
    app = open_app(server.app_dir)
    try:
        return app.store.get_request(request_id).status
    finally:
        app.close()


def test_a_session_token_does_not_authorise_an_acting_call(
    server: ServerProc, server_keys: KEYS
) -> None:
    """A read token in ``Authorization`` is no signature: an approval carrying only a token
    is refused (401), recorded nowhere, and audited."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    assert created.status == 201, created
    rid = created.json["request"]["id"]
    token = server.token(server_keys["bob"])
    body = json.dumps(approval_body(server_keys, "bob", created.json["request"])).encode()
    path = f"/v1/requests/{rid}/approvals"
    answer = server.call("POST", path, body=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 401, answer
    assert approvals_of(server, server_keys, rid) == []
    refused = events(server.app_dir, "auth.refused")
    assert refused[-1].payload["path"] == path
    assert "must be signed" in refused[-1].payload["reason"]


def test_an_approval_is_bound_to_its_request(server: ServerProc, server_keys: KEYS) -> None:
    """bob's approval of one request, sent (in a fresh signed call) to another request for
    the very same plan, is refused: the signature names the request."""
    plan = plan_json(server.app_dir)
    first = ask(server, server_keys, "alice", plan)
    second = ask(server, server_keys, "alice", plan)
    assert first.status == second.status == 201
    body = approval_body(server_keys, "bob", first.json["request"])
    other = second.json["request"]["id"]
    answer = server.signed(server_keys["bob"], "POST", f"/v1/requests/{other}/approvals", body)
    assert answer.status == 403, answer
    assert approvals_of(server, server_keys, other) == []
    assert events(server.app_dir, "approval.refused")[-1].actor != "bob"  # by key, unverified


def test_an_approval_for_another_policy_version_is_refused(
    server: ServerProc, server_keys: KEYS
) -> None:
    """An approval signed over another policy version is refused whether the body names
    that version (409) or claims the server's (the signature then fails, 403)."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    request = created.json["request"]
    path = f"/v1/requests/{request['id']}/approvals"
    stale = approval_body(server_keys, "bob", request, version="sha256:" + "0" * 64)
    answer = server.signed(server_keys["bob"], "POST", path, stale)
    assert answer.status == 409, answer
    assert "policy version" in answer.error["message"]
    lying = {**stale, "policy_version": request["policy_version"]}
    answer = server.signed(server_keys["bob"], "POST", path, lying)
    assert answer.status == 403, answer
    assert approvals_of(server, server_keys, request["id"]) == []


def test_nobody_sends_another_persons_approval(server: ServerProc, server_keys: KEYS) -> None:
    """carol cannot send an approval bob signed: the approval's key must sign the call."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    request = created.json["request"]
    body = approval_body(server_keys, "bob", request)
    path = f"/v1/requests/{request['id']}/approvals"
    answer = server.signed(server_keys["carol"], "POST", path, body)
    assert answer.status == 403, answer
    assert approvals_of(server, server_keys, request["id"]) == []


def test_a_denial_needs_the_right_to_approve(server: ServerProc, server_keys: KEYS) -> None:
    """dave (oncall, not allowed to approve migrate) cannot deny alice's request: 403, the
    request stays pending, and the policy's refusal is in the audit log under dave."""
    plan = plan_json(server.app_dir)
    created = ask(server, server_keys, "alice", plan)
    rid = created.json["request"]["id"]
    body = {"reason": "no", **signed_statement(server_keys, "dave", plan, "deny", request_id=rid)}
    answer = server.signed(server_keys["dave"], "POST", f"/v1/requests/{rid}/denials", body)
    assert answer.status == 403, answer
    assert status_of(server, rid) == "pending"
    decided = events(server.app_dir, "access.decided")[-1]
    assert (decided.actor, decided.payload["allowed"]) == ("dave", False)
    assert events(server.app_dir, "request.denied") == []


def test_a_denial_statement_is_bound_to_its_request(server: ServerProc, server_keys: KEYS) -> None:
    """bob's signed denial of one request, sent to another, denies nothing (400)."""
    plan = plan_json(server.app_dir)
    first = ask(server, server_keys, "alice", plan).json["request"]["id"]
    second = ask(server, server_keys, "alice", plan).json["request"]["id"]
    body = {"reason": "no", **signed_statement(server_keys, "bob", plan, "deny", request_id=first)}
    answer = server.signed(server_keys["bob"], "POST", f"/v1/requests/{second}/denials", body)
    assert answer.status == 400, answer
    assert status_of(server, second) == "pending"


def test_people_edited_on_the_servers_disk_change_nothing(
    server: ServerProc, server_keys: KEYS
) -> None:
    """mallory added to the checkout's allowed signers while the server runs still cannot
    call it: every call is checked against the pinned people, not the disk."""
    people = server.app_dir / "people" / "allowed_signers"
    people.write_text(signers_text(server_keys) + signers_text(server_keys, {"mallory": "dba"}))
    answer = server.signed(server_keys["mallory"], "POST", "/v1/session")
    assert answer.status == 401, answer
    assert events(server.app_dir, "auth.refused")[-1].payload["path"] == "/v1/session"


def test_shown_params_are_the_hashed_documents(server: ServerProc, server_keys: KEYS) -> None:
    """A client that sends readable params other than its plan document's cannot get them
    stored or audited: the request and its ``request.created`` event show the document's."""
    plan = plan_json(server.app_dir, target="0042")
    plan["params"] = {"target": "latest"}  # a lie beside the hashed document
    created = ask(server, server_keys, "alice", plan)
    assert created.status == 201, created
    assert created.json["request"]["plan"]["params"] == {"target": "0042"}
    assert events(server.app_dir, "request.created")[-1].payload["params"] == {"target": "0042"}


def test_an_approval_time_that_is_no_timestamp_is_refused_cleanly(
    server: ServerProc, server_keys: KEYS
) -> None:
    """An approval whose signed time is not a UTC timestamp (garbage, or no time zone) is
    refused as bad input, over the API and from the console, never a server crash (500)."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    request = created.json["request"]
    path = f"/v1/requests/{request['id']}/approvals"
    bob = console_login(server, server_keys["bob"])
    for time in ("garbage", "2026-12-06T23:00:00"):
        body = approval_body(server_keys, "bob", request, time=time)
        answer = server.signed(server_keys["bob"], "POST", path, body)
        assert answer.status in (400, 409), answer
        page = server.call("GET", f"/console/requests/{request['id']}", headers=bob)
        form = {"csrf": csrf_of(page), "time": time, "signature": body["signature"]}
        answer = console_post(server, f"/console/requests/{request['id']}/approve", form, bob)
        assert answer.status in (400, 409), answer
    assert approvals_of(server, server_keys, request["id"]) == []
    assert "crashed" not in server.output()


def test_deeply_nested_json_is_bad_input(server: ServerProc, server_keys: KEYS) -> None:
    """A signed body nested thousands deep, or a plan document nested just below the JSON
    parser's limit, is answered as bad input (4xx), never a crash."""
    plan = plan_json(server.app_dir)
    deep: Any = 0
    for _ in range(900):
        deep = [deep]
    plan["document"]["argv"] = deep
    body = {"plan": plan, "plan_hash": plan["hash"], **signed_statement(server_keys, "alice", plan)}
    answer = server.signed(server_keys["alice"], "POST", "/v1/requests", body)
    assert 400 <= answer.status < 500, answer
    raw = b'{"plan": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    from _serverproc import signed_headers

    headers = signed_headers(server_keys["alice"], "POST", "/v1/requests", raw, server.server_id)
    answer = server.call("POST", "/v1/requests", body=raw, headers=headers)
    assert answer.status == 400, answer
    assert "crashed" not in server.output()


def console_login(server: ServerProc, key: Path) -> dict[str, str]:
    """The Cookie header of a console session opened with a login link ``key`` signed."""
    from oneoff._weblogin import login_link, login_statement

    link = login_link("http://x", login_statement(server.server_id), Signer(key, agent=False))
    answer = console_post(server, "/console/login", {"token": link.split("#", 1)[1]}, {})
    assert answer.status == 303, answer
    return {"Cookie": answer.headers["set-cookie"].split(";", 1)[0]}


def console_post(
    server: ServerProc, path: str, form: dict[str, str], headers: dict[str, str]
) -> Response:
    """A form POST as the console's own page sends it (our Origin)."""
    sent = {
        **headers,
        "Origin": f"http://{server.host}:{server.port}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = urllib.parse.urlencode(form).encode()
    return server.call("POST", path, body=body, headers=sent)


def csrf_of(page: Response) -> str:
    return page.raw.decode().split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_a_console_approval_is_the_sessions_own(server: ServerProc, server_keys: KEYS) -> None:
    """carol's console session cannot record an approval bob's key signed (as the API
    refuses a call carrying another person's approval): 403, nothing recorded, audited."""
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    request = created.json["request"]
    carol = console_login(server, server_keys["carol"])
    page = server.call("GET", f"/console/requests/{request['id']}", headers=carol)
    assert page.status == 200, page
    form = {"csrf": csrf_of(page), **approval_body(server_keys, "bob", request)}
    del form["policy_version"]
    answer = console_post(server, f"/console/requests/{request['id']}/approve", form, carol)
    assert answer.status == 403, answer
    assert approvals_of(server, server_keys, request["id"]) == []
    assert events(server.app_dir, "approval.refused")[-1].actor == "carol"
    # bob's own session records the same signature.
    bob = console_login(server, server_keys["bob"])
    page = server.call("GET", f"/console/requests/{request['id']}", headers=bob)
    form["csrf"] = csrf_of(page)
    answer = console_post(server, f"/console/requests/{request['id']}/approve", form, bob)
    assert answer.status == 303, answer
    assert approvals_of(server, server_keys, request["id"]) == ["bob"]


def test_every_html_answer_carries_the_csp(server: ServerProc, server_keys: KEYS) -> None:
    """Console error pages (an unknown request, a refused POST, a bad login) are HTML with
    the same Content-Security-Policy and nosniff as every other page."""
    bob = console_login(server, server_keys["bob"])
    answers = [
        server.call("GET", "/console/requests/qnope", headers=bob),
        server.call("GET", "/console/runs/rnope", headers=bob),
        server.call("GET", "/console/runs", query="status=bogus", headers=bob),
        console_post(server, "/console/requests/qnope/deny", {"csrf": "x"}, bob),
        console_post(server, "/console/login", {"token": "garbage"}, {}),
    ]
    for answer in answers:
        assert answer.headers["content-type"].startswith("text/html"), answer
        assert answer.status >= 400, answer
        assert "default-src 'none'" in answer.headers["content-security-policy"], answer
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_no_secret_reaches_the_servers_log_or_an_answer(
    server: ServerProc, server_keys: KEYS
) -> None:
    """Tokens, cookies, signatures and the production password appear in no server log
    line and no error body, whatever calls (good and refused) were made."""
    token = server.token(server_keys["bob"])
    cookie = console_login(server, server_keys["bob"])["Cookie"].split("=", 1)[1]
    created = ask(server, server_keys, "alice", plan_json(server.app_dir))
    rid = created.json["request"]["id"]
    body = approval_body(server_keys, "bob", created.json["request"])
    answers = [
        created,
        server.read(token, "/v1/requests", query=f"status=all&token={token}"),
        server.read(token + "x", f"/v1/requests/{rid}"),
        server.call("GET", f"/v1/requests/{rid}", query=f"access_token={token}"),
        server.signed(server_keys["mallory"], "POST", f"/v1/requests/{rid}/approvals", body),
        server.signed(server_keys["bob"], "POST", f"/v1/requests/{rid}/approvals", body),
    ]
    secrets = [token, cookie, "prod-pass-999"]
    texts = [server.output(), *(a.raw.decode() for a in answers[1:])]
    for secret in secrets:
        for text in texts:
            assert secret not in text
    refusals = [json.dumps(e.payload) for e in events(server.app_dir, "auth.refused")]
    assert len(refusals) >= 3
    for secret in secrets:
        assert not any(secret in r for r in refusals)
