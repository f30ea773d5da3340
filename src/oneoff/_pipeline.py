"""The one pipeline every run goes through: load, verify, plan, decide, lock, execute, record."""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from oneoff._app import App
from oneoff._identity import os_user
from oneoff._liveness import host_id, process_token, runner_alive
from oneoff._plan import Plan, build_plan
from oneoff._store.interface import RunRecord, RunStatus
from oneoff.errors import CommandNotFound, UsageError

if TYPE_CHECKING:
    from oneoff._executor.interface import Executor
    from oneoff._proc import ProcessResult

__all__ = ["RunOutcome", "RunRequest", "exit_code_for", "make_plan", "new_run_id", "run_task"]

EXIT_TIMED_OUT = 124


@dataclass
class RunRequest:
    """What a caller asks for; nothing in it can claim an identity."""

    task: str
    environment: str | None
    params: Mapping[str, str] = field(default_factory=dict)
    confirm: str | None = None
    release: str | None = None


@dataclass
class RunOutcome:
    run: RunRecord
    result: ProcessResult
    exit_code: int


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    # Sortable by time (to the second) and unguessable; short prefixes are unique in practice.
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"r{stamp}{secrets.token_hex(4)}"


def make_plan(
    app: App, request: RunRequest, *, operator_env: Mapping[str, str] | None = None
) -> Plan:
    return build_plan(
        app.project,
        request.task,
        request.environment,
        request.params,
        fingerprint_key=app.fingerprint_key,
        release_id=request.release,
        operator_env=operator_env,
    )


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


def reap_lost_runs(app: App) -> list[str]:
    """Mark runs whose runner died (SIGKILL, power loss) as lost instead of running forever."""
    lost = []
    store = app.store
    for run in store.running_runs():
        if runner_alive(run.runner_host, run.runner_pid, run.runner_token) is False:
            with store.tx():
                marked = store.mark_lost(run.id, ended_at=now())
            if marked:
                lost.append(run.id)
                app.audit.append(
                    "run.lost",
                    actor=os_user(),
                    environment=run.environment,
                    task=run.task,
                    run_id=run.id,
                    release_id=run.release_id,
                    plan_hash=run.plan_hash,
                    payload={"runner_pid": run.runner_pid, "started_at": run.started_at},
                )
    return lost


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
    # [stage: identity] who is asking; never taken from a flag or a variable.
    principal = os_user()
    # [stage: verify release + plan]
    plan = make_plan(app, request, operator_env=operator_env)
    require_confirmation(plan, request.confirm, ask)
    # [stage: decide] policy decision for (principal, "run", task, environment).
    # [stage: approve] quorum of approvals over plan.hash.
    program = plan.argv[0]
    resolved = shutil.which(program, path=plan.env.values.get("PATH", ""))
    if "/" not in program and resolved is None:
        raise CommandNotFound(f"{program!r} not found on the task's PATH")
    if executor is None:
        from oneoff._executor.local import LocalExecutor

        executor = LocalExecutor()

    store = app.store
    reap_lost_runs(app)
    # [stage: lock] named resource leases, held until the run is recorded as ended.
    pid = os.getpid()
    run = RunRecord(
        id=new_run_id(),
        task=plan.task.name,
        environment=plan.environment.name,
        params=plan.public_params,
        principal=principal,
        plan_hash=plan.hash,
        status="running",
        started_at=now(),
        runner_host=host_id(),
        runner_pid=pid,
        runner_token=process_token(pid),
        release_id=plan.release_id,
    )
    with store.tx():
        store.create_run(run)
    app.audit.append(
        "run.started",
        actor=principal,
        environment=run.environment,
        task=run.task,
        run_id=run.id,
        release_id=run.release_id,
        plan_hash=run.plan_hash,
        payload={"argv": list(plan.argv), "params": run.params, "executor": executor.name},
    )

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
    # [stage: output] redaction, terminal and stored output.
    sinks = {1: stdout, 2: stderr}
    total = 0

    def on_output(fd: int, chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        sink = sinks.get(fd, stderr)
        sink.write(chunk)
        sink.flush()

    status: RunStatus = "failed"
    exit_code: int | None = None
    try:
        result = executor.execute(plan, env, on_output, stdin_data=plan.stdin_data())
        status = result.status
        exit_code = result.exit_code
    finally:
        # Whatever happened (even an exception in the executor), the run does not stay
        # "running": it ends as recorded here.
        ended = now()
        with store.tx():
            store.finish_run(
                run.id, status=status, exit_code=exit_code, ended_at=ended, output_bytes=total
            )
        app.audit.append(
            "run.finished",
            actor=principal,
            environment=run.environment,
            task=run.task,
            run_id=run.id,
            release_id=run.release_id,
            plan_hash=run.plan_hash,
            payload={"status": status, "exit_code": exit_code, "output_bytes": total},
        )
        # [stage: record] checkpoint the audit log; release locks.
    run = store.get_run(run.id)
    return RunOutcome(run=run, result=result, exit_code=exit_code_for(result))
