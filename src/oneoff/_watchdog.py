"""A run's watchdog: a tiny fork of the runner that kills the run's tree the moment the
runner dies, however it dies.

Why: a runner killed with SIGKILL (alone, or with the daemon that forked it) runs no more
code, and its task's grandchildren (own process group, own session, double forked) are
not its children: ``PR_SET_PDEATHSIG`` reaches none of them. Without the watchdog they
ran until the next oneoff command on the machine reaped the dead run (oneoff._reap).

How: before the task starts the runner forks (no exec: cheap) a child that holds the
read end of a pipe whose only write end is the runner's (close-on-exec, so the task never
gets it). The kernel closes that end when the runner dies, by any means; the watchdog
then reads EOF without the runner's "done" byte and stops the run's tree
(oneoff._contain: ``cgroup.kill``, or the run's mark), within milliseconds. A runner that
finishes writes "done" and reaps it. The watchdog is in a session of its own (a Ctrl-C,
a terminal hang-up or a kill of the runner's process group does not reach it), ignores
SIGINT, SIGTERM, SIGHUP and SIGQUIT, has no parent-death signal, is not in the run's
cgroup nor marked as the run's, and holds no fd but its pipe end (no store connection,
terminal or output pipe is kept open by it). It records nothing: the next oneoff command
still records the run ``lost`` and frees its locks only once it has confirmed the tree
empty.

Threat model: the runner being killed (SIGKILL, the OOM killer, a crash) or its daemon
being killed with it. A task that kills the watchdog (same user) is not defended against:
the next command still reaps its tree, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oneoff._contain import RunTree

__all__ = ["Watchdog", "reap"]

_DONE = b"d"
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE)
# Disarmed watchdogs not reaped yet. Waiting for one at once would cost a scheduling round
# trip (milliseconds on a loaded machine); by the time the run is recorded it has exited.
_exiting: list[int] = []


class Watchdog:
    """The runner's side: ``start`` before the task, ``disarm`` once it is over."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def start(cls, tree: RunTree) -> Watchdog | None:
        """Fork the watchdog of ``tree``; None where fork is not available or fails."""
        if not sys.platform.startswith("linux"):
            return None
        reap()
        r, w = os.pipe()  # both close-on-exec: the task never holds the write end
        try:
            import warnings

            with warnings.catch_warnings():
                # Python >= 3.12 warns on fork in a threaded process. The child runs only
                # system calls and leaves by os._exit: no lock another thread held is used.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return None
        if pid == 0:  # pragma: no cover - the child; its effect is what the tests check
            code = 1
            try:
                code = _watch(r, tree)
            finally:
                os._exit(code)
        os.close(r)
        return cls(pid, w)

    def disarm(self) -> None:
        """The run ended here (its tree is already killed): the watchdog exits; ``reap``
        (called once the run is recorded, and before the next watchdog starts) reaps it."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, _DONE)
        os.close(self.fd)
        self.fd = -1
        _exiting.append(self.pid)
        reap(block=False)


def reap(*, block: bool = True) -> None:
    """Reap the disarmed watchdogs (``block``: waiting for those still exiting)."""
    for pid in list(_exiting):
        try:
            done, _status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a wait for any child)
            done = pid
        if done:
            _exiting.remove(pid)


def _watch(r: int, tree: RunTree) -> int:
    """The watchdog's life: wait for the runner's end, then stop the tree if it died."""
    for signum in _IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    # The runner may have held these (oneoff._proc.hold_signals): ignored now, unblock them.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.setsid()
    os.closerange(3, r)
    os.closerange(r + 1, 1 << 20)  # close_range(2): one system call
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)
    with contextlib.suppress(OSError):
        os.chdir("/")  # hold no directory of the app either
    while True:
        try:
            said = os.read(r, 1)
        except OSError:
            said = b""
        if said == _DONE:
            return 0
        if not said:
            break
    tree.stop()  # cgroup.kill at once (or the mark's /proc scan), until it is empty
    return 0
