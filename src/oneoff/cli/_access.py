"""`oneoff request`, `approve`, `deny`, `requests` and `locks`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from oneoff._app import App
from oneoff._auth.gate import Gate
from oneoff._auth.grant import SETUP_HINT, open_gate
from oneoff._auth.shown import ShownPlan
from oneoff._identity import signer_from
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff.cli._common import emit_json, on_terminal, read_params, terminal_safe
from oneoff.errors import UsageError

if TYPE_CHECKING:
    from oneoff._client.remote import Remote

__all__ = [
    "apply_request",
    "cmd_approve",
    "cmd_deny",
    "cmd_locks",
    "cmd_request",
    "cmd_requests",
    "print_approved",
    "print_requested",
    "render_request",
]


@contextlib.contextmanager
def _closing(remote: Remote) -> Iterator[None]:
    try:
        yield
    finally:
        remote.close()


def _gate(app: App) -> Gate:
    gate = open_gate(app)
    if gate is None:
        raise UsageError("this app declares no [access] section", hint=SETUP_HINT)
    return gate


def _signer(args: argparse.Namespace) -> Any:
    signer = signer_from(args.key)
    if signer is None:
        raise UsageError(
            "this needs your signature: pass --key ~/.ssh/id_ed25519 (or a .pub with "
            "ssh-agent), or set ONEOFF_SIGNING_KEY"
        )
    return signer


def apply_request(app: App, args: argparse.Namespace) -> None:
    """Fill `run --request ID`'s task, env and public params from the stored request.

    Secret params are not stored: give them again (their fingerprint is in the plan hash,
    so a different value is a different plan and the approvals do not cover it).
    """
    request = app.store.get_request(args.request)
    if args.task not in (None, request.task):
        from oneoff._identity import os_user

        error = UsageError(f"request {request.id} is for task {request.task!r}, not {args.task!r}")
        # Nobody is verified yet (that needs the plan): the OS user is who tried.
        app.audit.append(
            "approval.refused", actor=os_user(), environment=request.environment,
            task=args.task, plan_hash=request.plan_hash,
            payload={"request": request.id, "reason": error.message},
        )  # fmt: skip
        raise error
    fill_from_request(request, args)


def fill_from_request(request: RequestRecord, args: argparse.Namespace) -> None:
    """Task, env and the public params of ``request`` into ``run``'s arguments."""
    if args.task not in (None, request.task):  # the server's request: refused (and audited) there
        raise UsageError(f"request {request.id} is for task {request.task!r}, not {args.task!r}")
    args.task = request.task
    args.env = args.env or request.environment
    given = {pair.partition("=")[0] for pair in args.param}
    stored = request.plan.get("params", {})
    args.param = [
        *args.param,
        *(f"{k}={v}" for k, v in sorted(stored.items()) if k not in given and v != "[secret]"),
    ]


def cmd_request(args: argparse.Namespace) -> int:
    from oneoff._auth.approvals import create_request
    from oneoff._pipeline import RunRequest, make_plan
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key, need_app=True)
    assert app is not None
    if remote is not None:
        from oneoff.cli._remote_access import remote_request

        with _closing(remote):
            return remote_request(remote, args, app)
    gate = _gate(app)
    task = app.project.task(args.task)
    params = read_params(task, args.param, interactive=on_terminal())
    plan = make_plan(app, RunRequest(task=args.task, environment=args.env, params=params))
    record = create_request(gate, plan, _signer(args))
    if args.json:
        emit_json({"id": record.id, "plan_hash": record.plan_hash, "status": record.status})
    else:
        print_requested(record)
    return 0


def render_request(request: RequestRecord, shown: ShownPlan) -> str:
    """The plan an approver reviews: only what its hash vouches for (see _auth.shown)."""
    document = shown.document
    params = {
        k: "[secret]" if isinstance(v, dict) else v
        for k, v in sorted(dict(document.get("params") or {}).items())
    }
    # Every field is escaped: a server, or a stored row, may hold anything (see _text).
    safe = terminal_safe
    lines = [
        f"request    {safe(request.id)}  ({safe(request.status)})",
        f"requester  {safe(request.requester)}  at {safe(request.created_at)}",
        f"task       {safe(request.task)}",
        f"env        {safe(request.environment)}"
        + ("  [protected]" if document.get("protected") else ""),
        f"risk       {safe(str(document.get('risk')))}",
        f"argv       {terminal_safe(' '.join(map(str, document.get('argv', []))))}",
        f"locks      {terminal_safe(', '.join(map(str, document.get('locks', [])))) or 'none'}",
        f"release    {terminal_safe(str(document.get('release') or 'none'))}",
        "params     " + terminal_safe(", ".join(f"{k}={v}" for k, v in params.items())),
        "environment",
    ]
    for key, var in sorted(shown.env.items()):
        note = "  (masked: not checked against the plan)" if var.checked == "masked" else ""
        lines.append(terminal_safe(f"  {key} = {var.value}   # {var.source}") + note)
    lines.append(f"plan hash  {safe(request.plan_hash)}")
    lines.append(f"policy     {safe(str(request.policy_version))}")
    return "\n".join(lines) + "\n"


def cmd_approve(args: argparse.Namespace) -> int:
    from oneoff._auth.approvals import approve, review
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key, need_app=True)
    assert app is not None
    if remote is not None:
        from oneoff.cli._remote_access import remote_approve

        with _closing(remote):
            return remote_approve(remote, args, app)
    gate = _gate(app)
    signer = _signer(args)
    request, shown = review(gate, args.request)
    sys.stdout.write(render_request(request, shown))
    if not args.yes:
        if not on_terminal():
            raise UsageError("approving needs a terminal to confirm on, or --yes")
        sys.stderr.write(f"Approve this exact plan ({request.plan_hash[:19]}…)? Type yes: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip() != "yes":
            raise UsageError("not approved")
    record = approve(gate, request.id, signer)
    if args.json:
        emit_json(
            {
                "request": record.request_id,
                "approver": record.approver,
                "expires_at": record.expires_at,
            }
        )
    else:
        print_approved(record)
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    from oneoff._auth.approvals import deny
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff.cli._remote_access import remote_deny

        with _closing(remote):
            return remote_deny(remote, args)
    assert app is not None
    request = deny(_gate(app), args.request, _signer(args), args.reason)
    if getattr(args, "json", False):
        emit_json({"id": request.id, "status": "denied", "task": request.task,
                   "env": request.environment, "plan_hash": request.plan_hash})  # fmt: skip
        return 0
    print(f"oneoff: request {terminal_safe(request.id)} denied", file=sys.stderr)
    return 0


def print_requested(record: RequestRecord) -> None:
    """The id on stdout and the one-line summary on stderr, as `request` prints them."""
    safe = terminal_safe
    print(safe(record.id))
    print(
        f"oneoff: request {safe(record.id)}: {safe(record.task)} on {safe(record.environment)} "
        f"by {safe(record.requester)}, waiting for approval (oneoff approve {safe(record.id)})",
        file=sys.stderr,
    )


def print_approved(record: ApprovalRecord) -> None:
    safe = terminal_safe
    print(
        f"oneoff: {safe(record.approver)} approved {safe(record.request_id)} "
        f"(until {safe(record.expires_at)})",
        file=sys.stderr,
    )


def cmd_requests(args: argparse.Namespace) -> int:
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff.cli._remote_access import remote_requests

        with _closing(remote):
            return _print_requests(remote_requests(remote, args), args)
    assert app is not None
    requests = app.store.list_requests(status=None if args.all else "pending")
    rows = []
    for request in requests:
        approvers = [a.approver for a in app.store.approvals_for(request.id)]
        rows.append(
            {
                "id": request.id,
                "task": request.task,
                "env": request.environment,
                "requester": request.requester,
                "created_at": request.created_at,
                "status": request.status,
                "approvals": approvers,
                "plan_hash": request.plan_hash,
            }
        )
    return _print_requests(rows, args)


def _print_requests(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.json:
        emit_json(rows)
        return 0
    safe = terminal_safe
    for row in rows:
        # One row per request, whatever a stored or served field holds (no forged rows).
        approvers = ", ".join(safe(str(a)) for a in row["approvals"]) or "none"
        print(
            f"{safe(str(row['id']))}  {safe(str(row['status'])):<8} {safe(str(row['task']))} "
            f"on {safe(str(row['env']))} by {safe(str(row['requester']))}  approvals: {approvers}"
        )
    if not rows:
        print("no pending requests" if not args.all else "no requests")
    return 0


def cmd_locks(args: argparse.Namespace) -> int:
    from oneoff._pipeline import reap_lost_runs
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff.cli._remote_runs import remote_locks

        with _closing(remote):
            return _print_remote_locks(remote_locks(remote), args)
    assert app is not None
    reap_lost_runs(app)
    held = app.store.lock_holders()
    if args.json:
        emit_json([lock.__dict__ for lock in held])
        return 0
    for lock in held:
        print(
            terminal_safe(
                f"{lock.name:<16} run {lock.run_id} by {lock.holder} (pid {lock.runner_pid}) "
                f"since {lock.acquired_at}, lease until {lock.expires_at}"
            )
        )
    if not held:
        print("no locks held")
    return 0


def _print_remote_locks(held: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """The server's locks, as local mode prints them (plus each grant's fencing token;
    the runner's pid is the runner host's business)."""
    if args.json:
        emit_json(held)
        return 0
    for lock in held:
        fencing = lock.get("fencing")
        where = f"fencing {fencing}" if fencing is not None else "not granted"
        print(
            terminal_safe(
                f"{lock.get('name', ''):<16} run {lock.get('run_id')} by {lock.get('holder')} "
                f"({where}) since {lock.get('acquired_at')}, lease until {lock.get('expires_at')}"
            )
        )
    if not held:
        print("no locks held")
    return 0
