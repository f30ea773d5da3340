"""``POST /v1/grants``: decide a run a client planned, and grant it once, signed.

The client (a runner on a deploy host) planned the run against its verified release; the
server never sees the run's config values, only the hashed plan document. It checks that
document against its hash and against the server's OWN manifest (app, task, environment,
protection, locks, the environment's current release), identifies the person from the
statement they signed over the plan hash (``Gate.authenticate``: pinned signers, fresh
nonce), asks Cedar, re-checks the request's approvals, then in ONE transaction creates the
run, takes its locks as a lease and spends the approvals. A busy lock burns nothing: the
transaction rolls back whole.

Fencing token: the sequence number of the run's ``run.granted`` audit event, appended in
that same transaction. Audit appends are serialized, so the token of every grant of a lock
is larger than that of every earlier grant of it: a monotonic token per lock that anyone
can check against the audit log, with no counter to keep. Each run also holds a private
lock ``run:<id>``: its lease is how the server tells a live runner from a dead one, locks
or not (see ``oneoff._server.runs``).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_hash
from oneoff._clock import utc_iso
from oneoff._pipeline import audit_run, new_run_id
from oneoff._record import dataclass
from oneoff._remote.grant import GRANT_TTL, GRANT_VERSION, run_token, sign_grant
from oneoff._server.runs import object_field
from oneoff._store.interface import LockRecord, RunRecord
from oneoff.errors import ApprovalError, LockBusy, NotPermitted, ReleaseError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._auth.gate import Gate
    from oneoff._identity import Principal
    from oneoff._manifest import Environment, Task
    from oneoff._redact import Redactor
    from oneoff._server.runs import RunDesk

__all__ = ["PlanView", "issue_grant", "plan_view", "run_lock"]

REMOTE_HOST = "remote:"  # a runner host the server never checks a pid on: leases decide


def run_lock(run_id: str) -> str:
    """The lock every server-mediated run holds: its lease is the runner's liveness."""
    return "run:" + run_id


@dataclass(frozen=True)
class PlanView:
    """A client's plan as the server decides on it (``oneoff._plan.HashedPlan``)."""

    task: Task
    environment: Environment
    hash: str
    doc: Mapping[str, Any]

    def document(self) -> dict[str, Any]:
        return dict(self.doc)


def plan_view(app: App, plan: object, plan_hash: object) -> PlanView:
    """The plan a body carries, checked against its hash and the server's manifest."""
    from oneoff._server.plan_check import check_plan_document

    if not isinstance(plan, dict) or not isinstance(plan.get("document"), dict):
        raise UsageError("the body's plan must be an object with a document")
    doc = plan["document"]
    if not isinstance(plan_hash, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", plan_hash):
        raise UsageError("plan_hash must be 'sha256:' and 64 hex digits")
    try:
        digest = "sha256:" + canonical_hash(doc)
    except ValueError as exc:
        raise UsageError(f"the plan document cannot be hashed: {exc}") from None
    if digest != plan_hash or plan.get("hash", plan_hash) != plan_hash:
        raise UsageError(f"the plan document does not hash to {plan_hash} (it is {digest})")
    project = app.project
    if doc.get("app") != project.name:
        raise UsageError(
            f"the plan is for app {doc.get('app')!r}, this server serves {project.name!r}"
        )
    for name in ("task", "environment"):
        if not isinstance(doc.get(name), str):
            raise UsageError(f"the plan document has no {name}")
    task = project.task(doc["task"])
    env = project.environment(doc["environment"])
    if not task.allowed_in(env.name):
        raise UsageError(f"task {task.name!r} may not run in {env.name!r}")
    # What the server's own manifest says wins: a runner with an edited oneoff.toml cannot
    # drop a lock, unprotect an environment, run from another directory or change what the
    # task runs.
    check_plan_document(task, env, doc, app.fingerprint_key)
    current = app.store.current_release_id(env.name)
    if current is not None and doc.get("release") != current:
        raise ReleaseError(
            f"the plan is for release {doc.get('release')}, but {env.name}'s current release "
            f"on the server is {current}"
        )
    return PlanView(task=task, environment=env, hash=plan_hash, doc=doc)


class _Undo(Exception):
    """Roll the grant's transaction back: a lock was busy or the request got spent."""

    def __init__(self, busy: list[LockRecord] | None = None) -> None:
        super().__init__("undo")
        self.busy = busy


def issue_grant(
    desk: RunDesk, app: App, gate: Gate, caller: Principal | None, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Decide and grant one run; the answer carries the signed grant and the run token."""
    from oneoff._auth.grant import decide_run

    view = plan_view(app, body.get("plan"), body.get("plan_hash"))
    request_id = body.get("request")
    glass = body.get("break_glass")
    if request_id is not None and not isinstance(request_id, str):
        raise UsageError("request must be a request id")
    if glass is not None and not (isinstance(glass, dict) and isinstance(glass.get("reason"), str)):
        raise UsageError("break_glass must be an object with a reason")
    statement, signature = body.get("statement"), body.get("signature")
    if not isinstance(statement, dict) or not isinstance(signature, str):
        raise UsageError("the body needs the statement and the signature over the plan hash")
    principal = gate.authenticate(statement, signature, action="run", plan_hash=view.hash)
    if caller is not None and caller.name != principal.name:
        raise NotPermitted(
            f"the call is signed by {caller.name}, the statement by {principal.name}"
        )
    decided = decide_run(
        gate, view, principal, request_id=request_id, break_glass=glass is not None,
        reason=glass["reason"] if glass is not None else None,
    )  # fmt: skip
    runner = object_field(body, "runner")
    host = str(runner.get("host", "unknown"))[:200]
    pid: int = runner["pid"] if type(runner.get("pid")) is int else 0
    desk.reap(app)
    store = app.store
    now = _dt.datetime.now(_dt.UTC)
    run = RunRecord(
        id=new_run_id(), task=view.task.name, environment=view.environment.name,
        params=_shown_params(view, desk.redactor(app, view.environment)),
        principal=principal.name, plan_hash=view.hash,
        status="running", started_at=utc_iso(now), runner_host=REMOTE_HOST + host,
        runner_pid=pid, runner_token="", release_id=view.doc.get("release"),
        request_id=request_id, break_glass=decided.break_glass, reason=decided.reason,
    )  # fmt: skip
    names = sorted(set(view.task.locks))
    expires = utc_iso(now + _dt.timedelta(seconds=desk.lease))
    grant_id = secrets.token_hex(16)
    try:
        with store.tx():
            busy = store.lock_holders(names) if names else []
            if busy:
                raise _Undo(busy=list(busy))
            store.create_run(run)
            event = audit_run(
                app, "run.granted", run, actor=principal.name,
                payload={
                    "grant": grant_id, "locks": names, "lease_seconds": desk.lease,
                    "request": request_id, "approvals": list(decided.approvers),
                    "break_glass": decided.break_glass, "runner": {"host": host, "pid": pid},
                },
            )  # fmt: skip
            store.take_locks(
                [
                    LockRecord(
                        name, run.id, principal.name, run.runner_host, pid, run.started_at, expires
                    )
                    for name in [*names, run_lock(run.id)]
                ]
            )
            if decided.request is not None and not store.use_request(
                decided.request.id, run.id, decided.approvers
            ):
                raise _Undo()
    except _Undo as undo:
        if undo.busy:
            first = undo.busy[0]
            raise LockBusy(
                # As a local run words it (oneoff._locks.acquire): the same line either way.
                f"lock {first.name!r} is held by run {first.run_id} ({first.holder}, "
                f"pid {first.runner_pid}) since {first.acquired_at}",
                hint="wait for it: pass --wait SECONDS",
            ) from None
        gate.refuse(
            ApprovalError(f"request {request_id} was used by another run meanwhile"),
            "approval.refused", actor=principal.name, task=run.task,
            environment=run.environment, payload={"request": request_id},
        )  # fmt: skip
    if decided.break_glass:
        _announce(gate, view, principal, run, decided.reason or "")
    document = {
        "oneoff_grant": GRANT_VERSION, "id": grant_id, "server": desk.server_id,
        "app": app.project.name, "run": run.id, "plan_hash": view.hash,
        "task": run.task, "environment": run.environment, "release": run.release_id,
        "principal": principal.name, "locks": {name: event.seq for name in names},
        "fencing": event.seq, "lease_seconds": desk.lease, "issued_at": utc_iso(now),
        "expires_at": utc_iso(now + _dt.timedelta(seconds=GRANT_TTL)), "single_use": True,
    }  # fmt: skip
    key = desk.signing_key()
    return {
        "grant": document,
        "signature": sign_grant(key, document),
        "run_token": run_token(key, run.id),
        "heartbeat_seconds": max(desk.lease / 3, 0.2),
    }


def _announce(
    gate: Gate, view: PlanView, principal: Principal, run: RunRecord, reason: str
) -> None:
    """Break-glass: audited and announced before the runner gets its grant, or no run."""
    from oneoff._breakglass import announce

    store = gate.app.store
    try:
        with open(os.devnull, "wb") as sink:  # the notice is for a terminal the server lacks
            announce(gate, view, principal, run.id, reason, sink)
    except BaseException:
        with store.tx():
            store.finish_run(run.id, status="cancelled", exit_code=None, ended_at=utc_iso())
            store.drop_locks(run.id)
        raise


def _shown_params(view: PlanView, redactor: Redactor) -> dict[str, str]:
    params = view.doc.get("params")
    if not isinstance(params, dict):
        return {}
    redact = redactor.redact_text
    return {
        str(name): "[secret]" if isinstance(value, dict) else redact(str(value))
        for name, value in sorted(params.items())
    }
