"""The daemon as its runners' guard: a task never outlives a runner that died.

In-process, a task gets PR_SET_PDEATHSIG from a ``preexec_fn``, which forces a full
``fork()`` of the runner (~3 ms for a Python process of this size) instead of ``vfork()``.
Under the daemon the same guarantee comes from the daemon instead, and covers more: the
daemon is a child subreaper, so when a runner dies (SIGKILL included) the task and
everything it started are re-parented to the daemon, which sees the runner's pidfd become
readable and kills every process it did not fork itself (each one's process group too),
then reaps them. PR_SET_PDEATHSIG only ever reached the task, not its children.

The daemon therefore outlives its runners: once stopped, it closes its socket (new
commands run in-process or reach a new daemon) and keeps guarding until its last runner
ends. Only killing the daemon itself (SIGKILL, or a second SIGTERM) ends the guard early.
"""

from __future__ import annotations

import contextlib
import os
import signal

from oneoff._proctree import PR_SET_CHILD_SUBREAPER, Libc, children, killpg

__all__ = ["Guard"]


class Guard:
    """Runners by pid (with their pidfds, when the kernel has them), and what they leave."""

    def __init__(self) -> None:
        Libc().prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.runners: dict[int, int] = {}  # pid -> pidfd, or -1 (then sweeps find the end)
        self.retiring: set[int] = set()  # our own forks on their way out (spares)
        self.killed = False  # the last sweep killed orphans: sweep again soon

    def retire(self, pid: int) -> None:
        """A fork of ours that ends by itself: not an orphan, just reap it."""
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # already reaped (it died while it was the spare)
        if not done:
            self.retiring.add(pid)

    def watch(self, pid: int) -> int:
        """Guard runner ``pid``; its pidfd (turns readable when it ends), or -1 without."""
        self.runners[pid] = -1  # known first: a sweep must never take it for an orphan
        # ENOSYS (Linux < 5.3), EPERM (seccomp), EMFILE: without it a sweep still finds the end
        with contextlib.suppress(AttributeError, OSError):
            self.runners[pid] = os.pidfd_open(pid)
        return self.runners[pid]

    def sweep(self, spare: int | None) -> list[int]:
        """Reap every child that ended and kill whatever a dead runner left behind; the
        pidfds of runners that ended (the caller unregisters them; this closes nothing).

        Only our direct children are killed (with their process groups): their pids stay
        ours until we reap them, so no reused pid is ever hit. Their own children come to
        us when they die (we are a subreaper) and go in a later sweep.
        """
        ended: list[int] = []
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.retiring.discard(pid)
            pidfd = self.runners.pop(pid, None)
            if pidfd is not None and pidfd >= 0:
                ended.append(pidfd)
        known = set(self.runners) | self.retiring | ({spare} if spare is not None else set())
        orphans = children(os.getpid()) - known
        for pid in sorted(orphans):
            killpg(pid, signal.SIGKILL)  # a task leads its own process group
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.killed = bool(orphans)
        return ended

    def busy(self) -> bool:
        """Runners still running, forks of ours still finishing (a refusing spare must
        outlive us long enough to say so: its PR_SET_PDEATHSIG would cut it short), or
        orphans still being put down."""
        return bool(self.runners) or bool(self.retiring) or self.killed
