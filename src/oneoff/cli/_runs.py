"""`oneoff runs` and `oneoff show`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from oneoff._pipeline import reap_lost_runs
from oneoff._record import asdict
from oneoff._store.interface import RUN_STATUSES, RunRecord
from oneoff.cli._common import bounded, emit_json, terminal_safe
from oneoff.cli._remote import closed
from oneoff.errors import UsageError

__all__ = ["cmd_runs", "cmd_show"]


def cmd_runs(args: argparse.Namespace) -> int:
    if args.status is not None and args.status not in RUN_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(RUN_STATUSES)}")
    bounded(args.limit, "--limit", 1)
    from oneoff.cli._remote import resolve

    runs: Sequence[RunRecord]
    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff.cli._remote_runs import remote_runs

        with closed(remote):
            runs = remote_runs(remote, args)
    else:
        assert app is not None
        reap_lost_runs(app)
        runs = app.store.list_runs(
            limit=args.limit, task=args.task, environment=args.env, status=args.status
        )
    if args.json:
        emit_json([_as_dict(r) for r in runs])
        return 0
    if not runs:
        print("no runs recorded")
        return 0
    print(f"{'RUN':<24} {'TASK':<16} {'ENV':<12} {'STATUS':<10} {'EXIT':>4}  STARTED  BY")
    for run in runs:
        code = "" if run.exit_code is None else str(run.exit_code)
        # Each field escaped: a server's answer, or a stored row, may hold anything.
        print(
            terminal_safe(
                f"{run.id:<24} {run.task:<16} {run.environment:<12} "
                f"{run.status:<10} {code:>4}  {run.started_at}  {run.principal}"
            )
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff.cli._remote_runs import remote_run

        with closed(remote):
            run = remote_run(remote, args.run)
    else:
        assert app is not None
        reap_lost_runs(app)
        run = app.store.get_run(args.run)
    if args.json:
        emit_json(_as_dict(run))
        return 0
    for key, value in _as_dict(run).items():
        if value in (None, {}, False) and key not in ("exit_code",):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{terminal_safe(key):<17} {terminal_safe(str(value))}")
    return 0


def run_as_dict(run: RunRecord) -> dict[str, object]:
    """A run as `runs --json`, `show --json` and `run --json` print it."""
    return _as_dict(run)


def _as_dict(run: RunRecord) -> dict[str, object]:
    data = asdict(run)
    data.pop("extra", None)
    return data
