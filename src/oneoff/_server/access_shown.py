"""The access library's request and denial steps, with statements signed on the client.

``approvals.create_request`` and ``approvals.deny`` sign with a local key; a server
receives the statement and signature instead, and verifies them with the pinned Gate
(``Gate.authenticate``: signature, app, action, plan hash, time, single-use nonce, all
refusals audited). The rest is the library's own checks and records.

The plan's variables are fingerprinted with the server's fingerprint key (the client
fetched it, ``GET /v1/fingerprint-key``), which the server's Apps use too: a shown value is
checked against the plan's fingerprint. One it cannot check (a plan fingerprinted with
some other key) is stored masked ("****", marked unverified), never shown as if it were
the value the hash stands for.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._record import asdict
from oneoff.errors import NotPermitted, UsageError

if TYPE_CHECKING:
    from oneoff._auth.shown import ShownPlan
    from oneoff._identity import Principal
    from oneoff._server.pinning import PinnedGate
    from oneoff._store.interface import ApprovalRecord, RequestRecord

__all__ = ["checked_plan", "create_signed_request", "deny_signed", "request_json"]

UNVERIFIED = "**** (unverified: not fingerprinted with this server's key)"


def request_json(request: RequestRecord, approvals: Sequence[ApprovalRecord]) -> dict[str, Any]:
    return {"request": asdict(request), "approvals": [asdict(a) for a in approvals]}


def checked_plan(gate: PinnedGate, request: RequestRecord) -> ShownPlan:
    """The stored plan, checked against its hash (audited ApprovalError otherwise)."""
    from oneoff._auth.approvals import _checked

    return _checked(gate, request, actor="server")


def create_signed_request(
    gate: PinnedGate,
    plan: dict[str, Any],
    plan_hash: str,
    statement: dict[str, Any],
    signature: str,
    *,
    caller: Principal,
) -> RequestRecord:
    """Verify and record a request made and signed on the client."""
    from oneoff._access import approval_rule
    from oneoff._canonical import canonical_hash
    from oneoff._identity import iso, utc_now
    from oneoff._server.plan_check import check_plan_document
    from oneoff._store.interface import RequestRecord

    app = gate.app
    document = plan.get("document")
    if not isinstance(document, dict):
        raise UsageError("the plan has no plan document")
    try:
        digest = "sha256:" + canonical_hash(document)
    except (TypeError, ValueError):
        raise UsageError("the plan document is not canonical JSON (integers only)") from None
    if digest != plan_hash or plan.get("hash", plan_hash) != plan_hash:
        raise UsageError(f"the plan document hashes to {digest}, not {plan_hash}")
    if document.get("app") != app.project.name:
        raise UsageError(f"the plan is for app {document.get('app')!r}, not {app.project.name!r}")
    task = app.project.task(str(document.get("task")))
    env = app.project.environment(str(document.get("environment")))
    if not task.allowed_in(env.name):
        raise UsageError(f"task {task.name!r} is not allowed in environment {env.name!r}")
    # Approvers must never be asked to approve what the manifest does not declare (another
    # directory, other code, other settings): a grant could not spend it anyway.
    check_plan_document(task, env, document, app.fingerprint_key)
    _canonical(statement)
    principal = gate.authenticate(statement, signature, action="request", plan_hash=plan_hash)
    if principal.key != caller.key:
        raise NotPermitted(f"{caller.name} cannot send a request signed by {principal.name}")
    if statement.get("task") != task.name or statement.get("environment") != env.name:
        raise UsageError("the request statement names another task or environment")
    gate.decide_operation(principal, "request", task, env, plan_hash=plan_hash)
    now = utc_now()
    shown = {
        "hash": plan_hash,
        "document": document,
        # The document's (checked above), never the client's readable path on its machine.
        "cwd": document["cwd"],
        "env": _server_env(gate, document, plan.get("env")),
        # From the hashed document, never the client's readable copy (which it could make
        # say anything): a secret param's document entry is a fingerprint, shown masked.
        "params": _document_params(document),
        "argv": document.get("argv"),
        "release": document.get("release"),
    }
    record = RequestRecord(
        id=f"q{now:%Y%m%d%H%M%S}{secrets.token_hex(4)}",
        task=task.name,
        environment=env.name,
        plan_hash=plan_hash,
        plan=shown,
        requester=principal.name,
        created_at=iso(now),
        status="pending",
        policy_version=gate.version,
    )
    checked_plan(gate, record)  # what approvers will be shown stands for the hash
    store = app.store
    with store.tx():
        store.create_request(record)
    rule = approval_rule(task, env)
    app.audit.append(
        "request.created",
        actor=principal.name,
        environment=env.name,
        task=task.name,
        plan_hash=plan_hash,
        payload={
            "request": record.id,
            "params": shown["params"],
            "quorum": rule.describe() if rule else None,
            "via": "server",
        },
    )
    return record


def _canonical(statement: dict[str, Any]) -> None:
    """A statement that has no canonical form (a float, a huge integer) cannot have been
    signed by oneoff: bad input, refused before any check."""
    from oneoff._canonical import canonical_json

    try:
        canonical_json(statement)
    except (TypeError, ValueError):
        raise UsageError("the signed statement is not canonical JSON (integers only)") from None


def _document_params(document: dict[str, Any]) -> dict[str, Any]:
    params = document.get("params")
    if not isinstance(params, dict):
        raise UsageError("the plan document's params are malformed")
    return {name: "[secret]" if isinstance(v, dict) else v for name, v in params.items()}


def _server_env(gate: PinnedGate, document: dict[str, Any], shown: Any) -> dict[str, Any]:
    """The shown variables, each non-secret value the server cannot verify masked."""
    from oneoff._plan import fingerprint

    hashed = document.get("env")
    if not isinstance(shown, dict) or not isinstance(hashed, dict):
        raise UsageError("the plan's variables are malformed")
    key = gate.app.fingerprint_key
    out: dict[str, Any] = {}
    for name, info in shown.items():
        if not isinstance(info, dict):
            raise UsageError(f"the plan's variable {str(name)[:40]!r} is malformed")
        value, secret = str(info.get("value")), bool(info.get("secret"))
        known = name in hashed and fingerprint(key, name, value) == hashed[name]
        if name in hashed and not secret and not known:
            value = UNVERIFIED
        out[name] = {"value": value, "source": str(info.get("source")), "secret": secret}
    return out


def deny_signed(
    gate: PinnedGate,
    request: RequestRecord,
    statement: dict[str, Any],
    signature: str,
    reason: str,
    *,
    caller: Principal,
) -> RequestRecord:
    """``approvals.deny`` with the denier's statement signed on the client."""
    from oneoff._auth.approvals import check_denial_reason, record_denial

    check_denial_reason(reason)  # bad input is refused before any signature is spent
    app = gate.app
    _canonical(statement)
    principal = gate.authenticate(statement, signature, action="deny", plan_hash=request.plan_hash)
    if principal.key != caller.key:
        raise NotPermitted(f"{caller.name} cannot send a denial signed by {principal.name}")
    if statement.get("request") != request.id:
        raise UsageError(f"the denial statement is for another request, not {request.id}")
    record_denial(gate, principal, request, reason, {"via": "server"})
    return app.store.get_request(request.id)
