"""Break-glass runs: announced when they start, audited apart, listed for review."""

from __future__ import annotations

import json
import subprocess
from typing import IO, TYPE_CHECKING

from oneoff._access import break_glass_allowed
from oneoff._record import dataclass
from oneoff.errors import NotPermitted, OneoffError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._auth.gate import Gate
    from oneoff._identity import Principal
    from oneoff._plan import HashedPlan

__all__ = ["MAX_REASON", "BreakGlassRun", "announce", "break_glass_runs", "reason_problem"]

NOTIFY_TIMEOUT = 10.0
# Enough for an incident id and a sentence; a reason is a label, not a report.
MAX_REASON = 500


def reason_problem(reason: str) -> str | None:
    """Why ``reason`` cannot be a break-glass reason, or None when it can.

    It reaches the notifier (a pager line, a chat message), the audit log and review
    listings: a newline or other control character would let one reason forge a second
    notification line, or hide part of itself on a terminal.
    """
    import unicodedata

    if not reason.strip():
        return '--break-glass needs --reason "why this cannot wait"'
    if len(reason) > MAX_REASON:
        return f"--reason is {len(reason)} characters long; at most {MAX_REASON} are allowed"
    bad = [c for c in reason if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        shown = ", ".join(sorted({f"U+{ord(c):04X}" for c in bad}))
        return f"--reason may not contain control characters ({shown}): one line of text"
    return None


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
    gate: Gate, plan: HashedPlan, principal: Principal, run_id: str, reason: str, stderr: IO[bytes]
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
    target = notifier.webhook
    try:
        if notifier.command:
            from oneoff._environ import default_path
            from oneoff._proc import resolve_command

            # Resolved on the app's own PATH, never the operator's: an operator must not
            # be able to answer their own break-glass page with a do-nothing script.
            path = default_path(app.project)
            target = resolve_command(notifier.command[0], {"PATH": path}, str(app.root))
            env = {"PATH": path}
            env.update({f"ONEOFF_BREAK_GLASS_{k.upper()}": v for k, v in details.items()})
            subprocess.run(
                [target, *notifier.command[1:]],
                cwd=app.root,
                env=env,
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=NOTIFY_TIMEOUT,
            )
        else:
            import urllib.request

            body = json.dumps({"event": "oneoff.break_glass", **details}).encode()
            req = urllib.request.Request(  # noqa: S310 - the scheme was checked at load
                notifier.webhook, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=NOTIFY_TIMEOUT):  # noqa: S310
                pass
    except (OSError, subprocess.SubprocessError, OneoffError) as exc:
        message = exc.message if isinstance(exc, OneoffError) else str(exc)
        # Break-glass is allowed because it is announced: an unannounced one does not run.
        error = NotPermitted(
            f"break-glass run {run_id} refused: the notification failed ({message[:300]})",
            hint="fix the [access] break_glass notifier, or get the approvals",
        )
        gate.refuse(
            error,
            "break_glass.notify_failed",
            actor=principal.name,
            environment=plan.environment.name,
            task=plan.task.name,
            run_id=run_id,
            payload={"error": message[:500], "target": target},
        )
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
