"""`oneoff daemon start|stop|status`: the preloaded runner (see ``oneoff._daemon``)."""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import platform
import sys
import time

from oneoff._daemon.paths import DaemonPathError, runtime_dir, socket_path, trusted_dir
from oneoff._daemon.peer import IOPRIO_GET
from oneoff._daemon.server import daemon_status, serve, stop_daemon
from oneoff.errors import OneoffError, UsageError

__all__ = ["cmd_daemon_start", "cmd_daemon_status", "cmd_daemon_stop"]


def _directory() -> str:
    try:
        return trusted_dir(runtime_dir(), create=True)
    except DaemonPathError as exc:
        raise OneoffError(f"refusing the daemon's directory: {exc}") from None


def _supported() -> None:
    machine = platform.machine()
    if not sys.platform.startswith("linux") or machine not in IOPRIO_GET:
        raise OneoffError(
            f"oneoff daemon runs on Linux on {' and '.join(sorted(IOPRIO_GET))} only "
            f"(this is {sys.platform} on {machine}); oneoff works in-process here"
        )


def cmd_daemon_start(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.idle) and args.idle > 0):
        raise UsageError("--idle wants a positive number of seconds")
    _supported()
    directory = _directory()
    # One starter at a time: the lock is held until the new daemon listens.
    lock = os.open(socket_path(directory) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    running = daemon_status(directory)
    if running is not None:
        os.close(lock)
        print(f"oneoff daemon already running (pid {running.pid}, {running.socket})")
        return 0
    if args.foreground:
        print(f"oneoff daemon listening on {socket_path(directory)} (pid {os.getpid()})")
        sys.stdout.flush()
        return serve(directory, args.idle, foreground=True, lock=lock)
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:  # detach: new session, then a grandchild no terminal can reclaim
        os.close(ready_r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.chdir("/")
        code = 1
        try:
            code = serve(directory, args.idle, foreground=False, ready=ready_w, lock=lock)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(lock)  # the daemon holds its own copy until it listens
    with os.fdopen(ready_r, "rb") as ready:
        pid = ready.read().strip()
    if not pid:
        raise OneoffError("the daemon did not start (run `oneoff daemon start --foreground`)")
    print(
        f"oneoff daemon started (pid {pid.decode()}, {socket_path(directory)}); "
        f"it exits after {args.idle:g} s idle, or with `oneoff daemon stop`"
    )
    return 0


def cmd_daemon_stop(args: argparse.Namespace) -> int:
    directory = _directory()
    if not stop_daemon(directory):
        print("oneoff daemon: not running")
        return 0
    print("oneoff daemon stopped")
    return 0


def cmd_daemon_status(args: argparse.Namespace) -> int:
    info = daemon_status(_directory())
    if info is None:
        print("oneoff daemon: not running")
        return 1
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.started))
    print(
        f"oneoff daemon: running (pid {info.pid}, since {started}, {info.served} runs served, "
        f"exits after {info.idle:g} s idle)\nsocket: {info.socket}\n"
        "It serves only callers identical to it in ids, limits, namespaces and cgroup; "
        "`ONEOFF_DAEMON=debug oneoff ...` says why a command ran in-process."
    )
    return 0
