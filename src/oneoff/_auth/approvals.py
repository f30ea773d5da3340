"""Requests and approvals: others sign one exact plan; a run spends the quorum exactly once.

An approval is an SSHSIG (namespace ``oneoff-approve``) over the canonical JSON of
``{request, task, environment, plan_hash, policy_version, time}``. It is void when it
expired, was used, the plan's hash or the policy version changed, the approver is the
requester, left the required group, or their key left the allowed signers.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._access import approval_rule
from oneoff._canonical import canonical_json
from oneoff._identity import NAMESPACE_APPROVE, Principal, Signer, iso, utc_now
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff.errors import ApprovalError, NotPermitted

if TYPE_CHECKING:
    from oneoff._auth.gate import Gate
    from oneoff._plan import Plan

__all__ = [
    "approval_statement",
    "approve",
    "check_approvals",
    "create_request",
    "deny",
    "record_approval",
    "spend",
]


def _parse(stamp: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def create_request(gate: Gate, plan: Plan, signer: Signer | None) -> RequestRecord:
    """Record a pending request for ``plan``, made by the person whose key signed it."""
    env, task = plan.environment, plan.task
    principal = gate.identify(
        signer, "request", task=task.name, environment=env, plan_hash=plan.hash
    )
    gate.decide(principal, "run", task, env, plan_hash=plan.hash)
    now = utc_now()
    shown = plan.to_json()
    shown.update({"argv": list(plan.argv), "release": plan.release_id})
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


def approval_statement(request: RequestRecord, policy_version: str, time: str) -> bytes:
    """The bytes an approver signs: one request, one plan hash, one policy version."""
    return canonical_json(
        {
            "oneoff_approval": 1,
            "request": request.id,
            "task": request.task,
            "environment": request.environment,
            "plan_hash": request.plan_hash,
            "policy_version": policy_version,
            "time": time,
        }
    )


def approve(gate: Gate, request_id: str, signer: Signer) -> ApprovalRecord:
    """Sign ``request_id``'s plan with the approver's key and record the approval."""
    request = gate.app.store.get_request(request_id)
    time = iso(utc_now())
    signature = signer.sign(approval_statement(request, gate.version, time), NAMESPACE_APPROVE)
    return record_approval(gate, request, signature.decode("ascii"), time)


def record_approval(
    gate: Gate, request: RequestRecord, signature: str, time: str
) -> ApprovalRecord:
    """Check and store an approval signed elsewhere (a server receives it this way)."""
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
    when = _parse(time)
    problem = None
    if abs(now - when) > MAX_SKEW:
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
    if problem is not None:
        gate.refuse(ApprovalError(problem), "approval.refused", actor=person.name, **where)
    principal = Principal(person.name, person.groups, person.fingerprint)
    try:
        gate.decide(principal, "approve", task, env, plan_hash=request.plan_hash)
    except NotPermitted as exc:
        gate.refuse(exc, "approval.refused", actor=person.name, **where)
    record = ApprovalRecord(
        request_id=request.id,
        approver=person.name,
        plan_hash=request.plan_hash,
        signature=signature,
        created_at=time,
        expires_at=iso(when + _dt.timedelta(seconds=gate.config.approval_ttl)),
    )
    store = gate.app.store
    with store.tx():
        added = store.add_approval(record)
    if not added:
        error = ApprovalError(f"{person.name} already approved {request.id}; one approval each")
        gate.refuse(error, "approval.refused", actor=person.name, **where)
    gate.app.audit.append(
        "request.approved",
        actor=person.name,
        **{
            **where,
            "payload": {
                "request": request.id,
                "expires_at": record.expires_at,
                "key": person.fingerprint,
            },
        },
    )
    return record


def deny(gate: Gate, request_id: str, signer: Signer, reason: str) -> RequestRecord:
    """Refuse a request (an approver), or withdraw it (its requester)."""
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
    if principal.name != request.requester:
        gate.decide(principal, "approve", task, env, plan_hash=request.plan_hash)
    with store.tx():
        changed = store.set_request_status(request.id, "denied", expect="pending")
    if not changed:
        raise ApprovalError(f"request {request.id} is {request.status}, not pending")
    gate.app.audit.append(
        "request.denied",
        actor=principal.name,
        environment=env.name,
        task=task.name,
        plan_hash=request.plan_hash,
        payload={"request": request.id, "reason": reason},
    )
    return request


def check_approvals(
    gate: Gate, request: RequestRecord, plan: Plan, principal: Principal
) -> list[str]:
    """The approvers whose valid approvals make the quorum; ApprovalError (audited) if not."""
    where: dict[str, Any] = {
        "environment": plan.environment.name,
        "task": plan.task.name,
        "plan_hash": plan.hash,
        "payload": {"request": request.id},
    }

    def refuse(message: str) -> None:
        gate.refuse(ApprovalError(message), "approval.refused", actor=principal.name, **where)

    if request.status == "used":
        refuse(
            f"request {request.id} was already used by run {request.used_by_run}; "
            "approvals are single-use: request again"
        )
    if request.status != "pending":
        refuse(f"request {request.id} is {request.status}")
    if principal.name != request.requester:
        refuse(f"request {request.id} belongs to {request.requester}, not {principal.name}")
    if (request.task, request.environment) != (plan.task.name, plan.environment.name):
        refuse(f"request {request.id} is for {request.task} in {request.environment}")
    if plan.hash != request.plan_hash:
        changed = _changed_fields(request.plan.get("document", {}), plan.document())
        refuse(
            f"the plan changed since request {request.id} ({', '.join(changed) or 'hash'} "
            "differ): its approvals are void; request again"
        )
    if request.policy_version != gate.version:
        refuse(
            f"the policies or people changed since request {request.id}: its approvals "
            "are void; request again"
        )
    rule = approval_rule(plan.task, plan.environment)
    quorum = rule.quorum if rule else 1
    valid, void = [], []
    for approval in gate.app.store.approvals_for(request.id):
        problem = _approval_problem(gate, request, approval, rule.group if rule else None)
        if problem:
            void.append(f"{approval.approver} ({problem})")
        else:
            valid.append(approval.approver)
    if len(valid) < quorum:
        need = rule.describe() if rule else "1 approval"
        refuse(
            f"request {request.id} has {len(valid)} valid approval(s), needs {need}"
            + (f"; void: {', '.join(void)}" if void else "")
        )
    return valid


def _approval_problem(
    gate: Gate, request: RequestRecord, approval: ApprovalRecord, group: str | None
) -> str | None:
    from oneoff._auth.sshsig import verify

    if approval.used:
        return "already used"
    if _parse(approval.expires_at) <= utc_now():
        return f"expired at {approval.expires_at}"
    if approval.approver == request.requester:
        return "self-approval"
    try:
        person = verify(
            approval_statement(request, gate.version, approval.created_at),
            approval.signature,
            namespace=NAMESPACE_APPROVE,
            allowed=gate.signers,
        )
    except NotPermitted as exc:
        return exc.message
    if person.name != approval.approver:
        return f"signed by {person.name}"
    if group and group not in person.groups:
        return f"no longer in group {group!r}"
    return None


def _changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def spend(gate: Gate, request: RequestRecord, run_id: str, approvers: Sequence[str]) -> None:
    """Use the request and its approvals for ``run_id``; a second use is refused."""
    store = gate.app.store
    with store.tx():
        spent = store.use_request(request.id, run_id, approvers)
    if not spent:
        gate.refuse(
            ApprovalError(f"request {request.id} was used by another run meanwhile"),
            "approval.refused",
            actor=request.requester,
            task=request.task,
            environment=request.environment,
            payload={"request": request.id},
        )
