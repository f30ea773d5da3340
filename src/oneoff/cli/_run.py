"""`oneoff plan`, `run`, `exec` and `env`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from oneoff._after import after_reply
from oneoff._environ import materialize
from oneoff._identity import signer_from
from oneoff._pipeline import RunRequest, make_plan, run_task
from oneoff._plan import Plan
from oneoff.cli._common import app_from, emit_json, on_terminal, read_params, terminal_safe
from oneoff.errors import UsageError

__all__ = ["cmd_env", "cmd_exec", "cmd_plan", "cmd_run"]


def _request(args: argparse.Namespace, task_params: dict[str, str]) -> RunRequest:
    return RunRequest(
        task=args.task,
        environment=args.env,
        params=task_params,
        confirm=getattr(args, "confirm", None),
        release=getattr(args, "release", None),
        allow_drift=bool(getattr(args, "allow_drift", False)),
        # [commands: access] the operator's key, an approved request, break-glass, lock wait.
        signer=signer_from(getattr(args, "key", None)),
        request_id=getattr(args, "request", None),
        break_glass=bool(getattr(args, "break_glass", False)),
        reason=getattr(args, "reason", None),
        wait=getattr(args, "wait", None),
    )


def cmd_plan(args: argparse.Namespace) -> int:
    app = app_from(args)
    task = app.project.task(args.task)
    params = read_params(task, args.param, interactive=on_terminal())
    request = _request(args, params)
    plan = make_plan(app, request)
    from oneoff._auth.grant import authorize_plan

    principal = authorize_plan(app, plan, request.signer)
    app.audit.append(
        "run.planned",
        actor=principal.name,
        environment=plan.environment.name,
        task=plan.task.name,
        release_id=plan.release_id,
        plan_hash=plan.hash,
        payload={"params": plan.public_params},
    )
    app.close()
    from oneoff._selfload import find_self_loading

    warnings = [
        found.warning(plan.environment)
        for found in find_self_loading(app.project, plan.environment)
    ]
    if args.json:
        emit_json({**plan.to_json(), "warnings": warnings})
    else:
        sys.stdout.write(render_plan(plan))
    from oneoff._log import log

    for warning in warnings:
        log(
            "plan.self_loading_dotenv", warning, level="warning",
            hint="make that loading conditional (development only), or remove .env from "
            "where tasks run",
        )  # fmt: skip
    return 0


def render_plan(plan: Plan) -> str:
    task = plan.task
    env = plan.environment
    lines = [
        f"task       {task.name}" + (f"  ({task.description})" if task.description else ""),
        f"env        {env.name}" + ("  [protected]" if env.protected else ""),
        f"risk       {task.risk}",
        f"argv       {terminal_safe(plan.redactor.redact_text(_quote_argv(plan.argv)))}",
        f"cwd        {plan.cwd}",
        f"timeout    {task.timeout}s (then SIGTERM, {task.grace}s grace, SIGKILL)",
        f"locks      {', '.join(task.locks) or 'none'}",
        f"release    {plan.release_id or 'none'}",
        f"executor   {terminal_safe(env.executor.describe(network=task.network))}",
    ]
    if plan.params:
        lines.append("params     " + ", ".join(f"{k}={v}" for k, v in plan.public_params.items()))
    masked = plan.env.masked(plan.redactor)
    width = max((len(k) for k in masked), default=0)
    lines.append("environment")
    for key in sorted(masked):
        value = terminal_safe(masked[key])
        lines.append(f"  {key.ljust(width)} = {value}   # {plan.env.origin[key]}")
    lines.append(f"plan hash  {plan.hash}")
    return "\n".join(lines) + "\n"


def _quote_argv(argv: tuple[str, ...]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def cmd_run(args: argparse.Namespace) -> int:
    from oneoff.cli._remote import resolve

    # [server] with a server named, it decides and records; the run is planned and
    # executed here all the same (oneoff._remote.runner).
    remote, app = resolve(args, key=getattr(args, "key", None), need_app=True)
    assert app is not None  # need_app
    if args.request and remote is not None:  # the request is the server's
        from oneoff._remote.runner import remote_request
        from oneoff.cli._access import fill_from_request

        fill_from_request(remote_request(remote, args.request), args)
    elif args.request:  # [commands: access] task, env and params come from the request
        from oneoff.cli._access import apply_request

        apply_request(app, args)
    if args.task is None:
        raise UsageError("run needs a TASK (or --request ID)")
    task = app.project.task(args.task)
    interactive = on_terminal()
    params = read_params(task, args.param, interactive=interactive)

    def ask(prompt: str) -> str:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return sys.stdin.readline()

    as_json = bool(getattr(args, "json", False))
    # --json: stdout carries only the record, so the task's output goes to stderr.
    out = sys.stderr.buffer if as_json else sys.stdout.buffer
    try:
        if remote is not None:
            from oneoff._remote.runner import run_remote

            try:
                outcome = run_remote(
                    app, _request(args, params), remote, stdout=out, stderr=sys.stderr.buffer,
                    ask=ask if interactive else None,
                )  # fmt: skip
            finally:
                remote.close()
        else:
            outcome = run_task(
                app, _request(args, params), stdout=out, stderr=sys.stderr.buffer,
                ask=ask if interactive else None,
            )  # fmt: skip
    finally:
        after_reply(app.close)  # the held checkpoint (daemon) still needs the store
    if as_json:
        from oneoff.cli._runs import run_as_dict

        emit_json(run_as_dict(outcome.run))
    elif not args.quiet:
        run = outcome.run
        code = "" if run.exit_code is None else f", exit {run.exit_code}"
        from oneoff._log import log

        log(
            "run.finished", f"run {run.id} {run.task} on {run.environment}: {run.status}{code}",
            run_id=run.id, task=run.task, environment=run.environment, status=run.status,
            exit_code=run.exit_code, output_bytes=run.output_bytes,
            output_truncated=run.output_truncated,
        )  # fmt: skip
    return outcome.exit_code


def cmd_exec(args: argparse.Namespace) -> int:
    app = app_from(args)
    project = app.project
    declared = project.process(args.process)
    environment = project.environment(args.env)
    materialized = materialize(project, environment, run_vars={})
    env = dict(materialized.values)
    # [release] a long-running process starts only on a verified release, like a one-off.
    from oneoff._release.stage import verify_stage

    checked = verify_stage(app, environment, args.release, materialized, args.allow_drift)
    if checked.release_id:
        env["ONEOFF_RELEASE"] = checked.release_id
    from oneoff._bytecode import bytecode_env

    # As for a one-off run: no planted bytecode, and the release's own cache only if no drift.
    env.update(bytecode_env(app.root, None if checked.drift else checked.release_id))
    from oneoff._procfile import expand_vars

    where = f"process {args.process!r}"
    argv = [expand_vars(a, env, where) for a in declared]
    # argv is world-readable (/proc/PID/cmdline, ps): no secret may go there.
    from oneoff._procfile import refuse_secrets_in_argv

    refuse_secrets_in_argv(where, declared, argv, materialized)
    from oneoff._proc import resolve_command

    program = resolve_command(argv[0], env, str(project.root))
    from oneoff._identity import os_user

    # The declared argv, not the expanded one: $VARS may hold secrets.
    app.audit.append(
        "process.exec",
        actor=os_user(),
        environment=environment.name,
        release_id=checked.release_id,
        payload={
            "process": args.process,
            "argv": list(declared),
            "pid": os.getpid(),
            "allow_drift": checked.allow_drift,
        },
    )
    app.close()
    os.chdir(project.root)
    # Replace ourselves: the process manager's signals reach the process directly.
    os.execve(program, argv, env)  # noqa: S606 - argv list, no shell: the point of exec


def cmd_env(args: argparse.Namespace) -> int:
    app = app_from(args)
    project = app.project
    environment = project.environment(args.env)
    admin = materialize(
        project,
        environment,
        run_vars={
            "ONEOFF_RUN_ID": "<run id>",
            "ONEOFF_TASK": "<task>",
            "ONEOFF_ENVIRONMENT": environment.name,
        },
    )
    if args.diff:
        project.process(args.diff)
        process = materialize(project, environment, run_vars={})
        diff = env_diff(admin.values, process.values)
        if args.json:
            emit_json(diff)
        else:
            for key, what in sorted(diff.items()):
                print(f"{what:<28} {key}")
            if not diff:
                print("identical")
        return 0
    masked = admin.masked()
    if args.json:
        emit_json(
            {k: {"value": v, "source": admin.origin[k], "secret": k in admin.secret_keys}
             for k, v in masked.items()}
        )  # fmt: skip
    else:
        for key in sorted(masked):
            print(f"{key}={terminal_safe(masked[key])}  # {admin.origin[key]}")
    return 0


def env_diff(admin: Mapping[str, str], process: Mapping[str, str]) -> dict[str, str]:
    """Which variables differ between a one-off process and a process type."""
    diff: dict[str, str] = {}
    for key in admin.keys() | process.keys():
        if key not in process:
            diff[key] = "only in one-off processes"
        elif key not in admin:
            diff[key] = "only in the process type"
        elif admin[key] != process[key]:
            diff[key] = "differs"
    return diff
