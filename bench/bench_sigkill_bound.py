"""How soon a SIGKILLed runner's task tree is dead, with no other oneoff command run.

Usage: python bench/bench_sigkill_bound.py [--runs N]

Each round starts `oneoff run tree` (in-process runner), whose task starts a grandchild
in its process group and one in a session of its own (double fork + setsid), SIGKILLs the
runner once the task says it is ready, and times until both grandchildren have exited
(their pidfds turn readable). `oneoff locks` then puts the lost run down, untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oneoff.testing import make_app

TREE = """
import json, os, subprocess, time
group = subprocess.Popen(["sleep", "300"])
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode()); os.close(w)
        time.sleep(300)
    os._exit(0)
os.close(w)
open("tree.tmp", "w").write(json.dumps([group.pid, int(os.read(r, 32))]))
os.rename("tree.tmp", "tree.json")
print("ready", flush=True)
time.sleep(300)
"""

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.tree]
argv = ["python", "tree.py"]
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    oneoff = str(Path(sys.executable).parent / "oneoff")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEOFF_")}
    env["ONEOFF_DAEMON"] = "off"
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp) / "app", MANIFEST, {".env": "X=1\n", "tree.py": TREE})
        for _ in range(args.runs):
            (app / "tree.json").unlink(missing_ok=True)
            runner = subprocess.Popen(
                [oneoff, "run", "tree", "--env", "development"], cwd=app, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            assert runner.stdout is not None
            if runner.stdout.readline().strip() != b"ready":
                sys.exit(f"the task did not start: {runner.communicate()}")
            pidfds = [os.pidfd_open(p) for p in json.loads((app / "tree.json").read_text())]
            start = time.perf_counter()
            runner.kill()
            for fd in pidfds:
                select.select([fd], [], [], 60)
                os.close(fd)
            times.append((time.perf_counter() - start) * 1000)
            runner.communicate()
            subprocess.run([oneoff, "locks"], cwd=app, env=env, capture_output=True)
    print(
        f"SIGKILL of the runner -> grandchildren dead: median {statistics.median(times):.1f} ms,"
        f" slowest {max(times):.1f} ms (n={len(times)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
