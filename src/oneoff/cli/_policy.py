"""`oneoff policy explain` (a what-if decision) and `oneoff policy test` (a table, for CI)."""

from __future__ import annotations

import argparse
from pathlib import Path

from oneoff._identity import os_user, utc_now
from oneoff.cli._access import _gate
from oneoff.cli._common import app_from

__all__ = ["cmd_explain", "cmd_test"]


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision for NAME; exit 0 when allowed, 3 when denied.

    Asked as the commands ask (``oneoff._auth.operations``): ``--action run`` on an
    interactive task explains ``run`` and ``console``; ``release`` and ``audit-export``
    take the task ``oneoff:app`` (``audit-export`` with ``--env '*'``).
    """
    from oneoff._auth.gate import task_info
    from oneoff._auth.operations import (
        ALL_ENVIRONMENTS,
        APP_RESOURCE,
        actions_for,
        app_resource,
        decide_operation,
        operation_for_action,
        whole_app,
    )

    app = app_from(args)
    gate = _gate(app)
    project = app.project
    on_app = args.task == APP_RESOURCE or args.action in ("release", "audit-export")
    info = app_resource() if on_app else task_info(project.task(args.task))
    whole = args.env == ALL_ENVIRONMENTS
    env = whole_app(project) if whole else project.environment(args.env)
    operation = operation_for_action(args.action, info)
    groups = sorted(gate.signers.person(args.as_name).groups)
    now = utc_now()
    kwargs = {"protected": env.protected, "break_glass": args.break_glass, "now": now}
    for action in actions_for(operation, info):
        print(gate.policies.explain(args.as_name, groups, action, info, env.name, **kwargs))
    decision = decide_operation(
        lambda action: gate.policies.decide(args.as_name, groups, action, info, env.name, **kwargs),
        operation,
        info,
    )
    # A what-if grants nothing, but who asked what is still worth a line in the log.
    app.audit.append(
        "policy.explained",
        actor=os_user(),
        environment=env.name,
        task=info.name,
        payload={
            "as": args.as_name,
            "action": args.action,
            "allowed": decision.allowed,
            "reasons": decision.reasons,
            "policy_version": gate.version,
        },
    )
    return 0 if decision.allowed else 3


def cmd_test(args: argparse.Namespace) -> int:
    """Run a table of expected decisions; exit 1 if any row fails."""
    from oneoff._auth.policy import format_test_results, run_policy_tests

    app = app_from(args)
    gate = _gate(app)
    signers = gate.signers if gate.config.signers.exists() else None
    results = run_policy_tests(Path(args.file), gate.policies, signers, app.project)
    print(format_test_results(results))
    return 0 if all(r.passed for r in results) else 1
