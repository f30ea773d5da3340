"""Calls racing on a real server process over PostgreSQL: a nonce and an approval are each
taken once, though neither write queues for the store-wide write lock any more."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from _serverproc import Response, ServerProc, signed_headers
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

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KEYS = dict[str, Path]
RACERS = 8


def at_once(server: ServerProc, path: str, body: bytes, headers: dict[str, str]) -> list[int]:
    """The statuses of RACERS threads sending the same call, released together."""
    start, statuses = threading.Barrier(RACERS), []
    lock = threading.Lock()

    def send() -> None:
        start.wait()
        status = server.call("POST", path, body=body, headers=headers).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return sorted(statuses)


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_one_signed_call_sent_by_many_at_once_works_once(
    server: ServerProc, server_keys: KEYS
) -> None:
    """Eight copies of one signed call racing: one answered, seven refused as replays."""
    body = b"{}"
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", body, server.server_id)
    assert at_once(server, "/v1/session", body, headers) == [200] + [409] * (RACERS - 1)


def ask(server: ServerProc, keys: KEYS, app_dir: Path) -> dict[str, Any]:
    app = open_app(app_dir)
    try:
        plan = make_plan(app, RunRequest("migrate", "production")).to_json()
    finally:
        app.close()
    doc = plan["document"]
    statement = request_statement(
        "request", app=doc["app"], task=doc["task"], environment=doc["environment"],
        plan_hash=plan["hash"],
    )  # fmt: skip
    signature = Signer(keys["alice"], agent=False).sign(
        canonical_json(statement), NAMESPACE_REQUEST
    )
    body = {"plan": plan, "plan_hash": plan["hash"], "statement": statement,
            "signature": signature.decode()}  # fmt: skip
    answer: Response = server.signed(keys["alice"], "POST", "/v1/requests", body)
    assert answer.status == 201, answer
    return dict(answer.json["request"])


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_one_approval_sent_by_many_at_once_is_recorded_once(
    server: ServerProc, server_keys: KEYS, server_app: Path
) -> None:
    """Eight calls carrying bob's one approval, each its own signed call, racing: one
    approval is recorded; the others are refused and nothing else is stored."""
    import json

    request = RequestRecord(**ask(server, server_keys, server_app))
    version, when = request.policy_version or "", iso(utc_now())
    data = approval_statement(request, version, when)
    signature = Signer(server_keys["bob"], agent=False).sign(data, NAMESPACE_APPROVE).decode()
    path = f"/v1/requests/{request.id}/approvals"
    body = json.dumps({"time": when, "policy_version": version, "signature": signature}).encode()
    start, statuses, lock = threading.Barrier(RACERS), [], threading.Lock()

    def send() -> None:  # each call its own envelope (nonce): only the approval is shared
        headers = signed_headers(server_keys["bob"], "POST", path, body, server.server_id)
        start.wait()
        status = server.call("POST", path, body=body, headers=headers).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert statuses.count(201) == 1, statuses
    assert all(400 <= s < 500 for s in statuses if s != 201), statuses
    shown = server.read(server_keys["bob"], f"/v1/requests/{request.id}")
    assert [a["approver"] for a in shown.json["approvals"]] == ["bob"]
