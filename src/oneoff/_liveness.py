"""Is the process that claimed a run still alive? (pid reuse and reboots included)."""

from __future__ import annotations

import os
from functools import cache

__all__ = ["host_id", "process_token", "runner_alive"]


@cache
def host_id() -> str:
    """This machine in this boot: a run claimed before a reboot is not alive after it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{os.uname().nodename}/{boot}"


def _stat(pid: int) -> list[bytes]:
    """Fields 3 onwards of /proc/PID/stat (state first), or [] when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses; split after the last ')'.
    return stat[stat.rindex(b")") + 2 :].split()


def process_token(pid: int) -> str:
    """The process's start time in clock ticks since boot: distinguishes a reused pid."""
    fields = _stat(pid)
    return fields[19].decode() if fields else ""


def runner_alive(host: str, pid: int, token: str) -> bool | None:
    """True/False for runners on this host; None when the runner is on another host."""
    if host != host_id():
        return None
    if pid == os.getpid():
        return True
    fields = _stat(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return False  # gone, or dead and not yet reaped by its parent
    return fields[19].decode() == token and token != ""
