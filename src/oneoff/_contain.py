"""A run's process tree as one thing the kernel tracks: found, killed, confirmed empty.

Why: a runner killed with SIGKILL runs no more code, so whatever keeps its task's
processes in check must outlive it. Two things do, and any later oneoff command uses them:

* **A cgroup v2 directory per run**, ``<our cgroup>/oneoff/<run id>``, where one is
  writable (root, or a delegated systemd user cgroup). The kernel keeps every descendant
  of the task in it, double forks and new sessions included; ``cgroup.kill`` kills them
  all at once and ``cgroup.events`` says when none is left. The task is created inside
  it (clone3 with ``CLONE_INTO_CGROUP``, oneoff._spawn); where the kernel refuses that,
  the runner steps into the directory only to start the task (so the task is born
  inside it, even when spawned with vfork) and steps back out at once. The directory is
  named after the run, so a later command finds it from the run's id alone.
* **The run's mark**: every task process inherits ``ONEOFF_RUN_ID=<run id>``, found in
  ``/proc/*/environ``, together with the process groups and sessions marked processes
  lead. It is the fallback where no cgroup is writable and a second net where one is;
  a process that rewrites its environment and leaves its group and session escapes it
  (``oneoff doctor`` says which method this machine gets).

Threat model: processes a task starts by accident or carelessly (daemonizing helpers,
``setsid`` children, workers left behind). A task running as root can leave any cgroup;
containment against a hostile task is a sandbox's job, not this module's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from functools import cache

from oneoff._record import dataclass

__all__ = ["Capability", "RunTree", "capability"]

_LINUX = sys.platform.startswith("linux")
STOP_SECONDS = 5.0  # how long killed processes get to be gone before we say they are not
# A run cgroup empty and older than this is left over (its runner was SIGKILLed and nobody
# opened its app since): removed when the next run starts. A new one is empty only for the
# moment between its mkdir and its task's spawn.
STALE_SECONDS = 60.0


@dataclass(frozen=True)
class Capability:
    """How this process can contain the runs it starts."""

    method: str  # "cgroup2" or "marks"
    base: str | None  # where run cgroups are made (method "cgroup2")
    detail: str  # a sentence for `oneoff doctor`: what is used, or why cgroups are not


def _cgroup2_mount() -> str | None:
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def _own_cgroup() -> str | None:
    """This process's cgroup v2 path (``/`` at the root), from ``/proc/self/cgroup``."""
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


@cache
def capability() -> Capability:
    """Probe once per process: can runs get a cgroup of their own here?"""
    if not _LINUX:
        return Capability("marks", None, "not Linux: no cgroups")
    mount = _cgroup2_mount()
    own = _own_cgroup()
    if mount is None or own is None:
        return Capability("marks", None, "no cgroup v2 hierarchy is mounted")
    home = os.path.join(mount, own.lstrip("/"))
    base = os.path.join(home, "oneoff")
    try:
        os.mkdir(base, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        return Capability("marks", None, f"cannot create a cgroup in {home}: {exc.strerror}")
    if not os.path.exists(os.path.join(base, "cgroup.kill")):
        return Capability("marks", None, "this kernel has no cgroup.kill (Linux < 5.14)")
    if not os.access(os.path.join(home, "cgroup.procs"), os.W_OK):
        return Capability("marks", None, f"cannot move processes out of {home}")
    return Capability("cgroup2", base, f"each run in its own cgroup v2 under {base}")


class RunTree:
    """The processes of one run: its cgroup (if it has one) and its mark."""

    def __init__(self, run_id: str, cgroup: str | None) -> None:
        self.run_id = run_id
        self.cgroup = cgroup
        # Process groups and sessions a marked process was seen leading. They stay the
        # run's after their leader dies, so an unmarked member left in one (a killed
        # leader's `sleep`, still dying) is still found and waited for. Kept only while
        # they have a member: Linux does not reuse an id as a pid while a group or session
        # of that id has one, so a remembered id never names a stranger's.
        self._groups: set[int] = set()
        self._sessions: set[int] = set()

    def _marked_members(self) -> set[int]:
        """Marked processes and the live members of every group and session one led."""
        mark, groups, sessions = _scan(self.run_id)
        self._groups |= groups
        self._sessions |= sessions
        members: set[int] = set()
        used_groups: set[int] = set()
        used_sessions: set[int] = set()
        for name in _pids():
            stat = _stat(name)
            if stat is None:
                continue
            used_groups.add(stat[1])
            used_sessions.add(stat[2])
            if stat[0] not in (b"Z", b"X") and (
                stat[1] in self._groups or stat[2] in self._sessions or _marked(name, mark)
            ):
                members.add(int(name))
        self._groups &= used_groups
        self._sessions &= used_sessions
        return members

    @classmethod
    def new(cls, run_id: str) -> RunTree:
        """The tree of a run about to start; makes its cgroup where this machine allows."""
        base = capability().base
        if base is None:
            return cls(run_id, None)
        _sweep(base)
        path = os.path.join(base, run_id)
        try:
            os.mkdir(path, 0o755)
        except OSError:
            return cls(run_id, None)
        return cls(run_id, path)

    @classmethod
    def find(cls, run_id: str) -> RunTree:
        """The tree of a run started by another (perhaps dead) process on this machine."""
        base = capability().base
        if base is not None and os.path.isdir(os.path.join(base, run_id)):
            return cls(run_id, os.path.join(base, run_id))
        mount = _cgroup2_mount() if _LINUX else None
        # Another runner in another cgroup (another login session, a unit): look for
        # ".../oneoff/<run id>" anywhere in the hierarchy, not too deep.
        if mount is not None:
            for root, dirs, _files in os.walk(mount):
                if root.count(os.sep) - mount.count(os.sep) > 12:
                    dirs.clear()
                elif os.path.basename(root) == "oneoff" and run_id in dirs:
                    return cls(run_id, os.path.join(root, run_id))
        return cls(run_id, None)

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Inside, this process is in the run's cgroup: whatever it starts is born there."""
        home = _own_cgroup()
        mount = _cgroup2_mount()
        if self.cgroup is None or home is None or mount is None:
            yield
            return
        try:
            _write(self.cgroup, "cgroup.procs", "0")
        except OSError:
            self.cgroup = None  # fall back to the mark for this run
            yield
            return
        try:
            yield
        finally:
            _write(os.path.join(mount, home.lstrip("/")), "cgroup.procs", "0")

    def members(self) -> set[int]:
        """Every live process of the run we can find (never this process)."""
        found = self._marked_members()
        if self.cgroup is not None:
            for root, _dirs, _files in os.walk(self.cgroup):
                with contextlib.suppress(OSError), open(os.path.join(root, "cgroup.procs")) as f:
                    found.update(int(p) for p in f.read().split())
        found.discard(os.getpid())
        return found

    def populated(self) -> bool:
        if self.cgroup is None:
            return False
        try:
            with open(os.path.join(self.cgroup, "cgroup.events")) as fh:
                return "populated 1" in fh.read()
        except OSError:
            return False  # gone: nothing can be in it

    def kill(self, *, marks: bool = True) -> None:
        """SIGKILL the whole tree: the cgroup at once, then (``marks``, a /proc scan) the
        marked processes and the groups and sessions they lead. A live runner passes
        ``marks=False``: as a subreaper it already reaches its task's descendants."""
        if self.cgroup is not None:
            inside = os.getpid() in _procs(self.cgroup)
            if not inside:  # never kill ourselves (a failed step back out of the cgroup)
                with contextlib.suppress(OSError):
                    _write(self.cgroup, "cgroup.kill", "1")
            else:
                for pid in _procs(self.cgroup) - {os.getpid()}:
                    _kill_pid(pid)
        if marks:
            mark = f"ONEOFF_RUN_ID={self.run_id}".encode()
            for pid in sorted(self._marked_members()):
                # Pin the pid, then check it is still one of the run's: a pid that ended
                # and was reused since the scan is never signalled.
                try:
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    continue
                try:
                    if _belongs(str(pid), mark, self._groups, self._sessions):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                except OSError:
                    pass
                finally:
                    os.close(pidfd)

    def stop(self, timeout: float = STOP_SECONDS, *, marks: bool = True) -> bool:
        """Kill the tree and wait until it is empty; False if something outlived ``timeout``
        (uninterruptible sleep): then a lock of the run must stay held."""
        until = time.monotonic() + timeout
        delay = 0.005
        marks = marks or self.cgroup is None  # without a cgroup, only the mark can confirm
        while True:
            self.kill(marks=marks)
            empty = not self.populated() and not (marks and self._marked_members())
            if empty:
                self.remove()
                return True
            if time.monotonic() >= until:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def remove(self) -> None:
        """Remove the (empty) cgroup directories of the run."""
        if self.cgroup is None:
            return
        for root, _dirs, _files in os.walk(self.cgroup, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(root)


def _sweep(base: str) -> None:
    """Remove left-over run cgroups (see STALE_SECONDS): rmdir fails on one that still
    holds a process or a cgroup of its own, so only empty ones go."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith("r") or not entry.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    os.rmdir(entry.path)


def _write(directory: str, name: str, value: str) -> None:
    fd = os.open(os.path.join(directory, name), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _procs(cgroup: str) -> set[int]:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as fh:
            return {int(p) for p in fh.read().split()}
    except OSError:
        return set()


def _kill_pid(pid: int) -> None:
    with contextlib.suppress(OSError):  # gone already, or not ours to kill
        os.kill(pid, signal.SIGKILL)


def _stat(pid: str) -> tuple[bytes, int, int] | None:
    """(state, pgid, sid) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[3])


def _scan(run_id: str) -> tuple[bytes, set[int], set[int]]:
    """The mark, and the process groups and sessions that marked processes lead."""
    mark = f"ONEOFF_RUN_ID={run_id}".encode()
    groups: set[int] = set()
    sessions: set[int] = set()
    for name in _pids():
        stat = _stat(name)
        if stat is not None and _marked(name, mark):
            pid = int(name)
            if stat[1] == pid:
                groups.add(pid)
            if stat[2] == pid:
                sessions.add(pid)
    return mark, groups, sessions


def _pids() -> list[str]:
    if not _LINUX:
        return []
    me = str(os.getpid())
    try:
        return [n for n in os.listdir("/proc") if n.isdigit() and n != me]
    except OSError:
        return []


def _belongs(name: str, mark: bytes, groups: set[int], sessions: set[int]) -> bool:
    stat = _stat(name)
    if stat is None or stat[0] in (b"Z", b"X"):
        return False
    return stat[1] in groups or stat[2] in sessions or _marked(name, mark)


def _marked(name: str, mark: bytes) -> bool:
    try:
        with open(f"/proc/{name}/environ", "rb") as fh:
            return mark in fh.read().split(b"\0")
    except OSError:
        return False
