"""What a forked runner inherits from the daemon rather than from its caller, read from /proc.

A runner forked by the daemon has the daemon's credentials, namespaces, cgroup, limits,
scheduling, I/O priority, audit identity and security label. That is only right when they
equal the caller's, so each request compares them; any difference refuses the request
(the client then runs in-process, where everything is the caller's by construction). The
umask, signal dispositions and signal mask are taken over from the caller instead (see
``runner``); the personality comes in the request, as /proc may not show it to us.

Not visible here, so not compared: Landlock domains, the contents of seccomp filters
(only their number), and timer slack.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

__all__ = ["IOPRIO_GET", "differences", "process_traits", "umask_of"]

# ioprio_get(2) has no libc wrapper and no /proc file; its number by architecture.
IOPRIO_GET = {"x86_64": 252, "aarch64": 31}

_STATUS_KEYS = (
    "Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters",
    "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Cpus_allowed_list", "Mems_allowed_list",
)  # fmt: skip
_NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except OSError:
        return "<unreadable>"


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "<unreadable>"


def _status(proc: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _read(f"{proc}/status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = " ".join(value.split())
    return fields


def process_traits(pid: int | None = None) -> dict[str, str]:
    """The traits of process ``pid`` (default: this one) a fork would take from the daemon."""
    proc = f"/proc/{'self' if pid is None else pid}"
    status = _status(proc)
    traits = {f"status {key}": status.get(key, "<absent>") for key in _STATUS_KEYS}
    for ns in _NAMESPACES:
        traits[f"{ns} namespace"] = _link(f"{proc}/ns/{ns}")
    traits["root directory"] = _link(f"{proc}/root")
    traits["cgroup"] = _read(f"{proc}/cgroup")
    traits["resource limits"] = _read(f"{proc}/limits")
    traits["security label"] = _read(f"{proc}/attr/current")
    traits["oom_score_adj"] = _read(f"{proc}/oom_score_adj")
    traits["audit login uid"] = _read(f"{proc}/loginuid")
    traits["audit session"] = _read(f"{proc}/sessionid")
    stat = _read(f"{proc}/stat")
    after_comm = stat.rpartition(")")[2].split()
    # Fields 19 (nice), 40 (rt_priority) and 41 (policy) of proc(5), counted from 3.
    for name, index in (("nice", 16), ("real-time priority", 37), ("scheduling policy", 38)):
        traits[name] = after_comm[index] if len(after_comm) > index else "<unreadable>"
    traits["I/O priority"] = _ioprio(0 if pid is None else pid)
    return traits


@functools.cache
def _syscall() -> Callable[..., int] | None:
    import ctypes
    import platform

    number = IOPRIO_GET.get(platform.machine())
    if number is None:
        return None
    return functools.partial(ctypes.CDLL(None, use_errno=True).syscall, number)


def _ioprio(pid: int) -> str:
    ioprio_get = _syscall()
    if ioprio_get is None:
        return "<unsupported>"
    value = ioprio_get(1, pid)  # IOPRIO_WHO_PROCESS
    return "<unreadable>" if value < 0 else str(value)


def differences(own: dict[str, str], pid: int) -> list[str]:
    """Which traits of ``pid`` differ from ``own`` (names only: values may be sensitive)."""
    peer = process_traits(pid)
    if peer["status Uid"] == "<absent>":
        return ["the caller's /proc entry (the caller is gone or hidden)"]
    return sorted(name for name, value in own.items() if peer.get(name) != value)


def umask_of(pid: int) -> int | None:
    value = _status(f"/proc/{pid}").get("Umask")
    try:
        return int(value, 8) if value else None
    except ValueError:
        return None
