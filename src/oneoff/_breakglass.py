"""Break-glass runs: announced when they start, audited apart, listed for review."""

from __future__ import annotations

import json
import os
import subprocess
from typing import IO, TYPE_CHECKING

from oneoff._access import break_glass_allowed
from oneoff._record import dataclass
from oneoff.errors import UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._auth.gate import Gate
    from oneoff._identity import Principal
    from oneoff._plan import Plan

__all__ = ["BreakGlassRun", "announce", "break_glass_runs"]

NOTIFY_TIMEOUT = 10.0


@dataclass(frozen=True)
class BreakGlassRun:
    """One break-glass run for review: who, what, where, why, and how it ended."""

    run_id: str
    at: str
    actor: str
    task: str
    environment: str
    reason: str
    status: str


def announce(
    gate: Gate, plan: Plan, principal: Principal, run_id: str, reason: str, stderr: IO[bytes]
) -> None:
    """Audit a break-glass run and notify whoever the app configured; never silently."""
    app = gate.app
    details = {
        "run": run_id,
        "actor": principal.name,
        "task": plan.task.name,
        "environment": plan.environment.name,
        "reason": reason,
        "plan_hash": plan.hash,
    }
    app.audit.append(
        "run.break_glass",
        actor=principal.name,
        environment=plan.environment.name,
        task=plan.task.name,
        run_id=run_id,
        plan_hash=plan.hash,
        payload={"reason": reason, "key": principal.key},
    )
    notifier = break_glass_allowed(plan.environment, gate.config)
    if notifier is None:
        return
    try:
        if notifier.command:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            env.update({f"ONEOFF_BREAK_GLASS_{k.upper()}": v for k, v in details.items()})
            subprocess.run(
                list(notifier.command),
                cwd=app.root,
                env=env,
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=NOTIFY_TIMEOUT,
            )
            target = notifier.command[0]
        else:
            import urllib.request

            body = json.dumps({"event": "oneoff.break_glass", **details}).encode()
            req = urllib.request.Request(  # noqa: S310 - the scheme was checked at load
                notifier.webhook, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=NOTIFY_TIMEOUT):  # noqa: S310
                pass
            target = notifier.webhook
    except (OSError, subprocess.SubprocessError) as exc:
        # The emergency run goes ahead, but the failure is on the record and on screen.
        app.audit.append(
            "break_glass.notify_failed",
            actor=principal.name,
            run_id=run_id,
            payload={"error": str(exc)[:500]},
        )
        stderr.write(f"oneoff: warning: break-glass notification failed: {exc}\n".encode())
        return
    app.audit.append(
        "break_glass.notified", actor=principal.name, run_id=run_id, payload={"target": target}
    )


def break_glass_runs(app: App) -> list[BreakGlassRun]:
    """Every break-glass run in the audit log, newest first, with its final status."""
    found = []
    store = app.store
    for event in app.audit.events(kind="run.break_glass"):
        if event.run_id is None:
            continue
        status: str
        try:
            status = store.get_run(event.run_id).status
        except UsageError:  # refused before it was recorded
            status = "not started"
        found.append(
            BreakGlassRun(
                event.run_id,
                event.ts,
                event.actor,
                event.task or "",
                event.environment or "",
                str(event.payload.get("reason", "")),
                status,
            )
        )
    return found[::-1]
