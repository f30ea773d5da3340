"""What this machine lets oneoff guarantee: one check per capability, each a plain sentence.

Library first: ``checks()`` is what `oneoff doctor` prints and what a server may report.
A check never fails the machine by itself; it states which guarantee holds and which
weaker one replaces it. New checks (executors, stores) append to ``CHECKS``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from oneoff._record import dataclass

__all__ = ["CHECKS", "Check", "app_checks", "checks"]

_LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool  # the strong guarantee holds (False: the fallback named in ``detail``)
    value: str  # a word or two: what is used
    detail: str  # what that means for a run


def _containment() -> Check:
    from oneoff._contain import capability

    cap = capability()
    if cap.method == "cgroup2":
        return Check(
            "containment", True, "cgroup v2",
            f"{cap.detail}; a SIGKILLed runner's whole tree is killed by the next oneoff "
            "command, and its locks are freed only once that cgroup is empty",
        )  # fmt: skip
    return Check(
        "containment", False, "process groups + run mark",
        f"{cap.detail}; the runner's tree is found by its ONEOFF_RUN_ID mark and the "
        "process groups and sessions marked processes lead: a process that rewrites its "
        "environment and leaves its group and session escapes",
    )  # fmt: skip


def _subreaper() -> Check:
    if not _LINUX:
        return Check("subreaper", False, "no", "not Linux: orphans go to init")
    return Check(
        "subreaper", True, "yes",
        "while a task runs, its orphans re-parent to the runner, which kills them with it",
    )  # fmt: skip


def _pidfd() -> Check:
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or "not available"
        return Check("pidfd", False, "no", f"pidfd_open: {reason}; pids are polled instead")
    os.close(fd)
    return Check("pidfd", True, "yes", "processes are signalled by pidfd: no reused pid is hit")


def _death_signal() -> Check:
    if not _LINUX:
        return Check("death signal", False, "no", "not Linux: a task outlives a killed runner")
    return Check(
        "death signal", True, "yes",
        "an in-process runner's task gets PR_SET_PDEATHSIG(SIGKILL); under the daemon, "
        "the daemon kills what a dead runner leaves",
    )  # fmt: skip


def _executors() -> list[Check]:
    from oneoff._executor.available import executors

    return [
        Check(f"executor {cap.name}", cap.ok, "runs here" if cap.ok else "cannot run",
              cap.detail)
        for cap in executors()
    ]  # fmt: skip


CHECKS: list[Callable[[], Check | list[Check]]] = [
    _containment, _subreaper, _pidfd, _death_signal, _executors,
]  # fmt: skip


def checks() -> list[Check]:
    found: list[Check] = []
    for check in CHECKS:
        result = check()
        found += result if isinstance(result, list) else [result]
    return found


def app_checks(environments: Mapping[str, str], found: list[Check]) -> list[Check]:
    """One check per environment of an app: whether its executor runs on this machine."""
    runs = {c.name.removeprefix("executor "): c.ok for c in found if c.name.startswith("executor ")}
    return [
        Check(f"environment {env}", runs.get(kind, False), kind,
              "its tasks can run here" if runs.get(kind, False)
              else f"its tasks cannot run here: see executor {kind}")
        for env, kind in sorted(environments.items())
    ]  # fmt: skip
