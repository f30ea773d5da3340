"""Named resource locks as leases: taken atomically, renewed while the run lives, reaped after.

A run holds every lock its task declares, all or none (taking them one by one could
deadlock two runs that each got half). A lease is renewed every ``RENEW_EVERY`` seconds
by a daemon thread; a runner killed with SIGKILL stops renewing, and the next oneoff
command frees its locks and marks its run ``lost``: on the same machine once the run's
process tree is killed and confirmed empty (oneoff._contain), for a lock is a promise that
nobody else touches the resource; from another machine, ``LEASE`` seconds after the last
renewal.

The other side of that rule: a runner that cannot renew (paused past its lease, or cut
off from the store) may have lost its locks to another run, so it stops its own task
rather than let two runs work on one resource. See ``Lease``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from oneoff._clock import utc_iso
from oneoff._liveness import host_id, process_token, runner_alive
from oneoff._store.interface import LockRecord
from oneoff.errors import LockBusy, StoreError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._store.interface import Store

__all__ = ["LEASE", "MAX_WAIT", "RENEW_EVERY", "Lease", "acquire", "check_wait", "reap_locks"]

LEASE = 30.0
RENEW_EVERY = 10.0
POLL = 0.2
MAX_WAIT = 7 * 24 * 3600.0  # as long as the longest task may run


def check_wait(wait: float | None) -> None:
    """Refuse a lock wait that is negative, not a number, or longer than ``MAX_WAIT``."""
    if wait is not None and not 0 <= wait <= MAX_WAIT:  # nan compares false: refused too
        raise UsageError(f"--wait must be between 0 and {MAX_WAIT:g} seconds, not {wait:g}")


def lease_end(lock: LockRecord) -> _dt.datetime | None:
    """When ``lock``'s lease ends; None when the stored time cannot be read (damage)."""
    stored: object = lock.expires_at  # whatever the damaged row holds
    if not isinstance(stored, str):
        return None
    try:
        end = _dt.datetime.fromisoformat(stored.replace("Z", "+00:00"))
    except ValueError:
        return None
    return end if end.tzinfo is not None else None


def lock_damage(lock: LockRecord) -> str | None:
    """What makes a stored lease unreadable (a damaged store), or None when it is sound."""
    for name in ("run_id", "holder", "runner_host"):
        if not isinstance(getattr(lock, name), str):
            return f"its {name} {getattr(lock, name)!r} is not text"
    pid: object = lock.runner_pid
    if not isinstance(pid, int) or isinstance(pid, bool):
        return f"its runner pid {pid!r} is not a number"
    if lease_end(lock) is None:
        return f"its lease end {lock.expires_at!r} cannot be read"
    return None


_iso = utc_iso


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Lease:
    """Locks held by one run; renews them in the background until ``release()``.

    A lease that cannot be renewed (another machine reaped it as expired and may hold the
    locks now, or the store stayed unreachable for a whole lease) is *lost*: the renewer
    audits ``lock.lease_lost``, warns, and stops the run's task (SIGTERM to its process
    group, SIGKILL ``grace`` seconds later) so that two holders never work at once.
    """

    def __init__(
        self,
        app: App,
        run_id: str,
        names: Sequence[str],
        lease: float,
        *,
        holder: str = "",
        task: str | None = None,
        environment: str | None = None,
        grace: float = 5.0,
    ) -> None:
        self.app = app
        self.run_id = run_id
        self.names = tuple(sorted(set(names)))  # a lock named twice is held once
        self.lease = lease
        self.holder = holder
        self.task = task
        self.environment = environment
        self.grace = grace
        self.lost = False
        self.stopped: list[int] = []  # pids of the task's processes signalled after the loss
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, args=(app.store,), name="oneoff-lease", daemon=True
        )
        self._thread.start()

    def _renew(self, main: Store) -> None:
        # A connection may belong to one thread (sqlite3's do): the renewer opens its own.
        store: Store | None = None
        last_ok = time.monotonic()
        reason = ""
        try:
            while not self._stop.wait(min(RENEW_EVERY, self.lease / 3)):
                try:
                    store = store or main.connect_again()
                    with store.tx():
                        renewed = store.renew_locks(self.run_id, _iso(_now() + _td(self.lease)))
                except Exception as exc:  # StoreError; anything else is a bug: fail safe
                    if store is not None:  # a fresh connection next time: a broken one
                        with contextlib.suppress(Exception):  # may still hold a lock
                            store.close()
                        store = None
                    # Retry until the lease would have expired: only then may another
                    # runner take the locks, so only then is the loss certain enough.
                    if time.monotonic() - last_ok < self.lease:
                        continue
                    reason = f"cannot renew for {self.lease:g}s: {exc}"
                else:
                    if renewed >= len(self.names):
                        last_ok = time.monotonic()
                        continue
                    reason = "taken away: reaped as expired by another runner"
                self.lost = True
                break
            if self.lost:
                store = self._on_lost(store, main, reason)
        finally:
            if store is not None:
                store.close()

    def _on_lost(self, store: Store | None, main: Store, reason: str) -> Store | None:
        """Stop the task first (it may no longer hold its locks), then say so; the
        connection used (the caller closes it)."""
        self.stopped = _signal_run(self.run_id, signal.SIGTERM)
        from oneoff._log import log

        try:
            from oneoff._audit.keys import AuditKey
            from oneoff._audit.log import AuditLog

            if store is None:  # one more try, for the audit event, once the task is told
                store = main.connect_again()
            AuditLog(store, AuditKey(self.app.state_dir)).append(
                "lock.lease_lost",
                actor=self.holder,
                task=self.task,
                environment=self.environment,
                run_id=self.run_id,
                payload={
                    "locks": list(self.names),
                    "reason": reason,
                    "stopped_pids": self.stopped,
                    "signal": "SIGTERM" if self.stopped else None,
                },
            )
        except Exception as exc:  # StoreError; anything else must not skip the kill below
            log("lock.lease_lost_unaudited", f"lease loss not audited: {exc}", level="warning")
        stopping = "; stopping the task" if self.stopped else ""
        log(
            "lock.lease_lost",
            f"lost the lease on {', '.join(self.names)} ({reason}){stopping}",
            level="warning",
            hint="another run may hold these locks now: check `oneoff locks` and `oneoff runs`",
        )
        # Whatever the task started after the SIGTERM is stopped too, and anything still
        # alive after the grace period is killed, until the run ends and release() is called.
        kill_at = time.monotonic() + self.grace
        while not self._stop.wait(POLL):
            if time.monotonic() >= kill_at:
                _signal_run(self.run_id, signal.SIGKILL)
            else:
                self.stopped += _signal_run(self.run_id, signal.SIGTERM, skip=self.stopped)
        return store

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with self.app.store.tx():
            self.app.store.drop_locks(self.run_id)

    def abandon(self) -> None:
        """Stop renewing but keep the locks: the run's processes could not be confirmed
        gone. Once this runner exits, the next oneoff command kills what is left and
        frees the locks only when nothing of the run is alive (``reap_locks``)."""
        self._stop.set()
        self._thread.join()


def _signal_run(run_id: str, signum: int, skip: Sequence[int] = ()) -> list[int]:
    """Signal the process groups of this runner's children that belong to ``run_id``.

    The task is recognised by the ``ONEOFF_RUN_ID`` the pipeline gives it, so nothing else
    this process started is touched. Linux only (``/proc``); elsewhere nothing is found
    and the loss is only audited and logged.
    """
    mark = f"ONEOFF_RUN_ID={run_id}".encode()
    signalled = []
    for pid in sorted(_children() - set(skip)):
        try:
            # Pin the pid first, then check whose it is: a reaped and reused pid cannot
            # be signalled by mistake.
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if mark not in fh.read().split(b"\0"):
                    continue
            signal.pidfd_send_signal(pidfd, signum)
            if os.getpgid(pid) == pid:  # its own group (or session): the task's whole tree
                os.killpg(pid, signum)
            signalled.append(pid)
        except OSError:
            continue
        finally:
            os.close(pidfd)
    return signalled


def _children() -> set[int]:
    """This process's children (adopted orphans included: the runner is a subreaper)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as fh:
                found.update(int(p) for p in fh.read().split())
    return found


def _td(seconds: float) -> _dt.timedelta:
    return _dt.timedelta(seconds=seconds)


def acquire(
    app: App,
    names: Sequence[str],
    *,
    run_id: str,
    holder: str,
    wait: float | None = None,
    lease: float | None = None,
    task: str | None = None,
    environment: str | None = None,
    grace: float = 5.0,
) -> Lease | None:
    """Take every lock in ``names`` for ``run_id`` or raise LockBusy naming the holder.

    With ``wait`` (seconds), poll until they are free or the time is up. ``task``,
    ``environment`` and ``grace`` (the task's SIGTERM-to-SIGKILL delay) are for a lease
    lost while the run goes on: see ``Lease``.
    """
    check_wait(wait)
    if not names:
        return None
    lease = LEASE if lease is None else lease
    store = app.store
    deadline = time.monotonic() + (wait or 0.0)
    pid = host_id(), 0
    while True:
        reap_locks(app)
        now = _now()
        with store.tx():
            held = store.lock_holders(names)
            if not held:
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
            return Lease(
                app, run_id, names, lease,
                holder=holder, task=task, environment=environment, grace=grace,
            )  # fmt: skip
        for lock in held:
            damage = lock_damage(lock)
            if damage is not None:
                # reap_locks keeps it (nothing proves it free): waiting would never end.
                raise StoreError(
                    f"lock {lock.name!r}: {damage} (the store is damaged)",
                    hint=f"once run {lock.run_id!r} is known to be over, delete the row "
                    "from the locks table",
                )
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


def reap_locks(app: App, emptied: dict[str, bool] | None = None) -> list[str]:
    """Free the locks of dead runners (and expired leases elsewhere); mark their runs lost.

    A dead runner's lock goes only once its run's process tree (oneoff._contain) is killed
    and confirmed empty; ``emptied`` caches that per run id. A lease of a runner on another
    machine goes once expired: that runner's renewer stops its task when it notices.
    """
    from oneoff._contain import RunTree

    store = app.store
    now = _now()
    freed = []
    emptied = {} if emptied is None else emptied
    for lock in store.lock_holders():
        if lock_damage(lock) is not None:
            # Nothing about a damaged lease can be trusted, its runner's death included:
            # keep it, and let only runs needing that lock refuse (see acquire).
            continue
        try:
            run = store.get_run(lock.run_id)
        except UsageError:  # the run row may not exist yet (or ever)
            run = None
        token = run.runner_token if run else process_token(lock.runner_pid)
        alive = runner_alive(lock.runner_host, lock.runner_pid, token)
        end = lease_end(lock)
        expired = end is not None and end < now
        if alive is True or (alive is None and not expired):
            continue
        if alive is False:
            if lock.run_id not in emptied:
                emptied[lock.run_id] = RunTree.find(lock.run_id).stop()
            if not emptied[lock.run_id]:
                continue  # something of the run still lives: the lock stays held
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
