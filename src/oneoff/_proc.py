"""Own the task's child process: spawn it, stream its output, forward signals, time out, reap.

Design (Linux first, POSIX elsewhere):

* The child is exec'd directly from an argv list, never through a shell, with exactly the
  given environment; ``argv[0]`` is resolved against that environment's ``PATH``.
* It runs in its own process group (a new session with the pty as controlling terminal in
  interactive mode), so one ``killpg`` reaches it and every descendant that stayed in the
  group.
* On Linux the child gets ``PR_SET_PDEATHSIG(SIGKILL)`` in a ``preexec_fn`` (ctypes
  ``prctl``), then checks ``getppid()`` for a parent that died before the ``prctl``.
* While a task runs the runner is a child subreaper (``PR_SET_CHILD_SUBREAPER``, scoped to
  the run and reset afterwards), so double-forked descendants re-parent to us instead of
  init. When the task has to be stopped, or once it has exited, everything still alive in
  its process group, its process tree (``/proc/<pid>/task/*/children``) and those adopted
  orphans is killed and reaped: a one-off process leaves nothing behind.
* Given the run's ``RunTree`` (oneoff._contain), the child is born in the run's own cgroup
  v2 where one can be made (created there by oneoff._spawn, without the cost of moving a
  process between cgroups), and ``cgroup.kill`` ends everything in it with the task: the
  kernel, not our view of /proc, says what belongs to the run, also for whoever reaps a
  run whose runner was SIGKILLed.
* A watchdog forked before the task (oneoff._watchdog) stops the run's tree the moment
  this runner dies by any means, SIGKILL included.
* SIGINT is forwarded; a second one, or the grace period after the first, escalates to
  SIGTERM and then SIGKILL, as a forwarded SIGTERM does.
* Output is read from non-blocking pipes (or the pty master) with a selector, in chunks of
  at most 64 KiB handed straight to ``on_output``; nothing is accumulated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from oneoff._proctree import (
    PR_GET_CHILD_SUBREAPER,
    PR_SET_CHILD_SUBREAPER,
    Libc,
    child_setup,
    children,
    descendants,
    killpg,
)
from oneoff._pty import Relay, copy_winsize, is_tty, read_all
from oneoff._record import dataclass
from oneoff.errors import CommandNotFound, ExecError

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence
    from pathlib import Path
    from types import FrameType
    from typing import Any, Literal

    from oneoff._contain import RunTree
    from oneoff._spawn import Child
    from oneoff._watchdog import Watchdog

__all__ = ["OutputSink", "ProcessResult", "hold_signals", "resolve_command", "run_process"]

OutputSink = Callable[[int, bytes], None]
"""Receives ``(fd, chunk)`` with fd 1 (stdout, or the pty) or 2 (stderr), in order per fd."""

_CHUNK = 64 * 1024
# After the task exits, how long descendants may keep its output open before being killed,
# and how long we then wait for the pipes to reach EOF before giving up on them.
_DRAIN_SECONDS = 1.0
_REAP_SECONDS = 2.0
# A sink with a ``tick()`` method (oneoff._output.OutputRecorder) has it called this often
# while the task runs, output or not: what was shown is then stored within a bounded time.
TICK_SECONDS = 0.25
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_LINUX = sys.platform.startswith("linux")
# Signals hold_signals() keeps pending, except while run_process has its handlers in place.
_held: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ProcessResult:
    """How a task's process ended."""

    exit_code: int
    """The child's exit code, or 128+N if signal N killed it (shell convention)."""
    status: Literal["succeeded", "failed", "timed_out", "cancelled"]
    signal: int | None
    """The signal that ended the child, if one did."""
    duration: float
    """Seconds from spawn until the child exited."""


@contextlib.contextmanager
def hold_signals() -> Iterator[None]:
    """Keep SIGINT, SIGTERM, SIGHUP and SIGQUIT pending (blocked) inside, except while a
    run_process call has its own handlers in place; on leaving, what is still pending is
    delivered as it would have been.

    Why: between committing a run's row and run_process installing its handlers, a
    SIGTERM would kill oneoff and leave the run ``running`` with no task. Held, it reaches
    run_process's handlers (the task is then stopped and the run recorded ``cancelled``),
    or, should the task never start, arrives once the run is recorded.
    """
    global _held
    import threading

    if threading.current_thread() is not threading.main_thread() or _held:
        yield  # only the main thread gets signals in Python; nested: the outer one holds
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    _held = frozenset(set(_FORWARDED) - old)
    try:
        yield
    finally:
        _held = frozenset()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def resolve_command(command: str, env: Mapping[str, str], cwd: str) -> str:
    """Return the absolute path of the executable ``command`` names, searched on env's PATH."""
    if not command:
        raise CommandNotFound("command not found: ''")
    if "/" in command:
        candidate = os.path.join(cwd, command)
        if not os.path.exists(candidate):
            raise CommandNotFound(f"command not found: {command}")
        _check_executable(command, candidate)
        return os.path.abspath(candidate)
    denied: str | None = None
    # Like execvp, fall back to the default search path; but skip empty and relative entries,
    # which would let the task's working directory shadow real commands.
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(directory):
            continue
        candidate = os.path.join(directory, command)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = denied or candidate
    if denied is not None:
        raise ExecError(f"cannot execute {command}: permission denied ({denied})")
    raise CommandNotFound(
        f"command not found: {command}", hint="it is looked up on the task environment's PATH"
    )


def _check_executable(command: str, path: str) -> None:
    if os.path.isdir(path):
        raise ExecError(f"cannot execute {command}: is a directory")
    if not os.access(path, os.X_OK):
        raise ExecError(f"cannot execute {command}: permission denied")


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float | None,
    grace: float = 5.0,
    on_output: OutputSink,
    stdin_data: bytes | None = None,
    interactive: bool = False,
    tree: RunTree | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion and say how it ended; every output byte goes to on_output.

    ``env`` is the complete environment of the child. Without ``stdin_data`` a
    non-interactive child reads ``/dev/null``; with it, the data then EOF. ``interactive``
    runs the child on a pseudo-terminal and relays the operator's stdin to it.
    On timeout the process group gets SIGTERM, then SIGKILL ``grace`` seconds later.
    SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the runner are forwarded to the group; a
    forwarded SIGTERM is also escalated to SIGKILL after ``grace`` seconds.
    ``tree`` (see oneoff._contain) is where the task is started and what is killed with
    it; the caller confirms it empty.
    """
    if not argv:
        raise ExecError("empty command")
    if interactive and stdin_data is not None:
        raise ValueError("stdin_data cannot be combined with interactive (the pty would echo it)")
    workdir = os.fspath(cwd)
    if not os.path.isdir(workdir):
        raise ExecError(f"working directory does not exist: {workdir}")
    executable = resolve_command(argv[0], env, workdir)
    run = _Run(grace, on_output, tree)
    try:
        return run.execute(
            list(argv), executable, dict(env), workdir, timeout, stdin_data, interactive
        )
    finally:
        run.close()


class _Run:
    """The state of one run_process call; always ``close()``d."""

    def __init__(self, grace: float, on_output: OutputSink, tree: RunTree | None) -> None:
        self.grace = grace
        self.tree = tree
        self.on_output = on_output
        self.fds: list[int] = []  # every fd we own, closed in close()
        self.outputs: dict[int, int] = {}  # open read fd -> fd number reported to on_output
        self.proc: subprocess.Popen[bytes] | Child | None = None
        self.exited_at: float | None = None
        self.received: list[int] = []
        self.forwarded = 0
        self.int_at: float | None = None  # when the first SIGINT was forwarded
        self.old_handlers: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
        self.wake_r = -1
        self.wake_w = -1
        self.libc: Libc | None = None
        self.subreaper_was: int | None = None
        self.children_before: set[int] = set()
        self.tracked: dict[int, int] = {}  # pid -> pidfd of descendants seen so far
        self.tty_saved: list[Any] | None = None
        self.master = -1
        self.winch = False
        self.watchdog: Watchdog | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def execute(
        self,
        argv: list[str],
        executable: str,
        env: dict[str, str],
        cwd: str,
        timeout: float | None,
        stdin_data: bytes | None,
        interactive: bool,
    ) -> ProcessResult:
        import selectors
        import subprocess

        if self.tree is not None:
            from oneoff._watchdog import Watchdog

            # First: forked before any fd of the run exists, a child of ours before the
            # subreaper bookkeeping below (so never taken for one of the task's orphans).
            self.watchdog = Watchdog.start(self.tree)
        self.wake_r, self.wake_w = self._pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self._install_handlers()
        if _LINUX:
            self.libc = Libc()
            self.children_before = children(os.getpid())
            self.subreaper_was = self.libc.prctl(PR_GET_CHILD_SUBREAPER, None)
            if self.subreaper_was == 0:
                self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1)

        stdin_w = -1
        child_fds: list[int] = []
        if interactive:
            import pty

            self.master, slave = pty.openpty()
            self.fds += [self.master, slave]
            child_fds.append(slave)
            copy_winsize(slave)
            stdin = stdout = stderr = slave
            self.outputs[self.master] = 1
        else:
            out_r, out_w = self._pipe()
            err_r, err_w = self._pipe()
            child_fds += [out_w, err_w]
            self.outputs = {out_r: 1, err_r: 2}
            stdin, stdout, stderr = subprocess.DEVNULL, out_w, err_w
            if stdin_data is not None:
                in_r, stdin_w = self._pipe()
                child_fds.append(in_r)
                stdin = in_r

        start = time.monotonic()
        try:
            # argv list and a resolved executable: no shell is ever involved.
            setup = child_setup(os.getpid(), self.libc, interactive)
            if self.tree is not None and self.tree.cgroup is not None:
                from oneoff._spawn import spawn_into

                streams = (None if stdin == subprocess.DEVNULL else stdin, stdout, stderr)
                self.proc = spawn_into(
                    self.tree.cgroup, argv, executable, env, cwd, streams=streams,
                    new_session=interactive, setup=setup,
                )  # fmt: skip
            if self.proc is None:  # no cgroup, or the kernel cannot clone into it
                with contextlib.nullcontext() if self.tree is None else self.tree.spawning():
                    self.proc = subprocess.Popen(
                        argv,
                        executable=executable,
                        env=env,
                        cwd=cwd,
                        close_fds=True,
                        preexec_fn=setup,
                        start_new_session=interactive,
                        process_group=None if interactive else 0,
                        stdin=stdin,
                        stdout=stdout,
                        stderr=stderr,
                    )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ExecError(f"cannot execute {argv[0]}: {detail}") from exc
        finally:
            for fd in child_fds:
                self._close(fd)
        pid = self.proc.pid

        sel = selectors.PollSelector()  # unlike epoll, poll accepts a regular file as stdin
        try:
            for fd in self.outputs:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            sel.register(self.wake_r, selectors.EVENT_READ)
            pidfd = self._pidfd(pid)
            if pidfd >= 0:
                sel.register(pidfd, selectors.EVENT_READ)
            pending = memoryview(stdin_data or b"")
            if stdin_w >= 0:
                os.set_blocking(stdin_w, False)
                sel.register(stdin_w, selectors.EVENT_WRITE)
            relay: Relay | None = None
            if interactive:
                self._enter_raw_mode()
                relay = Relay(self.master)
                relay.update(sel)

            deadline = None if timeout is None else start + timeout
            kill_at: float | None = None
            killed = timed_out = escalated = False
            drain_until = 0.0
            tick = getattr(self.on_output, "tick", None)
            next_tick = start + TICK_SECONDS
            while True:
                now = time.monotonic()
                if tick is not None and now >= next_tick:
                    tick()  # e.g. store output that is shown but not yet stored
                    next_tick = now + TICK_SECONDS
                self._forward_signals()
                if self.exited_at is None and self._child_exited():
                    self.exited_at = now
                    drain_until = now + _DRAIN_SECONDS
                if self.exited_at is not None:
                    if not self.outputs or now >= drain_until:
                        break
                    wait: float | None = drain_until - now
                else:
                    if deadline is not None and now >= deadline and not timed_out:
                        timed_out = True
                        self._signal_all(signal.SIGTERM)
                        kill_at = now + self.grace
                    # A task may handle SIGINT and go on, or ignore it: a second one, or the
                    # grace period after the first, escalates to SIGTERM (then SIGKILL).
                    interrupts = self.received.count(signal.SIGINT)
                    term_at = None if self.int_at is None else self.int_at + self.grace
                    if not escalated and (
                        interrupts >= 2 or (term_at is not None and now >= term_at)
                    ):
                        escalated = True
                        self._signal_all(signal.SIGTERM)
                        kill_at = now + self.grace if kill_at is None else kill_at
                    if kill_at is None and signal.SIGTERM in self.received:
                        kill_at = now + self.grace  # like `docker stop`: SIGTERM, then SIGKILL
                    if kill_at is not None and now >= kill_at and not killed:
                        killed = True
                        self._signal_all(signal.SIGKILL)
                    pending_term = None if escalated else term_at
                    timers = (deadline, None if killed else kill_at, pending_term)
                    wakeups = [t for t in timers if t is not None]
                    wakeups = [t for t in wakeups if t > now]
                    wait = max(0.0, min(wakeups) - now) if wakeups else None
                    if pidfd < 0:
                        wait = 0.05 if wait is None else min(wait, 0.05)  # poll the child
                if tick is not None:
                    wait = max(0.0, next_tick - now) if wait is None else min(wait, next_tick - now)
                    wait = max(wait, 0.0)
                for key, events in sel.select(wait):
                    fd = int(key.fd)
                    if fd == self.wake_r:
                        read_all(fd)
                    elif fd == pidfd:
                        sel.unregister(fd)  # stays readable once the child exited
                    elif fd == stdin_w:
                        pending = self._feed_stdin(stdin_w, pending)
                        if not pending:
                            sel.unregister(stdin_w)
                            self._close(stdin_w)
                            stdin_w = -1
                    else:
                        readable = events & selectors.EVENT_READ
                        if fd in self.outputs and readable and not self._read_output(fd):
                            sel.unregister(fd)
                        if relay is not None and fd in (0, self.master):
                            relay.handle(sel, fd, events)

            # The task is over: nothing it started may outlive it, nor hold its output open.
            self._kill_leftovers(pid)
            for key in list(sel.get_map().values()):
                if key.fd not in self.outputs:
                    sel.unregister(key.fd)
            settle = time.monotonic() + _DRAIN_SECONDS
            while self.outputs and time.monotonic() < settle:
                for key, _ in sel.select(max(0.0, settle - time.monotonic())):
                    fd = int(key.fd)
                    if fd in self.outputs and not self._read_output(fd):
                        sel.unregister(fd)
        finally:
            sel.close()
            self._stop(pid)
        assert self.exited_at is not None
        returncode = self.proc.returncode
        if returncode is None:  # still unreapable after SIGKILL (uninterruptible sleep)
            returncode = -signal.SIGKILL
        sig = -returncode if returncode < 0 else None
        exit_code = 128 + sig if sig is not None else returncode
        status: Literal["succeeded", "failed", "timed_out", "cancelled"]
        if timed_out:
            status = "timed_out"
        elif exit_code == 0:
            status = "succeeded"
        elif self.received:
            status = "cancelled"
        else:
            status = "failed"
        return ProcessResult(exit_code, status, sig, self.exited_at - start)

    def _stop(self, pid: int) -> None:
        """Make sure the child and its leftovers are dead and reaped, even on an exception."""
        proc = self.proc
        if proc is None:
            return
        if self.exited_at is None and not self._child_exited():
            self._signal_all(signal.SIGKILL)
        self._kill_leftovers(pid)
        # A child stuck in uninterruptible sleep must not hide the original error; subprocess
        # reaps it later.
        with contextlib.suppress(Exception):
            proc.wait(timeout=_REAP_SECONDS)
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        self._reap_adopted()

    def close(self) -> None:
        try:
            self._leave_raw_mode()
        finally:
            self._restore_handlers()
            if self.libc is not None and self.subreaper_was == 0:
                self.libc.prctl(PR_SET_CHILD_SUBREAPER, 0)
            for pidfd in self.tracked.values():
                os.close(pidfd)
            self.tracked.clear()
            for fd in list(self.fds):
                self._close(fd)
            if self.watchdog is not None:  # the tree was killed with the task (or never began)
                self.watchdog.disarm()

    # -- fds -------------------------------------------------------------------------------

    def _pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.fds += [r, w]
        return r, w

    def _close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            os.close(fd)

    def _pidfd(self, pid: int) -> int:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return -1
        self.fds.append(fd)
        return fd

    def _read_output(self, fd: int) -> bool:
        """Pass one chunk to on_output; False once the fd reached EOF (and is closed)."""
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # EIO: a pty master whose slave side is gone everywhere
            chunk = b""
        if not chunk:
            del self.outputs[fd]
            self._close(fd)
            return False
        self.on_output(self.outputs[fd], chunk)
        return True

    @staticmethod
    def _feed_stdin(fd: int, pending: memoryview) -> memoryview:
        try:
            written = os.write(fd, pending[:_CHUNK])
        except BlockingIOError:
            return pending
        except OSError:  # EPIPE: the child does not want (the rest of) its input
            return pending[:0]
        return pending[written:]

    # -- the child -------------------------------------------------------------------------

    def _child_exited(self) -> bool:
        """True once the child has exited, without reaping it: its pgid stays ours to kill."""
        assert self.proc is not None
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _signal_all(self, signum: int) -> None:
        """Signal the child's process group and every descendant we can find."""
        assert self.proc is not None
        self._track(self.proc.pid)
        killpg(self.proc.pid, signum)
        self._signal_tracked(signum)
        if signum == signal.SIGKILL and self.tree is not None:
            self.tree.kill(marks=False)
        if signum == signal.SIGTERM:
            # A stopped process (e.g. SIGTTOU from touching the terminal) only sees SIGTERM
            # once continued.
            killpg(self.proc.pid, signal.SIGCONT)
            self._signal_tracked(signal.SIGCONT)

    def _kill_leftovers(self, pid: int) -> None:
        if self.tree is not None:  # the kernel knows them all: cgroup.kill, or the mark
            self.tree.kill(marks=False)
        # Descendants outside the group may fork faster than one pass sees them: repeat while
        # new ones keep appearing (bounded, a fork bomb must not keep us here).
        for _ in range(5):
            known = len(self.tracked)
            self._track(pid)
            killpg(pid, signal.SIGKILL)
            self._signal_tracked(signal.SIGKILL)
            if len(self.tracked) == known:
                break

    def _track(self, pid: int) -> None:
        """Remember (by pidfd, immune to pid reuse) the task's tree and orphans adopted by us."""
        if not _LINUX:
            return
        roots = [pid, *(children(os.getpid()) - self.children_before - {pid})]
        for p in roots + sorted(descendants(roots)):
            if p != pid and p not in self.tracked:
                pidfd = self._pidfd(p)
                if pidfd >= 0:
                    self.fds.remove(pidfd)  # owned by self.tracked from now on
                    self.tracked[p] = pidfd

    def _signal_tracked(self, signum: int) -> None:
        for pidfd in self.tracked.values():
            with contextlib.suppress(OSError):  # already gone
                signal.pidfd_send_signal(pidfd, signum)

    def _reap_adopted(self) -> None:
        """Wait for the orphans that re-parented to us (our children now), so none is a zombie."""
        if not self.tracked:
            return
        import select

        mine = children(os.getpid())
        until = time.monotonic() + _REAP_SECONDS
        for p, pidfd in self.tracked.items():
            if p not in mine:
                continue
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.poll(max(0.0, until - time.monotonic()) * 1000)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p, os.WNOHANG)

    # -- signals ---------------------------------------------------------------------------

    def _install_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.received.append(signum)
            with contextlib.suppress(OSError):  # wake pipe full: the loop wakes up anyway
                os.write(self.wake_w, b"s")

        for signum in _FORWARDED:
            try:
                previous = signal.getsignal(signum)
                # An ignored signal (nohup, background jobs) stays ignored, for us and the child.
                if previous == signal.SIG_IGN:
                    continue
                signal.signal(signum, on_signal)
            except ValueError:  # not the main thread: Python cannot catch signals here
                return
            self.old_handlers[signum] = previous
        if _held:  # what arrived since hold_signals() began reaches on_signal now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _held)

    def _restore_handlers(self) -> None:
        if _held:
            signal.pthread_sigmask(signal.SIG_BLOCK, _held)
        for signum, previous in self.old_handlers.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self.old_handlers.clear()

    def _forward_signals(self) -> None:
        while self.forwarded < len(self.received):
            signum = self.received[self.forwarded]
            self.forwarded += 1
            if self.proc is not None and self.exited_at is None:
                killpg(self.proc.pid, signum)
                if signum == signal.SIGINT and self.int_at is None:
                    self.int_at = time.monotonic()
        if self.winch:
            self.winch = False
            copy_winsize(self.master)

    # -- the operator's terminal -----------------------------------------------------------

    def _enter_raw_mode(self) -> None:
        if not is_tty(0):
            return
        import termios
        import tty

        self.tty_saved = termios.tcgetattr(0)
        tty.setraw(0)
        try:
            signal.signal(signal.SIGWINCH, lambda signum, frame: self._on_winch())
            self.old_handlers.setdefault(signal.SIGWINCH, signal.SIG_DFL)
        except ValueError:
            pass

    def _on_winch(self) -> None:
        self.winch = True
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"w")

    def _leave_raw_mode(self) -> None:
        if self.tty_saved is None:
            return
        import termios

        termios.tcsetattr(0, termios.TCSADRAIN, self.tty_saved)
        self.tty_saved = None
