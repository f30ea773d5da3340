"""`oneoff request|approve|deny|requests --server URL`: the access commands against a server.

What is signed never changes: the request statement (namespace ``oneoff``), the approval
over the plan hash (``oneoff-approve``) and the deny statement are made and signed here,
ride inside the body, and are what the server verifies and keeps. An approver is shown the
plan only after this client has checked the document the server sent against the plan
hash it is about to sign (``shown_plan``): a server cannot show one plan and collect an
approval of another. Output and exit codes are those of local mode (``cli/_access.py``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from oneoff._record import fields
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff.cli._common import emit_json, on_terminal, terminal_safe
from oneoff.errors import StoreError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._client.remote import Remote

__all__ = ["remote_approve", "remote_deny", "remote_request", "remote_requests"]

_R = TypeVar("_R")


def record(cls: type[_R], data: Any, what: str) -> _R:
    """A store record from the server's JSON (extra fields ignored; missing ones refused)."""
    if not isinstance(data, dict):
        raise StoreError(f"the server sent no {what}")
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise StoreError(f"the server sent a malformed {what}: {exc}") from None


def _get_request(remote: Remote, request_id: str) -> tuple[RequestRecord, list[Any]]:
    from oneoff._client.remote import segment

    data = remote.read(f"/v1/requests/{segment(request_id)}")
    approvals = data.get("approvals") if isinstance(data, dict) else None
    request = record(RequestRecord, (data or {}).get("request"), "request")
    return request, approvals if isinstance(approvals, list) else []


def remote_request(remote: Remote, args: argparse.Namespace, app: App) -> int:
    from oneoff._canonical import canonical_json
    from oneoff._identity import NAMESPACE_REQUEST, request_statement
    from oneoff._pipeline import RunRequest, make_plan
    from oneoff.cli._common import read_params

    signer = remote.need_signer()
    task = app.project.task(args.task)
    params = read_params(task, args.param, interactive=on_terminal())
    plan = make_plan(app, RunRequest(task=args.task, environment=args.env, params=params))
    shown = plan.to_json()
    # argv as the document shows it (a secret that reached argv is redacted there).
    shown.update({"argv": shown["document"]["argv"], "release": plan.release_id})
    statement = request_statement(
        "request", app=app.project.name, task=plan.task.name,
        environment=plan.environment.name, plan_hash=plan.hash,
    )  # fmt: skip
    signature = signer.sign(canonical_json(statement), NAMESPACE_REQUEST).decode("ascii")
    body = {"plan": shown, "plan_hash": plan.hash, "statement": statement, "signature": signature}
    answer = remote.act("/v1/requests", body)
    made = record(RequestRecord, (answer or {}).get("request"), "request")
    if args.json:
        emit_json({"id": made.id, "plan_hash": made.plan_hash, "status": made.status})
    else:
        from oneoff.cli._access import print_requested

        print_requested(made)
    return 0


def remote_approve(remote: Remote, args: argparse.Namespace, app: App) -> int:
    from oneoff._auth.shown import shown_plan
    from oneoff._client.remote import segment
    from oneoff._identity import NAMESPACE_APPROVE, approval_statement, iso, utc_now
    from oneoff.cli._access import render_request

    signer = remote.need_signer()
    request, _ = _get_request(remote, args.request)
    shown = shown_plan(app, request)  # checked here: we sign what we were shown
    sys.stdout.write(render_request(request, shown))
    if not args.yes:
        if not on_terminal():
            raise UsageError("approving needs a terminal to confirm on, or --yes")
        sys.stderr.write(f"Approve this exact plan ({request.plan_hash[:19]}…)? Type yes: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip() != "yes":
            raise UsageError("not approved")
    # The server's policy version, as local mode signs its gate's: a request made under
    # other people or policies is then refused with the same message as locally.
    version = str(remote.info().get("pinned_version") or request.policy_version or "")
    time = iso(utc_now())
    signature = signer.sign(approval_statement(request, version, time), NAMESPACE_APPROVE)
    body = {"time": time, "policy_version": version, "signature": signature.decode("ascii")}
    answer = remote.act(f"/v1/requests/{segment(request.id)}/approvals", body)
    made = record(ApprovalRecord, (answer or {}).get("approval"), "approval")
    if args.json:
        emit_json(
            {"request": made.request_id, "approver": made.approver, "expires_at": made.expires_at}
        )
    else:
        from oneoff.cli._access import print_approved

        print_approved(made)
    return 0


def remote_deny(remote: Remote, args: argparse.Namespace) -> int:
    from oneoff._auth.approvals import check_denial_reason
    from oneoff._canonical import canonical_json
    from oneoff._client.remote import segment
    from oneoff._identity import NAMESPACE_REQUEST, request_statement

    check_denial_reason(args.reason)  # exit 2 here, as locally, before anything is signed
    signer = remote.need_signer()
    request, _ = _get_request(remote, args.request)
    statement = request_statement(
        "deny", app=str(remote.info().get("app")), task=request.task,
        environment=request.environment, plan_hash=request.plan_hash, request_id=request.id,
    )  # fmt: skip
    signature = signer.sign(canonical_json(statement), NAMESPACE_REQUEST).decode("ascii")
    body = {"reason": args.reason, "statement": statement, "signature": signature}
    answer = remote.act(f"/v1/requests/{segment(request.id)}/denials", body)
    denied = record(RequestRecord, (answer or {}).get("request"), "request")
    if getattr(args, "json", False):
        emit_json({"id": denied.id, "status": "denied", "task": denied.task,
                   "env": denied.environment, "plan_hash": denied.plan_hash})  # fmt: skip
        return 0
    print(f"oneoff: request {terminal_safe(denied.id)} denied", file=sys.stderr)
    return 0


def remote_requests(remote: Remote, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows `oneoff requests` prints, from the server."""
    data = remote.read("/v1/requests", {"status": "all" if args.all else "pending"})
    items = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise StoreError(f"the server at {remote.url} sent no request list")
    rows = []
    for item in items:
        request = record(RequestRecord, (item or {}).get("request"), "request")
        approvals = [record(ApprovalRecord, a, "approval") for a in item.get("approvals") or []]
        rows.append(
            {"id": request.id, "task": request.task, "env": request.environment,
             "requester": request.requester, "created_at": request.created_at,
             "status": request.status, "approvals": [a.approver for a in approvals],
             "plan_hash": request.plan_hash}
        )  # fmt: skip
    return rows
