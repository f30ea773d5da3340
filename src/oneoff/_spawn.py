"""Start a task's process already inside its run's cgroup: clone3 with CLONE_INTO_CGROUP.

Why: moving a process into a cgroup (a write to ``cgroup.procs``, what the runner did to
have its task born in the run's cgroup) takes the kernel's cgroup threadgroup lock for
writing, and when no migration happened in the last moments that waits for an RCU grace
period: 8 to 18 ms a run on an idle 2-core machine, more under load, and the task waits
for it. ``clone3`` with ``CLONE_INTO_CGROUP`` (Linux 5.7) creates the child in the
cgroup instead, without that lock. Python's subprocess cannot ask for it, so the clone
goes through the interpreter's own fork protocol (``PyOS_BeforeFork`` and
``PyOS_AfterFork_*``, exactly what ``os.fork`` does around ``fork()``), and the child
does what ``subprocess`` does between fork and exec: standard streams, working
directory, session or process group, the signals Python ignores, the caller's set-up
function, every other descriptor closed, ``execve``. An exec failure reaches the parent
through a close-on-exec pipe, as with subprocess.

The price: a fork of the runner where subprocess would vfork (page tables copied, and
copy-on-write faults while the task starts): a whole run took 15.6 ms less wall time
and 2.1 ms more CPU here (``bench/bench_spawn.py --boost``). On a saturated machine CPU is what is
scarce; the grace period is what an operator waits for on an idle one.

A raw clone takes none of the locks glibc's fork takes first (malloc's), so from a process
with other threads (a lock's lease renewer) a fork of it (single-threaded) does the
clone, with ``CLONE_PARENT``: the task is still the runner's child. Where the kernel
refuses (Linux < 5.7, a seccomp filter), ``spawn_into`` answers None and the caller steps
into the cgroup as before.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Child", "spawn_into"]

_SYS_CLONE3 = 435  # the same number on every Linux architecture (the unified table)
_CLONE_INTO_CGROUP = 0x200000000
_CLONE_PARENT = 0x00008000
_RESTORED = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, n))
_clone3: Callable[[], int] | None = None
_unsupported = not sys.platform.startswith("linux")


class Child:
    """The parts of ``subprocess.Popen`` the runner uses, for a process spawned here."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None  # reaped elsewhere: its status is lost, as a SIGKILL is
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        until = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if until is not None and time.monotonic() >= until:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self.returncode


def spawn_into(
    cgroup: str,
    argv: Sequence[str],
    executable: str,
    env: Mapping[str, str],
    cwd: str,
    *,
    streams: tuple[int | None, int, int],
    new_session: bool,
    setup: Callable[[], None] | None,
) -> Child | None:
    """Start ``executable`` in ``cgroup``, as a child of this process; None when the kernel
    cannot (then nothing was started). ``streams`` are the child's stdin (None:
    /dev/null), stdout and stderr. Raises OSError when the exec (or the set-up) fails, as
    subprocess does."""
    global _unsupported
    if _unsupported:
        return None
    try:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    # Another thread may hold a lock the child needs (malloc's): glibc's fork takes them
    # first, a raw clone cannot. Then a fork of this process (single-threaded) clones
    # the task, as a sibling of its own: the task is still this process's child.
    threaded = len(os.listdir("/proc/self/task")) != 1
    clone = _clone_into(fd, sibling=threaded)
    environ = dict(env)

    def child() -> None:  # pragma: no cover - the child; the tests check what it did
        _child(list(argv), executable, environ, cwd, streams, new_session, setup, err_w)

    err_r, err_w = os.pipe()  # close-on-exec: EOF in the parent once the exec happened
    try:
        pid = _from_a_fork(clone, child) if threaded else _here(clone, child)
        os.close(err_w)
        err_w = -1
        if pid < 0:
            # No clone3, or no CLONE_INTO_CGROUP (Linux < 5.7), or a seccomp filter
            # refusing it: not worth asking again in this process.
            _unsupported = -pid in (errno.ENOSYS, errno.EINVAL, errno.E2BIG, errno.EPERM)
            return None
        report = b""
        while chunk := os.read(err_r, 4096):
            report += chunk
    finally:
        os.close(fd)
        os.close(err_r)
        if err_w >= 0:
            os.close(err_w)
    if report:
        os.waitpid(pid, 0)
        code, _, message = report.decode(errors="replace").partition(":")
        number = int(code) if code.isdigit() else 0
        if number:
            raise OSError(number, os.strerror(number))
        raise OSError(f"the child's set-up failed: {message}")
    return Child(pid)


def _here(clone: Callable[[], int], child: Callable[[], None]) -> int:
    pid = clone()
    if pid == 0:  # pragma: no cover - the child
        child()
    return pid


def _from_a_fork(clone: Callable[[], int], child: Callable[[], None]) -> int:
    """Clone from a fork of this process, which says the clone's pid (or minus the errno)
    and exits; the clone (``CLONE_PARENT``) is this process's child."""
    import warnings

    r, w = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns on fork in a threaded process: the fork only clones
            # and exits, through glibc's fork, which keeps libc's own locks usable.
            warnings.simplefilter("ignore", DeprecationWarning)
            middle = os.fork()
        if middle == 0:  # pragma: no cover - the fork; the tests check its clone
            try:
                pid = clone()
                if pid == 0:
                    child()
                os.write(w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        answer = b""
        while chunk := os.read(r, 64):
            answer += chunk
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    os.waitpid(middle, 0)
    try:
        return int(answer)
    except ValueError:
        return -errno.ECHILD  # the fork died before it could say: nothing was started


def _clone_into(fd: int, *, sibling: bool) -> Callable[[], int]:
    """A function that clones this process into the cgroup open at ``fd``: the child's
    pid, 0 in the child, or minus the errno. ``sibling``: the child's parent is ours."""
    import ctypes

    class CloneArgs(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_uint64)
            for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                         "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")
        ]  # fmt: skip

    flags = _CLONE_INTO_CGROUP | (_CLONE_PARENT if sibling else 0)
    # With CLONE_PARENT the kernel wants no exit signal: the child gets ours (SIGCHLD).
    args = CloneArgs(flags=flags, exit_signal=0 if sibling else signal.SIGCHLD, cgroup=fd)
    # PyDLL: the call keeps the GIL, as os.fork does around fork().
    syscall = ctypes.PyDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
    api = ctypes.pythonapi

    def clone() -> int:
        api.PyOS_BeforeFork()
        pid = int(syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args)))
        if pid == 0:
            api.PyOS_AfterFork_Child()
            return 0
        failed = ctypes.get_errno()
        api.PyOS_AfterFork_Parent()
        return pid if pid > 0 else -failed

    return clone


def _child(
    argv: list[str],
    executable: str,
    env: dict[str, str],
    cwd: str,
    streams: tuple[int | None, int, int],
    new_session: bool,
    setup: Callable[[], None] | None,
    err_w: int,
) -> None:  # pragma: no cover - runs in the child, which leaves by exec or _exit
    import fcntl

    try:
        sources = [os.open(os.devnull, os.O_RDWR) if s is None else s for s in streams]
        # Above 2 first, so that no dup2 below overwrites a source still to be copied.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in sources]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # the copy is inheritable
        os.chdir(cwd)
        for signum in _RESTORED:
            signal.signal(signum, signal.SIG_DFL)
        if new_session:
            os.setsid()
        else:
            os.setpgid(0, 0)
        if setup is not None:
            setup()
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 20)  # close_range(2): one system call
        os.execve(executable, argv, env)  # noqa: S606 (an argv list: no shell, by design)
    except OSError as exc:
        os.write(err_w, f"{exc.errno or 0}:{exc}".encode())
    except BaseException as exc:
        os.write(err_w, f"0:{type(exc).__name__}: {exc}".encode())
    finally:
        os._exit(255)
