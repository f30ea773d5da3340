"""`oneoff policy explain` (a what-if decision) and `oneoff policy test` (a table, for CI)."""

from __future__ import annotations

import argparse
from pathlib import Path

from oneoff._identity import os_user, utc_now
from oneoff.cli._access import _gate
from oneoff.cli._common import app_from

__all__ = ["cmd_explain", "cmd_test"]


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision for NAME; exit 0 when allowed, 3 when denied."""
    from oneoff._auth.policy import TaskInfo

    app = app_from(args)
    gate = _gate(app)
    task = app.project.task(args.task)
    env = app.project.environment(args.env)
    groups = sorted(gate.signers.person(args.as_name).groups)
    info = TaskInfo(task.name, task.risk, task.locks, task.environments or (), task.interactive)
    now = utc_now()
    kwargs = {"protected": env.protected, "break_glass": args.break_glass, "now": now}
    print(gate.policies.explain(args.as_name, groups, args.action, info, env.name, **kwargs))
    decision = gate.policies.decide(args.as_name, groups, args.action, info, env.name, **kwargs)
    # A what-if grants nothing, but who asked what is still worth a line in the log.
    app.audit.append(
        "policy.explained",
        actor=os_user(),
        environment=env.name,
        task=task.name,
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
    results = run_policy_tests(Path(args.file), gate.policies, signers)
    print(format_test_results(results))
    return 0 if all(r.passed for r in results) else 1
