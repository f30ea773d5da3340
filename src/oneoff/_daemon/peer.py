"""What a forked runner inherits from the daemon rather than from its caller, read from /proc.

A runner forked by the daemon has the daemon's credentials, namespaces, cgroup, limits,
scheduling and security label. That is only right when they equal the caller's, so each
request compares them; any difference refuses the request (the client then runs
in-process, where everything is the caller's by construction). The umask is the one thing
taken over from the caller instead.
"""

from __future__ import annotations

import os

__all__ = ["differences", "process_traits", "umask_of"]

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
    stat = _read(f"{proc}/stat")
    after_comm = stat.rpartition(")")[2].split()
    traits["nice"] = after_comm[16] if len(after_comm) > 16 else "<unreadable>"
    return traits


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
