"""Named resource locks as leases: taken atomically, renewed while the run lives, reaped after.

A run holds every lock its task declares, all or none (taking them one by one could
deadlock two runs that each got half). A lease is renewed every ``RENEW_EVERY`` seconds
by a daemon thread; a runner killed with SIGKILL stops renewing, and the next oneoff
command frees its locks and marks its run ``lost``: at once on the same machine (the
runner's pid is gone), after ``LEASE`` seconds from another one.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff._liveness import host_id, process_token, runner_alive
from oneoff._store.interface import LockRecord
from oneoff.errors import LockBusy, UsageError

if TYPE_CHECKING:
    from oneoff._app import App

__all__ = ["LEASE", "RENEW_EVERY", "Lease", "acquire", "reap_locks"]

LEASE = 30.0
RENEW_EVERY = 10.0
POLL = 0.2


def _iso(when: _dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Lease:
    """Locks held by one run; renews them in the background until ``release()``."""

    def __init__(self, app: App, run_id: str, names: Sequence[str], lease: float) -> None:
        self.app = app
        self.run_id = run_id
        self.names = tuple(names)
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, args=(app.store.path,), name="oneoff-lease", daemon=True
        )
        self._thread.start()

    def _renew(self, path: Path) -> None:
        from oneoff._store.sqlite import SQLiteStore

        # sqlite3 connections belong to one thread: the renewer opens its own.
        store = SQLiteStore(path)
        try:
            while not self._stop.wait(min(RENEW_EVERY, self.lease / 3)):
                with store.tx():
                    renewed = store.renew_locks(self.run_id, _iso(_now() + _td(self.lease)))
                if renewed < len(self.names):
                    self.lost = True  # reaped as expired: say so when the run ends
        finally:
            store.close()

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with self.app.store.tx():
            self.app.store.drop_locks(self.run_id)


def _td(seconds: float) -> _dt.timedelta:
    return _dt.timedelta(seconds=seconds)


def acquire(
    app: App,
    names: Sequence[str],
    *,
    run_id: str,
    holder: str,
    wait: float | None = None,
    lease: float = LEASE,
) -> Lease | None:
    """Take every lock in ``names`` for ``run_id`` or raise LockBusy naming the holder.

    With ``wait`` (seconds), poll until they are free or the time is up.
    """
    if not names:
        return None
    store = app.store
    deadline = time.monotonic() + (wait or 0.0)
    pid = host_id(), 0
    while True:
        reap_locks(app)
        now = _now()
        with store.tx():
            held = store.lock_holders(names)
            if not held:
                import os

                pid = host_id(), os.getpid()
                store.take_locks(
                    [
                        LockRecord(
                            name, run_id, holder, pid[0], pid[1], _iso(now), _iso(now + _td(lease))
                        )
                        for name in sorted(set(names))
                    ]
                )
        if not held:
            return Lease(app, run_id, names, lease)
        if time.monotonic() >= deadline:
            first = held[0]
            raise LockBusy(
                f"lock {first.name!r} is held by run {first.run_id} ({first.holder}, "
                f"pid {first.runner_pid}) since {first.acquired_at}",
                hint="wait for it: pass --wait SECONDS"
                if not wait
                else f"still held after waiting {wait:g}s",
            )
        time.sleep(POLL)


def reap_locks(app: App) -> list[str]:
    """Free the locks of dead runners (and expired leases elsewhere); mark their runs lost."""
    store = app.store
    now = _now()
    freed = []
    for lock in store.lock_holders():
        try:
            run = store.get_run(lock.run_id)
        except UsageError:  # the run row may not exist yet (or ever)
            run = None
        token = run.runner_token if run else process_token(lock.runner_pid)
        alive = runner_alive(lock.runner_host, lock.runner_pid, token)
        expired = _dt.datetime.fromisoformat(lock.expires_at.replace("Z", "+00:00")) < now
        if alive is True or (alive is None and not expired):
            continue
        with store.tx():
            dropped = store.drop_locks(lock.run_id, [lock.name])
            marked = bool(run) and store.mark_lost(lock.run_id, ended_at=_iso(now))
        if not dropped:
            continue
        freed.append(lock.name)
        app.audit.append(
            "lock.reaped",
            actor=lock.holder,
            task=run.task if run else None,
            environment=run.environment if run else None,
            run_id=lock.run_id,
            payload={
                "lock": lock.name,
                "runner_pid": lock.runner_pid,
                "expired": expired,
                "run_marked_lost": marked,
            },
        )
    return freed
