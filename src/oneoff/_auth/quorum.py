"""The quorum of a request: which approvals still count, and spending them exactly once.

An approval is void when it expired (its signed time plus the environment's TTL), was
used, the plan's hash or the policy version changed, the approver is the requester, left
the required group, or their key left the allowed signers. Each is re-checked at run
time, not trusted from when it was recorded.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._access import approval_rule, approval_ttl
from oneoff._identity import (
    NAMESPACE_APPROVE,
    Principal,
    approval_statement,
    iso,
    parse_iso,
    utc_now,
)
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff.errors import ApprovalError, NotPermitted

if TYPE_CHECKING:
    from oneoff._auth.gate import Gate
    from oneoff._manifest import Environment
    from oneoff._plan import HashedPlan

__all__ = ["check_approvals", "spend"]


def check_approvals(
    gate: Gate, request: RequestRecord, plan: HashedPlan, principal: Principal
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
        problem = _approval_problem(
            gate, request, approval, rule.group if rule else None, plan.environment
        )
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
    gate: Gate,
    request: RequestRecord,
    approval: ApprovalRecord,
    group: str | None,
    environment: Environment,
) -> str | None:
    from oneoff._auth.gate import MAX_SKEW
    from oneoff._auth.sshsig import verify

    if approval.used:
        return "already used"
    # The expiry is the signed time (checked by the signature below) plus this
    # environment's TTL from oneoff.toml: the store's expires_at column is only a display
    # copy, and editing it cannot keep an approval alive.
    try:
        signed_at = parse_iso(approval.created_at)
    except ValueError:
        return "its time is not a timestamp"
    if signed_at.tzinfo is None:
        return "its time carries no time zone"
    now = utc_now()
    expires = signed_at + _dt.timedelta(seconds=approval_ttl(gate.config, environment))
    if expires <= now:
        return f"expired at {iso(expires)}"
    if signed_at > now + MAX_SKEW:
        return f"signed for a time in the future ({approval.created_at})"
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
