"""Which Cedar actions each operation asks: the one mapping the pipeline and `policy test` share.

A policy is only as good as the question it is asked. Before this module, ``console``,
``plan``, ``release`` and ``audit-export`` were in the schema but no command ever asked
them, so a ``forbid`` on consoles passed ``oneoff policy test`` while consoles opened in
production. Now every command asks through :func:`decide_operation`, and ``policy test``
evaluates each row through the same function, refusing rows about a question no command
asks (``console`` on a task that is not interactive).

=============  ===========================================================================
operation      Cedar actions asked (all must allow; the first denial decides)
=============  ===========================================================================
plan           ``plan``
request        ``plan``, then what ``run`` asks: asking for approval is planning to run
run            ``run``; and ``console`` too for an interactive task, so a ``forbid`` on
               either stops a console
approve        ``approve``
release        ``release`` (create, promote, rollback), on the app resource below
audit-export   ``audit-export``, on the app resource, environment ``*`` (the whole log)
=============  ===========================================================================

``release`` and ``audit-export`` act on the app, not a task. The Cedar schema keeps one
resource type so that existing policies reading ``resource.risk`` stay valid; these two
actions decide on ``Oneoff::Task::"oneoff:app"`` (risk "high", no locks), a name no task
can take (task names cannot hold ``:``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from oneoff._auth.policy import Decision, TaskInfo
from oneoff.errors import UsageError

if TYPE_CHECKING:
    from oneoff._manifest import Environment, Project

__all__ = [
    "ALL_ENVIRONMENTS",
    "APP_RESOURCE",
    "OPERATIONS",
    "actions_for",
    "app_resource",
    "combine",
    "decide_operation",
    "operation_for_action",
    "whole_app",
]

APP_RESOURCE = "oneoff:app"
ALL_ENVIRONMENTS = "*"
OPERATIONS = ("plan", "request", "run", "approve", "release", "audit-export")
_ON_APP = ("release", "audit-export")


def app_resource() -> TaskInfo:
    """The resource ``release`` and ``audit-export`` decide on."""
    return TaskInfo(name=APP_RESOURCE, risk="high")


def whole_app(project: Project) -> Environment:
    """The environment ``audit-export`` decides in: ``*``, the whole log.

    Protected if any environment is (the log holds its events); the OS user is accepted
    only if every environment accepts it.
    """
    from oneoff._record import replace

    envs = list(project.environments.values())
    if not envs:
        raise UsageError("the app declares no environments; nothing to decide in")
    return replace(
        envs[0],
        name=ALL_ENVIRONMENTS,
        protected=any(e.protected for e in envs),
        allow_os_user=all(e.allow_os_user for e in envs),
    )


def actions_for(operation: str, task: TaskInfo) -> tuple[str, ...]:
    """The Cedar actions ``operation`` asks about ``task``, in the order they are asked."""
    if operation not in OPERATIONS:
        raise UsageError(f"unknown operation {operation!r}; expected one of {OPERATIONS}")
    if operation in _ON_APP:
        if task.name != APP_RESOURCE:
            raise UsageError(f"{operation} acts on the app ({APP_RESOURCE}), not task {task.name}")
        return (operation,)
    if task.name == APP_RESOURCE:
        raise UsageError(f"{operation} acts on a task, not on the app")
    if operation == "run":
        return ("run", "console") if task.interactive else ("run",)
    if operation == "request":
        return ("plan", *actions_for("run", task))
    return (operation,)


def operation_for_action(action: str, task: TaskInfo) -> str:
    """The operation that asks ``action`` about ``task``; UsageError if none ever does.

    ``policy test`` rows name a Cedar action; this is how a row becomes the question the
    pipeline really asks (``console`` is asked by running an interactive task).
    """
    if action in _ON_APP:
        return action
    if action == "console":
        if not task.interactive:
            raise UsageError(
                f"no command asks console for {task.name}: it is not interactive "
                "(consoles are interactive tasks; running it asks run)"
            )
        return "run"
    if action in ("plan", "run", "approve"):
        return action
    raise UsageError(f"unknown action {action!r}")


def combine(decisions: Sequence[Decision]) -> Decision:
    """All must allow: the first denial, or one allow whose reasons are every permit's."""
    if not decisions:
        # An empty "all of" would allow by accident; it is a programming error.
        raise ValueError("combine() needs at least one decision")
    for decision in decisions:
        if not decision.allowed:
            return decision
    reasons = sorted({r for d in decisions for r in d.reasons})
    errors = [e for d in decisions for e in d.errors]
    message = "; ".join(d.message for d in decisions)
    return Decision(True, reasons, errors, message)


def decide_operation(decide: Callable[[str], Decision], operation: str, task: TaskInfo) -> Decision:
    """Ask ``decide(action)`` for each action ``operation`` needs; stop at the first denial."""
    decisions = []
    for action in actions_for(operation, task):
        decision = decide(action)
        decisions.append(decision)
        if not decision.allowed:
            break
    return combine(decisions)
