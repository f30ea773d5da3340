"""Process-tree plumbing on Linux: prctl (death signal, subreaper) and finding descendants."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

__all__ = [
    "PARENT_GUARDS_TASKS",
    "PR_GET_CHILD_SUBREAPER",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_PDEATHSIG",
    "Libc",
    "child_setup",
    "children",
    "descendants",
    "killpg",
]

PR_SET_PDEATHSIG = 1
# Set in a daemon runner, whose parent (the daemon, a subreaper) kills whatever a dead
# runner leaves behind: tasks then need no PR_SET_PDEATHSIG, and so no preexec_fn, and
# are spawned with vfork (see oneoff._daemon.guard).
PARENT_GUARDS_TASKS = False
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


class Libc:
    """``prctl`` through ctypes, loaded only when a process is actually spawned."""

    def __init__(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self._prctl.restype = ctypes.c_int
        self._out = ctypes.c_int(0)
        self._addressof = ctypes.addressof

    def prctl(self, option: int, value: int | None) -> int:
        """Set an option to ``value``, or (``value`` None) read an int-valued option."""
        if value is None:
            self._prctl(option, self._addressof(self._out), 0, 0)
            return self._out.value
        return int(self._prctl(option, value, 0, 0))


def child_setup(parent: int, libc: Libc | None, interactive: bool) -> Callable[[], None] | None:
    """The code run in the child between fork and exec (None: nothing to run)."""
    if PARENT_GUARDS_TASKS:
        libc = None
    if libc is None and not interactive:
        return None
    if interactive:
        import fcntl
        import termios

    def setup() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            # The runner may have died before the prctl: then nobody would ever kill us.
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
        if interactive:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return setup


def killpg(pgid: int, signum: int) -> None:
    # ESRCH: the group is empty; EPERM: a member changed credentials.
    with contextlib.suppress(OSError):
        os.killpg(pgid, signum)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.update(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def descendants(roots: list[int]) -> set[int]:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children(stack.pop()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen
