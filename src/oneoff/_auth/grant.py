"""The access stages of a run: who, may they, with whose approval, holding which locks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING

from oneoff._access import access_config, approval_rule
from oneoff._identity import Principal, Signer, os_user
from oneoff._record import dataclass, field
from oneoff.errors import ApprovalError, NotPermitted, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._auth.gate import Gate
    from oneoff._locks import Lease
    from oneoff._manifest import Environment
    from oneoff._plan import HashedPlan, Plan
    from oneoff._store.interface import RequestRecord

__all__ = [
    "Grant",
    "authorize_on_app",
    "authorize_plan",
    "authorize_run",
    "decide_run",
    "open_gate",
]

SETUP_HINT = (
    "add an [access] section to oneoff.toml with people/allowed_signers (name, SSH key, "
    "groups=...) and policies/*.cedar; see the README's Access section"
)


def open_gate(app: App) -> Gate | None:
    """The app's access gate, or None for an app without ``[access]`` (zero setup)."""
    config = access_config(app.project)
    if config is None:
        return None
    from oneoff._auth.gate import Gate

    return Gate(app, config)


@dataclass
class Grant:
    """Permission to run one plan: the principal and what the run will spend or hold."""

    principal: Principal
    gate: Gate | None = None
    request: RequestRecord | None = None
    approvers: Sequence[str] = ()
    break_glass: bool = False
    reason: str | None = None
    lease: Lease | None = field(default=None, repr=False)

    def begin(
        self, app: App, plan: Plan, run_id: str, *, wait: float | None, stderr: IO[bytes]
    ) -> None:
        """Take the task's locks, then spend the approvals (so a busy lock burns nothing)."""
        from oneoff._locks import acquire

        task, env = plan.task, plan.environment
        self.lease = acquire(
            app, task.locks, run_id=run_id, holder=self.principal.name, wait=wait,
            task=task.name, environment=env.name, grace=float(task.grace),
        )  # fmt: skip
        try:
            if self.request is not None and self.gate is not None:
                from oneoff._auth.quorum import spend

                spend(self.gate, self.request, run_id, self.approvers)
        except BaseException:
            self.end()
            raise
        if self.break_glass and self.gate is not None:
            from oneoff._breakglass import announce

            try:
                announce(self.gate, plan, self.principal, run_id, self.reason or "", stderr)
            except BaseException:
                self.end()  # not announced, not run: give the locks back
                raise

    def end(self, *, release: bool = True) -> None:
        """Release the locks (``release``: the run's processes are confirmed gone), or
        leave them for the reaper."""
        if self.lease is not None:
            if release:
                self.lease.release()
            else:
                self.lease.abandon()
            self.lease = None


def authorize_plan(app: App, plan: Plan, signer: Signer | None) -> Principal:
    """Who asks to see ``plan`` and whether policy lets them (Cedar action ``plan``).

    A plan shows the environment's config (masked) and what a run would do; in an app
    with ``[access]`` that is asked like anything else, and refusals are audited.
    """
    gate = open_gate(app)
    if gate is None:
        return Principal(os_user())
    env, task = plan.environment, plan.task
    principal = gate.identify(signer, "plan", task=task.name, environment=env, plan_hash=plan.hash)
    gate.decide_operation(principal, "plan", task, env, plan_hash=plan.hash)
    return principal


def authorize_on_app(
    app: App,
    operation: str,
    environment: Environment,
    signer: Signer | None,
    subject: Mapping[str, object],
    *,
    rollback: bool = False,
) -> Principal:
    """Identity and the Cedar decision for an operation on the app (``release``,
    ``audit-export``); the signed statement covers the hash of ``subject``."""
    from oneoff._auth.operations import APP_RESOURCE, app_resource
    from oneoff._canonical import canonical_hash

    gate = open_gate(app)
    if gate is None:
        if rollback and environment.protected:
            raise NotPermitted(
                f"environment {environment.name!r} is protected, and the app declares no "
                "[access]: nobody can be verified to roll it back",
                hint=SETUP_HINT,
            )
        return Principal(os_user())
    digest = "sha256:" + canonical_hash({"operation": operation, **subject})
    principal = gate.identify(
        signer, operation, task=APP_RESOURCE, environment=environment, plan_hash=digest
    )
    gate.decide_operation(principal, operation, app_resource(), environment, plan_hash=digest)
    return principal


def authorize_run(
    app: App,
    plan: Plan,
    signer: Signer | None,
    *,
    request_id: str | None = None,
    break_glass: bool = False,
    reason: str | None = None,
) -> Grant:
    """Identity, policy and quorum for running ``plan``; refusals are audited and raised."""
    env, task = plan.environment, plan.task
    gate = open_gate(app)
    if gate is None:
        if env.protected:
            raise NotPermitted(
                f"environment {env.name!r} is protected, and the app declares no [access]: "
                "nobody can be verified to run there",
                hint=SETUP_HINT,
            )
        if request_id or break_glass:
            raise UsageError(
                "--request and --break-glass need an [access] section", hint=SETUP_HINT
            )
        return Grant(Principal(os_user()))
    principal = gate.identify(signer, "run", task=task.name, environment=env, plan_hash=plan.hash)
    return decide_run(
        gate, plan, principal, request_id=request_id, break_glass=break_glass, reason=reason
    )


def decide_run(
    gate: Gate,
    plan: HashedPlan,
    principal: Principal,
    *,
    request_id: str | None = None,
    break_glass: bool = False,
    reason: str | None = None,
) -> Grant:
    """Policy and quorum for an identified ``principal`` running ``plan`` (the team server
    calls this with the principal of a statement a client signed); refusals are audited."""
    env, task = plan.environment, plan.task
    app = gate.app
    if break_glass:
        if request_id:  # an attempt to skip the quorum twice over is worth a record
            gate.refuse(
                UsageError("--break-glass and --request exclude each other"), "auth.refused",
                actor=principal.name, environment=env.name, task=task.name,
                payload={"request": request_id},
            )  # fmt: skip
        from oneoff._breakglass import reason_problem

        problem = reason_problem(reason or "")
        if problem is not None:
            gate.refuse(
                UsageError(problem),
                "auth.refused",
                actor=principal.name,
                environment=env.name,
                task=task.name,
            )
        if env.extra.get("break_glass") is False:
            gate.refuse(
                NotPermitted(f"break-glass is disabled in {env.name!r}"),
                "auth.refused",
                actor=principal.name,
                environment=env.name,
                task=task.name,
            )
        gate.decide_operation(principal, "run", task, env, break_glass=True, plan_hash=plan.hash)
        return Grant(principal, gate, break_glass=True, reason=reason)
    gate.decide_operation(principal, "run", task, env, plan_hash=plan.hash)
    if request_id is not None:
        from oneoff._auth.quorum import check_approvals

        request = app.store.get_request(request_id)
        approvers = check_approvals(gate, request, plan, principal)
        return Grant(principal, gate, request, approvers)
    rule = approval_rule(task, env)
    if rule is not None:
        error = ApprovalError(
            f"{task.name} in {env.name} needs {rule.describe()}",
            hint=f"ask for them: oneoff request {task.name} --env {env.name} [--param ...]; "
            "then oneoff run --request ID",
        )
        gate.refuse(
            error,
            "approval.refused",
            actor=principal.name,
            environment=env.name,
            task=task.name,
            plan_hash=plan.hash,
        )
    return Grant(principal, gate)
