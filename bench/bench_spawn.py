"""Starting a task inside its run's cgroup: clone3 into it vs moving into it (issue #14).

Usage: python bench/bench_spawn.py [--runs N] [--quick] [--boost]

Side by side, interleaved, each start followed by a pause as between two runs (a cgroup
migration is cheap only right after another one):

- migrate: what the runner did before, and still does where clone3 is refused: step into
  the run's cgroup (a write to ``cgroup.procs``), spawn with subprocess, step back out;
- clone3: ``oneoff._spawn.spawn_into`` (``CLONE_INTO_CGROUP``), the task born inside;
- clone3, threaded: the same from a process with another thread (through a fork).

Each measures from the start of the spawn until the task has exited (``/bin/true``) and
been reaped, with a fresh cgroup per start. Then whole runs: `oneoff run` of a trivial
task in a fork of a preloaded process, as the daemon's runners are, with the task spawned
either way (wall time, and the runner's CPU time with the task's). Needs a writable
cgroup v2 (root here).
Both sides take the kernel's cgroup mutex, which a migration elsewhere on the machine
holds through its grace period: other jobs' migrations slow both sides, not just one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from oneoff._contain import RunTree, capability
from oneoff._spawn import spawn_into

PAUSE = 0.2  # seconds between two starts, as between two runs


def migrate(tree: RunTree) -> None:
    with tree.spawning():
        proc = subprocess.Popen(["/bin/true"], process_group=0)
    proc.wait()


def clone(tree: RunTree) -> None:
    assert tree.cgroup is not None
    child = spawn_into(
        tree.cgroup, ["/bin/true"], "/bin/true", {}, "/", streams=(None, 1, 2),
        new_session=False, setup=None,
    )  # fmt: skip
    assert child is not None, "clone3 into a cgroup is refused here"
    child.wait()


def threaded(tree: RunTree) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        clone(tree)
    finally:
        stop.set()
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a few runs, to check it works")
    parser.add_argument(
        "--boost", action="store_true",
        help="run at the highest CPU priority (root: this session's autogroup and nice at "
        "-20), as if the CPUs were idle; other jobs' cgroup operations still contend",
    )  # fmt: skip
    args = parser.parse_args()
    if args.boost:
        with contextlib.suppress(OSError):  # a group leader cannot: then the caller's
            os.setsid()  # an autogroup of our own (the spawned tasks stay in it)
        with open("/proc/self/autogroup", "w") as fh:
            fh.write("-20")
        os.nice(-20 - os.nice(0))
    if capability().method != "cgroup2":
        print(f"not measured: {capability().detail}")
        return 0
    runs = 3 if args.quick else args.runs
    sides: dict[str, Callable[[RunTree], None]] = {
        "migrate": migrate, "clone3": clone, "clone3, threaded": threaded,
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in sides}
    load = os.getloadavg()[0]
    for i in range(runs):
        for name, start in sides.items():
            tree = RunTree.new(f"rbench{os.getpid()}x{i}{len(times[name])}{name[:2]}")
            assert tree.cgroup is not None
            time.sleep(PAUSE)
            began = time.perf_counter()
            start(tree)
            times[name].append((time.perf_counter() - began) * 1000)
            tree.remove()
    print(f"(n={runs} each, interleaved, {PAUSE:g} s apart; load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; nice {os.nice(0)})")  # fmt: skip
    base = statistics.median(times["migrate"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18} median {median:6.2f} ms  ({median - base:+.2f} ms), "
              f"fastest {min(values):6.2f} ms")  # fmt: skip
    whole_runs(runs)
    return 0


def whole_runs(runs: int) -> None:
    """`oneoff run` in a fork of a preloaded process, the task spawned either way."""
    import tempfile
    from pathlib import Path

    import oneoff._proctree
    import oneoff._spawn
    from oneoff._daemon.preload import preload
    from oneoff.cli import main

    preload()
    oneoff._proctree.PARENT_GUARDS_TASKS = True  # as in a daemon runner: subprocess vforks
    real = oneoff._spawn.spawn_into
    wall: dict[str, list[float]] = {"migrate": [], "clone3": []}
    cpu: dict[str, list[float]] = {"migrate": [], "clone3": []}
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        (app / "oneoff.toml").write_text(
            '[environments.development]\n[tasks.t]\nargv = ["/bin/true"]\n'
        )
        for i in range(runs + 1):
            for name in wall:
                oneoff._spawn.spawn_into = real if name == "clone3" else _declined  # type: ignore[assignment]
                time.sleep(PAUSE)
                began = time.perf_counter()
                pid = os.fork()
                if pid == 0:
                    os._exit(main(["--app", str(app), "run", "t", "-q"]))
                _pid, status, usage = os.wait4(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0
                if i:  # the first round warms the store
                    wall[name].append((time.perf_counter() - began) * 1000)
                    cpu[name].append((usage.ru_utime + usage.ru_stime) * 1000)
    for name in wall:
        print(f"whole run, {name:<8} median {statistics.median(wall[name]):6.1f} ms, "
              f"CPU {statistics.median(cpu[name]):5.1f} ms")  # fmt: skip


def _declined(*args: object, **kwargs: object) -> None:
    return None  # what spawn_into answers where clone3 is refused: the runner migrates


if __name__ == "__main__":
    sys.exit(main())
