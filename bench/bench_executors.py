"""What the sandbox and container executors add (targets: <= 15 ms and <= 50 ms median).

Usage: python bench/bench_executors.py [--runs N] [--quick]

Side by side, interleaved from this one process so machine noise hits every side alike:

- sandbox: `oneoff run noop` in an environment with the local executor, and the same task
  in one with ``executor = { kind = "sandbox" }`` (bubblewrap); the difference of the
  medians is the sandbox's cost (namespaces, mounts, the extra exec of bwrap);
- container (when podman works here): ``podman run --rm`` of a busybox image built here
  (no registry) running ``true``, and `oneoff run true-c` in an environment with
  ``executor = { kind = "container" }`` on the same image; the difference is everything
  oneoff adds (its own start, plan, record, audit) on top of the engine.

All oneoff sides run with `oneoff daemon` serving them (what a script calling oneoff
often uses; bench_run_overhead.py measures the daemon itself).

Where this process can make a cgroup v2 of its own (root, or a delegated cgroup), every
command also gets its CPU time: everything it started, the daemon's runner and its
book-keeping after the reply included (``cpu.stat`` of a cgroup the bench moves itself
into; the container's own processes, which podman moves out, cost both sides alike). On
a shared machine the wall clock mostly measures the other jobs; CPU time does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oneoff._contain import capability

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _podman import (
    build_busybox_image,
    remove_image,
    why_podman_cannot_run,
    write_engine_conf,
)

MANIFEST = """
[environments.local]
[environments.boxed]
executor = { kind = "sandbox" }

[tasks.noop]
argv = ["python", "-c", "pass"]
"""
CONTAINER = """
[environments.container]
executor = {{ kind = "container", image = "{image}", runtime = "runc" }}

[tasks.true-c]
argv = ["true"]
"""


class CpuMeter:
    """CPU time of this process's cgroup v2 subtree, where it can have one of its own."""

    def __init__(self) -> None:
        self.path: Path | None = None
        base = capability().base  # <our cgroup>/oneoff, writable
        if base is None:
            return
        path = Path(base).parent / f"bench-executors-{os.getpid()}"
        try:
            path.mkdir()
            (path / "cgroup.procs").write_text("0")
        except OSError:
            return
        self.path = path
        self.home = Path(base).parent

    def usage_ms(self) -> float:
        assert self.path is not None
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1000
        return 0.0

    def close(self) -> None:
        if self.path is None:
            return
        (self.home / "cgroup.procs").write_text("0")
        for _ in range(100):  # the daemon may take a moment to be gone
            try:
                for child in sorted(self.path.rglob("*"), reverse=True):
                    if child.is_dir():
                        child.rmdir()
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"(left {self.path} behind: something still runs in it)")


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv} failed: {done.stderr.decode()}")
    return elapsed * 1000


def interleave(
    sides: dict[str, tuple[list[str], dict[str, str]]], cwd: Path, runs: int, meter: CpuMeter
) -> tuple[dict[str, float], dict[str, float]]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(3):  # warm caches, the store and the engine
        for argv, env in sides.values():
            timed(argv, cwd, env)
    for _ in range(runs):
        for name, (argv, env) in sides.items():
            before = meter.usage_ms() if meter.path else 0.0
            times[name].append(timed(argv, cwd, env))
            if meter.path:
                time.sleep(0.05)  # the runner's book-keeping after its reply
                cpu[name].append(meter.usage_ms() - before)
    med = statistics.median
    return {n: med(v) for n, v in times.items()}, {n: med(v) for n, v in cpu.items() if v}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a few runs, to check it works")
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    oneoff = shutil.which("oneoff", path=str(Path(sys.executable).parent)) or "oneoff"
    meter = CpuMeter()
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        app.mkdir()
        env = write_engine_conf(Path(tmp))
        env.update(ONEOFF_DAEMON_DIR=str(Path(tmp) / "daemon"), ONEOFF_DAEMON="")
        image = None
        manifest = MANIFEST
        if why_podman_cannot_run() is None:
            image = build_busybox_image(Path(tmp), env)
            manifest += CONTAINER.format(image=image)
        (app / "oneoff.toml").write_text(manifest)
        started = subprocess.run(
            [oneoff, "daemon", "start", "--idle", "600"], env=env, cwd=app, capture_output=True,
            text=True,
        )  # fmt: skip
        if started.returncode != 0:
            sys.exit(f"oneoff daemon start failed: {started.stderr}")
        try:
            run = [oneoff, "run", "--quiet"]
            sides = {}
            if shutil.which("bwrap"):
                sides["local"] = ([*run, "noop", "--env", "local"], env)
                sides["sandbox"] = ([*run, "noop", "--env", "boxed"], env)
            if image is not None:
                direct = ["podman", "run", "--rm", "--runtime", "runc", "--network", "none", image,
                          "true"]  # fmt: skip
                sides["podman run"] = (direct, env)
                sides["container"] = ([*run, "true-c", "--env", "container"], env)
            load = os.getloadavg()[0]
            medians, cpu = interleave(sides, app, args.runs, meter)
        finally:
            subprocess.run([oneoff, "daemon", "stop"], env=env, capture_output=True)
            if image is not None:
                remove_image(image, env)
            meter.close()
    print(f"(n={args.runs} each, interleaved; oneoff served by its daemon; load average "
          f"{load:.1f} before, {os.getloadavg()[0]:.1f} after)")  # fmt: skip
    for base, side, target in (("local", "sandbox", 15), ("podman run", "container", 50)):
        if base in medians:
            b, v = medians[base], medians[side]
            print(f"{base:<12} median {b:7.1f} ms")
            print(f"{side:<12} median {v:7.1f} ms  overhead {v - b:6.1f} ms  target <= {target} ms")
            if cpu:
                print(f"{'':<12} CPU time {cpu[base]:6.1f} ms -> {cpu[side]:6.1f} ms: "
                      f"{cpu[side] - cpu[base]:+.1f} ms, {cpu[side] / cpu[base]:.2f}x")  # fmt: skip
        else:
            print(f"{side}: not measured (its tool is not available here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
