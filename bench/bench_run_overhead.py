"""How much `oneoff run` adds over running the same argv directly (target: <= 40 ms median).

Usage: python bench/bench_run_overhead.py [--runs N]

All sides run from this one process, interleaved, so machine noise hits them alike:

- direct: `python -c pass`;
- in-process: `oneoff run noop` with ONEOFF_DAEMON=off (Python imports oneoff every time);
- daemon: the same command with `oneoff daemon` running (the runner is a fork of a process
  that already imported oneoff; see src/oneoff/_daemon).

The oneoff sides are the installed console script (what an operator or a script types),
against a temporary app with one task whose argv is `python -c pass`, recording every run
in a fresh SQLite store. Standard input is /dev/null on every side: a terminal on stdin
keeps oneoff in-process by design (prompts and consoles need the caller's terminal).
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

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.noop]
argv = ["python", "-c", "pass"]
"""


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="a few runs, to check it works")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    oneoff = shutil.which("oneoff", path=str(Path(sys.executable).parent)) or "oneoff"
    # An installed wheel ships compiled bytecode; an editable checkout may not have it yet
    # (and PYTHONDONTWRITEBYTECODE would keep it that way), so compile once up front.
    import compileall

    import oneoff as package

    compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        app.mkdir()
        (app / "oneoff.toml").write_text(MANIFEST)
        (app / ".env").write_text("DATABASE_URL=sqlite:///var/db.sqlite\nSECRET_KEY=abcdefghijkl\n")
        daemon_dir = Path(tmp) / "daemon"
        in_process = {**os.environ, "ONEOFF_DAEMON": "off"}
        with_daemon = {**os.environ, "ONEOFF_DAEMON_DIR": str(daemon_dir), "ONEOFF_DAEMON": ""}
        start = subprocess.run(
            [oneoff, "daemon", "start", "--idle", "600"], env=with_daemon, cwd=app,
            capture_output=True, text=True,
        )  # fmt: skip
        if start.returncode != 0:
            sys.exit(f"oneoff daemon start failed: {start.stderr}")
        direct_cmd = [sys.executable, "-c", "pass"]
        oneoff_cmd = [oneoff, "run", "noop", "--env", "development", "--quiet"]
        sides: dict[str, tuple[list[str], dict[str, str]]] = {
            "direct": (direct_cmd, in_process),
            "in-process": (oneoff_cmd, in_process),
            "daemon": (oneoff_cmd, with_daemon),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        try:
            for _ in range(3):  # warm caches and the store
                for argv, env in sides.values():
                    timed(argv, app, env)
            for _ in range(args.runs):
                for name, (argv, env) in sides.items():
                    times[name].append(timed(argv, app, env))
            served = subprocess.run(
                [oneoff, "daemon", "status"], env=with_daemon, capture_output=True, text=True
            ).stdout.split("\n")[0]
        finally:
            subprocess.run([oneoff, "daemon", "stop"], env=with_daemon, capture_output=True)
    d = statistics.median(times["direct"])
    print(f"python -c pass                      median {d:7.1f} ms  (n={args.runs})")
    for name in ("in-process", "daemon"):
        v = statistics.median(times[name])
        print(
            f"oneoff run, {name:<10}  median {v:7.1f} ms  overhead {v - d:6.1f} ms  "
            f"ratio {v / d:4.2f}x  target <= 40 ms"
        )
    print(served)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
