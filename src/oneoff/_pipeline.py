"""The one pipeline every run goes through: load, verify, plan, decide, lock, execute, record."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from oneoff._after import after_reply
from oneoff._app import App
from oneoff._clock import utc_iso
from oneoff._liveness import host_id, process_token
from oneoff._plan import Plan, build_plan
from oneoff._reap import reap_lost_runs
from oneoff._record import dataclass, field
from oneoff._store.interface import RunRecord, RunStatus
from oneoff.errors import OneoffError, UsageError

if TYPE_CHECKING:
    from oneoff._audit.log import AuditEvent
    from oneoff._auth.grant import Grant
    from oneoff._contain import RunTree
    from oneoff._executor.interface import Executor
    from oneoff._identity import Signer
    from oneoff._proc import ProcessResult
    from oneoff._redact import Redactor
    from oneoff._release.stage import Checked

__all__ = [
    "RunOutcome",
    "RunRequest",
    "exit_code_for",
    "make_plan",
    "new_run_id",
    "reap_lost_runs",
    "run_task",
]

EXIT_TIMED_OUT = 124


@dataclass
class RunRequest:
    """What a caller asks for; nothing in it can claim an identity."""

    task: str
    environment: str | None
    params: Mapping[str, str] = field(default_factory=dict)
    confirm: str | None = None
    release: str | None = None
    # Run although code, dependencies or config drifted from the release (unprotected
    # environments only); recorded on the run and in the audit log.
    allow_drift: bool = False
    # [stage: identity] the operator's key (possession is the proof); never a name.
    signer: Signer | None = None
    request_id: str | None = None  # run a request once its quorum of approvals stands
    break_glass: bool = False  # run without quorum where policy allows; audited, announced
    reason: str | None = None
    wait: float | None = None  # seconds to wait for busy locks (default: fail at once)


@dataclass
class RunOutcome:
    run: RunRecord
    result: ProcessResult
    exit_code: int


now = utc_iso


def new_run_id() -> str:
    # Sortable by time (to the second) and unguessable; short prefixes are unique in practice.
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"r{stamp}{os.urandom(4).hex()}"


def make_plan(
    app: App, request: RunRequest, *, operator_env: Mapping[str, str] | None = None
) -> Plan:
    return plan_with_release(app, request, operator_env=operator_env)[0]


def plan_with_release(
    app: App,
    request: RunRequest,
    *,
    operator_env: Mapping[str, str] | None = None,
    before_verify: Callable[[Plan], None] | None = None,
) -> tuple[Plan, Checked]:
    """Plan the run, then verify its release against this machine and bind the plan to it."""
    from oneoff._canonical import canonical_hash
    from oneoff._plan import plan_document
    from oneoff._record import replace
    from oneoff._release.stage import verify_stage

    plan = build_plan(
        app.project,
        request.task,
        request.environment,
        request.params,
        fingerprint_key=app.fingerprint_key,
        operator_env=operator_env,
    )
    if before_verify is not None:
        before_verify(plan)
    # The config check needs the materialized environment, so it runs after planning
    # rather than materializing (and running command sources) twice.
    checked = verify_stage(app, plan.environment, request.release, plan.env, request.allow_drift)
    if checked.release_id is not None:
        # The hash covers the release: a plan for v41 is another plan on v42.
        partial = replace(plan, release_id=checked.release_id, hash="")
        plan = replace(partial, hash="sha256:" + canonical_hash(plan_document(partial)))
    return plan, checked


def require_confirmation(plan: Plan, confirm: str | None, ask: Callable[[str], str] | None) -> None:
    """A critical task on a protected environment needs the environment's name typed."""
    if not (plan.task.risk == "critical" and plan.environment.protected):
        return
    name = plan.environment.name
    if confirm is None:
        if ask is None:
            raise UsageError(
                f"task {plan.task.name!r} is critical and {name!r} is protected: "
                f"pass --confirm {name} (no terminal to ask on)"
            )
        confirm = ask(f"Type the environment name ({name}) to run {plan.task.name}: ")
    if confirm.strip() != name:
        raise UsageError(f"confirmation {confirm.strip()!r} does not match {name!r}; nothing ran")


def audit_run(
    app: App, kind: str, run: RunRecord, *, actor: str, payload: Mapping[str, Any]
) -> AuditEvent:
    """Append an event about ``run``, carrying its identifying fields."""
    return app.audit.append(
        kind,
        actor=actor,
        environment=run.environment,
        task=run.task,
        run_id=run.id,
        release_id=run.release_id,
        plan_hash=run.plan_hash,
        payload=payload,
    )


def exit_code_for(result: ProcessResult) -> int:
    if result.status == "timed_out":
        return EXIT_TIMED_OUT
    return result.exit_code


def run_task(
    app: App,
    request: RunRequest,
    *,
    stdout: IO[bytes],
    stderr: IO[bytes],
    ask: Callable[[str], str] | None = None,
    executor: Executor | None = None,
    operator_env: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one task to completion; every refusal happens before anything is recorded.

    The stages, in order (each may refuse with its own error and exit code):
    load → verify release → plan → confirm → decide → approve → lock → execute → record.
    """
    from oneoff._locks import check_wait

    check_wait(request.wait)  # bad input is refused before anything is done
    # [stage: identity] who is asking; never taken from a flag or a variable. Resolved
    # with the decision below: the signed statement covers the plan's hash.
    # [stage: verify release + plan]
    plan, checked = plan_with_release(
        app, request, operator_env=operator_env,
        # Bad input (a wrong --confirm) is refused before the release is checked.
        before_verify=lambda p: require_confirmation(p, request.confirm, ask),
    )  # fmt: skip
    # [stage: decide] policy decision for (principal, "run", task, environment).
    # [stage: approve] quorum of approvals over plan.hash.
    from oneoff._auth.grant import authorize_run

    # A break-glass reason is stored, shown to reviewers and sent to the notifier: a secret
    # pasted into it is redacted there like in every other text oneoff shows or stores.
    reason = plan.redactor.redact_text(request.reason) if request.reason else request.reason
    grant = authorize_run(
        app, plan, request.signer, request_id=request.request_id,
        break_glass=request.break_glass, reason=reason,
    )  # fmt: skip
    principal = grant.principal.name
    from oneoff._proc import resolve_command

    if plan.environment.executor.kind in ("local", "sandbox"):
        # Before anything is recorded: a task whose program is missing is bad input (127).
        # (In a container or a pod the program is looked up in the image, not here.)
        resolve_command(plan.argv[0], plan.env.values, str(plan.cwd))
    if executor is None:
        from oneoff._executor import executor_for

        executor = executor_for(plan.environment.executor, requester=principal)

    # [stage: output] redactors first: a secret too short to redact refuses the run here.
    from oneoff._output import build_redactors, output_cap

    redactors = build_redactors(plan)
    plan.refuse_secrets_in_argv(redactors[1])  # before anything is recorded
    cap = output_cap(app.project.section("audit"))
    store = app.store
    reap_lost_runs(app)
    # [stage: lock] named resource leases, held until the run is recorded as ended.
    run_id = new_run_id()
    grant.begin(app, plan, run_id, wait=request.wait, stderr=stderr)
    pid = os.getpid()
    run = RunRecord(
        id=run_id,
        task=plan.task.name,
        environment=plan.environment.name,
        params=plan.shown_params(redactors[1]),
        principal=principal,
        plan_hash=plan.hash,
        status="running",
        started_at=now(),
        runner_host=host_id(),
        runner_pid=pid,
        runner_token=process_token(pid),
        release_id=plan.release_id,
        allow_drift=checked.allow_drift,
        request_id=grant.request.id if grant.request else None,
        break_glass=grant.break_glass,
        reason=grant.reason,
    )
    drift = {"allow_drift": True, "drift": list(checked.drift)} if checked.allow_drift else {}
    # Who let it run: the request and the approvals it spends, or break-glass and why.
    access = {
        "request": run.request_id,
        "approvals": list(grant.approvers),
        "break_glass": grant.break_glass,
        **({"reason": grant.reason} if grant.break_glass else {}),
    }
    started_payload = {
        # Secrets never reach argv (secret params cannot, plain ones holding one are refused
        # above); redacting it anyway costs nothing.
        "argv": [redactors[1].redact_text(a) for a in plan.argv],
        "params": run.params,
        "executor": executor.name,
        **access,
        **drift,
    }
    from oneoff._proc import hold_signals

    # From the run's row on, a SIGTERM must not end oneoff before the run is recorded as
    # ended: held until the task's handlers are in place (see hold_signals).
    with hold_signals():
        result = _execute_and_record(
            app, run, plan, executor, redactors, cap, stdout, stderr, grant, started_payload
        )
    # [stage: record] sign a checkpoint: after the reply under the daemon (see _after).
    after_reply(app.audit.checkpoint_or_warn)
    run = store.get_run(run.id)
    return RunOutcome(run=run, result=result, exit_code=exit_code_for(result))


def _execute_and_record(
    app: App,
    run: RunRecord,
    plan: Plan,
    executor: Executor,
    redactors: Mapping[int, Redactor],
    cap: int,
    stdout: IO[bytes],
    stderr: IO[bytes],
    grant: Grant,
    started_payload: Mapping[str, Any],
) -> ProcessResult:
    """Record the run, execute it in its own process tree, record how it ended; the locks
    go only once nothing of the run is alive."""
    from oneoff._contain import RunTree
    from oneoff._output import OutputRecorder

    store = app.store
    principal = run.principal
    with store.tx():  # the run and its audit event land together, before anything runs
        store.create_run(run)
        audit_run(app, "run.started", run, actor=principal, payload=started_payload)
    # Its cgroup is named after the run: a later command finds it from the row alone.
    tree = RunTree.new(run.id)

    env = dict(plan.env.values)
    env.update(
        {
            "ONEOFF_RUN_ID": run.id,
            "ONEOFF_TASK": plan.task.name,
            "ONEOFF_ENVIRONMENT": plan.environment.name,
        }
    )
    if plan.release_id:
        env["ONEOFF_RELEASE"] = plan.release_id
    from oneoff._bytecode import bytecode_env

    # Bytecode only from oneoff's private cache: never a __pycache__ planted in the tree.
    env.update(bytecode_env(app.root, None if run.allow_drift else plan.release_id))
    # [stage: output] redaction, terminal and stored output.
    on_output = OutputRecorder(
        store, run.id, redactors, {1: stdout, 2: stderr}, cap=cap,
        quiet_release=0.1 if plan.task.interactive else None,  # prompts must show
    )  # fmt: skip

    status: RunStatus = "failed"
    exit_code: int | None = None
    error: dict[str, str] = {}
    try:
        try:
            result = executor.execute(plan, env, on_output, stdin_data=plan.stdin_data(), tree=tree)
        except OneoffError as exc:
            # An executor that cannot run the task (engine missing, pod never scheduled,
            # OOM-killed) ends the run as failed, with why, in the audit log.
            error = {"error": exc.message}
            raise
        status = result.status
        exit_code = result.exit_code
        if grant.lease is not None and grant.lease.lost:
            # The lock was taken away and the renewer stopped the task: it did not simply
            # fail, and nobody may assume it completed.
            status = "lost"
    finally:
        # Whatever happened (even an exception in the executor), the run does not stay
        # "running": it ends as recorded here, and its locks are released even if
        # recording fails.
        try:
            output = on_output.close()
            finished = {
                "status": status,
                "exit_code": exit_code,
                "output_bytes": output.bytes,
                "output_stored": output.stored,
                "output_digest": output.digest,
                "output_truncated": output.truncated,
                **({"lease_lost": True} if status == "lost" else {}),
                **error,
            }
            # The outcome and its audit event land together or not at all: should the
            # event fail, the run stays "running" and is reaped as lost, never "finished"
            # without a record in the audit log.
            with store.tx():
                store.finish_run(
                    run.id, status=status, exit_code=exit_code, ended_at=now(),
                    output_bytes=output.bytes, output_digest=output.digest,
                    output_truncated=output.truncated,
                )  # fmt: skip
                audit_run(app, "run.finished", run, actor=principal, payload=finished)
        finally:
            # [stage: record] release locks, once nothing of the run is alive.
            _end_tree(run, tree, grant)
            from oneoff._after import after_reply
            from oneoff._watchdog import reap

            after_reply(reap)  # the run's watchdog, disarmed and exiting by now
    return result


def _end_tree(run: RunRecord, tree: RunTree, grant: Grant) -> None:
    # Normally the executor killed the tree with the task and this only confirms it.
    empty = tree.stop(marks=False)
    if not empty:
        from oneoff._log import log

        log(
            "run.tree_alive",
            f"run {run.id}: processes still alive after SIGKILL; its locks stay held",
            level="warning",
            hint="the next oneoff command frees them once those processes are gone",
        )
    grant.end(release=empty)
