"""Runs whose runner died: kill what is left of them, mark them lost, free their locks.

Any oneoff command that opens the store calls ``reap_lost_runs`` first (see
``oneoff.cli._common``), and taking a lock always does: a runner killed with SIGKILL
runs no more code, so the next command puts its run down. Its process tree is killed
(its cgroup, its mark: see oneoff._contain) before anything else, and its locks are
freed only once that tree is confirmed empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneoff._clock import utc_iso
from oneoff._liveness import runner_alive

if TYPE_CHECKING:
    from oneoff._app import App

__all__ = ["reap_lost_runs"]


def reap_lost_runs(app: App) -> list[str]:
    """Mark runs whose runner died (SIGKILL, power loss) as lost instead of running forever,
    after killing what they left running; then free the locks of dead runners."""
    from oneoff._contain import RunTree
    from oneoff._identity import os_user
    from oneoff._locks import reap_locks
    from oneoff._pipeline import audit_run

    lost = []
    store = app.store
    emptied: dict[str, bool] = {}
    for run in store.running_runs():
        if runner_alive(run.runner_host, run.runner_pid, run.runner_token) is not False:
            continue
        # The tree first: whatever happens to the record, nothing of the run keeps working.
        emptied[run.id] = RunTree.find(run.id).stop()
        with store.tx():
            marked = store.mark_lost(run.id, ended_at=utc_iso())
        if marked:
            lost.append(run.id)
            audit_run(
                app, "run.lost", run, actor=os_user(),
                payload={
                    "runner_pid": run.runner_pid,
                    "started_at": run.started_at,
                    "tree_empty": emptied[run.id],
                },
            )  # fmt: skip
    reap_locks(app, emptied)  # [stage: lock] leases of dead runners, and expired ones elsewhere
    return lost
