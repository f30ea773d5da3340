"""Requests and approvals: a person asks for one exact plan, others sign it.

An approval is an SSHSIG (namespace ``oneoff-approve``) over the canonical JSON of
``{request, task, environment, plan_hash, policy_version, time}`` (see
``oneoff._identity.approval_statement``). Checking that the approvals of a request make
its quorum, and spending them on one run, is ``oneoff._auth.quorum``'s part; its names
are importable from here too.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import secrets
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from oneoff._access import approval_rule, approval_ttl
from oneoff._auth.quorum import check_approvals, spend
from oneoff._identity import (
    NAMESPACE_APPROVE,
    Principal,
    Signer,
    approval_statement,
    iso,
    os_user,
    parse_iso,
    utc_now,
)
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff.errors import ApprovalError, NotPermitted, OneoffError

if TYPE_CHECKING:
    from oneoff._auth.gate import Gate
    from oneoff._auth.shown import ShownPlan
    from oneoff._plan import Plan
    from oneoff._store.interface import Store

__all__ = [
    "approval_statement",
    "approve",
    "check_approvals",
    "check_denial_reason",
    "create_request",
    "deny",
    "record_approval",
    "record_denial",
    "review",
    "spend",
]


def create_request(gate: Gate, plan: Plan, signer: Signer | None) -> RequestRecord:
    """Record a pending request for ``plan``, made by the person whose key signed it."""
    env, task = plan.environment, plan.task
    principal = gate.identify(
        signer, "request", task=task.name, environment=env, plan_hash=plan.hash
    )
    # Asking for approval is planning to run: plan, and what the run itself will ask.
    gate.decide_operation(principal, "request", task, env, plan_hash=plan.hash)
    now = utc_now()
    shown = plan.to_json()
    # argv as the document shows it: a secret that reached argv is redacted there.
    shown.update({"argv": shown["document"]["argv"], "release": plan.release_id})
    record = RequestRecord(
        id=f"q{now:%Y%m%d%H%M%S}{secrets.token_hex(4)}",
        task=task.name,
        environment=env.name,
        plan_hash=plan.hash,
        plan=shown,
        requester=principal.name,
        created_at=iso(now),
        status="pending",
        policy_version=gate.version,
    )
    store = gate.app.store
    with store.tx():
        store.create_request(record)
    rule = approval_rule(task, env)
    gate.app.audit.append(
        "request.created",
        actor=principal.name,
        environment=env.name,
        task=task.name,
        plan_hash=plan.hash,
        payload={
            "request": record.id,
            "params": plan.public_params,
            "quorum": rule.describe() if rule else None,
        },
    )
    return record


def review(gate: Gate, request_id: str) -> tuple[RequestRecord, ShownPlan]:
    """The request and the plan an approver is shown, checked against the plan hash they
    will sign; a stored plan that does not match is refused (audited, exit 4)."""
    request = gate.app.store.get_request(request_id)
    return request, _checked(gate, request, actor=os_user())


def _checked(gate: Gate, request: RequestRecord, *, actor: str) -> ShownPlan:
    from oneoff._auth.shown import shown_plan

    try:
        return shown_plan(gate.app, request)
    except ApprovalError as exc:
        gate.refuse(
            exc, "approval.refused", actor=actor, environment=request.environment,
            task=request.task, plan_hash=request.plan_hash, payload={"request": request.id},
        )  # fmt: skip


def approve(gate: Gate, request_id: str, signer: Signer) -> ApprovalRecord:
    """Sign ``request_id``'s plan with the approver's key and record the approval."""
    request, _shown = review(gate, request_id)
    time = iso(utc_now())
    signature = signer.sign(approval_statement(request, gate.version, time), NAMESPACE_APPROVE)
    return record_approval(gate, request, signature.decode("ascii"), time)


class CallNonce(Protocol):
    """A signed API call's nonce, spent with the approval it carries (a server's
    ``PendingNonce``): ``spend`` is False for a replay, refused with ``error``."""

    spent: bool
    replayed: bool

    def spend_approving(self, store: Store, approval: ApprovalRecord) -> tuple[bool, bool]: ...

    def refusal(self) -> dict[str, Any]: ...

    def error(self) -> Exception: ...


def record_approval(
    gate: Gate,
    request: RequestRecord,
    signature: str,
    time: str,
    *,
    nonce: CallNonce | None = None,
) -> ApprovalRecord:
    """Check and store an approval signed elsewhere (a server receives it this way). A
    server's ``nonce`` is spent in the transaction that stores the approval and audits it:
    one durable commit for the whole call, all of it or none."""
    from oneoff._auth.gate import MAX_SKEW, _key_of
    from oneoff._auth.sshsig import verify

    project = gate.app.project
    task, env = project.task(request.task), project.environment(request.environment)
    where: dict[str, Any] = {
        "environment": env.name,
        "task": task.name,
        "plan_hash": request.plan_hash,
        "payload": {"request": request.id},
    }
    now = utc_now()
    try:
        person = verify(
            approval_statement(request, gate.version, time),
            signature,
            namespace=NAMESPACE_APPROVE,
            allowed=gate.signers,
            now=now,
        )
    except NotPermitted as exc:
        gate.refuse(exc, "approval.refused", actor=_key_of(signature), **where)
    # What the approver saw must be what the plan hash stands for (a server shows it too).
    _checked(gate, request, actor=person.name)
    try:
        when: _dt.datetime | None = parse_iso(time)
    except ValueError:
        when = None
    problem = None
    if when is None or when.tzinfo is None:
        # Signed, but no timestamp: refused like a stale one, never a crash.
        problem = f"the approval's time {time[:40]!r} is not a UTC timestamp"
    elif abs(now - when) > MAX_SKEW:
        problem = f"the approval's time {time} is more than 5 minutes from ours"
    elif request.status != "pending":
        problem = f"request {request.id} is {request.status}, not pending"
    elif person.name == request.requester:
        problem = f"{person.name} requested {request.id} and cannot approve it (self-approval)"
    elif request.policy_version != gate.version:
        problem = f"the policies or people changed since {request.id} was made; request again"
    rule = approval_rule(task, env)
    if problem is None and rule and rule.group and rule.group not in person.groups:
        problem = f"{person.name} is not in group {rule.group!r} ({rule.describe()})"
    if problem is not None or when is None:
        gate.refuse(ApprovalError(str(problem)), "approval.refused", actor=person.name, **where)
    principal = Principal(person.name, person.groups, person.fingerprint)
    # Cedar's decisions are audited with the approval's outcome in one commit (a server
    # records hundreds of approvals a second: one durable commit each, not two).
    decided: list[dict[str, Any]] = []
    try:
        gate.decide_operation(
            principal, "approve", task, env, plan_hash=request.plan_hash, audit_into=decided
        )
    except NotPermitted as exc:
        _refuse(gate, decided, exc, actor=person.name, **where)
    record = ApprovalRecord(
        request_id=request.id,
        approver=person.name,
        plan_hash=request.plan_hash,
        signature=signature,
        created_at=time,
        # Shown to people only: quorum.py recomputes the expiry from the signed time.
        expires_at=iso(when + _dt.timedelta(seconds=approval_ttl(gate.config, env))),
    )
    approved = {
        "kind": "request.approved",
        "actor": person.name,
        **where,
        "payload": {"request": request.id, "expires_at": record.expires_at,
                    "key": person.fingerprint},
    }  # fmt: skip
    refused: list[Exception] = []

    def write(store: Store) -> list[dict[str, Any]]:
        # In one transaction with its audit: spend the call's nonce, store the approval
        # (one INSERT that refuses a second one by the same person on its own), audit the
        # decisions and the outcome. Decided from row counts: nothing here raises to say no.
        refused.clear()
        if nonce is None:
            added = store.add_approval(record)
        else:
            fresh, added = nonce.spend_approving(store, record)
            if not fresh:
                refused.append(nonce.error())
                return [nonce.refusal()]
        if not added:
            error = ApprovalError(f"{person.name} already approved {request.id}; one approval each")
            refused.append(error)
            return [*decided, _refusal(error, actor=person.name, **where)]
        return [*decided, approved]

    try:
        gate.app.audit.append_with(write)
    except BaseException:
        if nonce is not None:  # rolled back with the rest: not spent
            nonce.spent = nonce.replayed = False
        with contextlib.suppress(OneoffError):  # the store may be gone: its error says so
            gate.app.audit.append_all(decided)
        raise
    if refused:
        raise refused[0]
    return record


def _refuse(
    gate: Gate, decided: list[dict[str, Any]], error: OneoffError, **fields: Any
) -> NoReturn:
    """Audit the decisions made so far and the refusal (one commit), then raise it."""
    gate.app.audit.append_all([*decided, _refusal(error, **fields)])
    raise error


def _refusal(error: OneoffError, **fields: Any) -> dict[str, Any]:
    """The ``approval.refused`` event of ``error`` (``AuditLog.append_all``'s form)."""
    payload = {"reason": error.message, **fields.get("payload", {})}
    return {"kind": "approval.refused", **fields, "payload": payload}


# A reason is a sentence for the audit log and the requester, not a report.
MAX_DENIAL_REASON = 2000


def check_denial_reason(reason: str) -> str:
    """``reason`` when it is one line of plain text, else a UsageError (exit 2, HTTP 400).

    Requesters, approvers and auditors read it on their terminals and in the console:
    an escape sequence, a newline or a bidi override there could hide or forge what it
    says (oneoff._text)."""
    from oneoff._text import check_text

    return check_text(reason, "a denial reason", max_length=MAX_DENIAL_REASON)


def deny(gate: Gate, request_id: str, signer: Signer, reason: str) -> RequestRecord:
    """Refuse a request (an approver), or withdraw it (its requester)."""
    check_denial_reason(reason)
    store = gate.app.store
    request = store.get_request(request_id)
    task = gate.app.project.task(request.task)
    env = gate.app.project.environment(request.environment)
    principal = gate.identify(
        signer,
        "deny",
        task=task.name,
        environment=env,
        plan_hash=request.plan_hash,
        request_id=request.id,
    )
    record_denial(gate, principal, request, reason)
    return request


def record_denial(
    gate: Gate,
    principal: Principal,
    request: RequestRecord,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Deny (an approver, whom the policy must let approve) or withdraw (the requester) a
    pending request as ``principal``, already authenticated; audited with ``extra``."""
    check_denial_reason(reason)  # every path: CLI, API, console
    project, store = gate.app.project, gate.app.store
    task, env = project.task(request.task), project.environment(request.environment)
    if principal.name != request.requester:
        gate.decide_operation(principal, "approve", task, env, plan_hash=request.plan_hash)
    with store.tx():
        changed = store.set_request_status(request.id, "denied", expect="pending")
    if not changed:
        raise ApprovalError(f"request {request.id} is {request.status}, not pending")
    from oneoff._known_secrets import known_secrets

    # Requesters, approvers and auditors read it: a secret pasted into it is redacted like
    # in every other text oneoff stores (the environment's dotenv secrets: nothing is run).
    reason = known_secrets(gate.app, env).redact_text(reason)
    gate.app.audit.append(
        "request.denied",
        actor=principal.name,
        environment=env.name,
        task=task.name,
        plan_hash=request.plan_hash,
        payload={"request": request.id, "reason": reason, **(extra or {})},
    )
