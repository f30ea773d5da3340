"""How much `oneoff run` adds over running the same argv directly (target: <= 40 ms median).

Usage: python bench/bench_run_overhead.py [--runs N]

Both sides run in this one process, interleaved, so machine noise hits both alike. The
oneoff side is the installed console script (what an operator types), against a temporary
app with one task whose argv is `python -c pass`, recording every run in a fresh SQLite
store.
"""

from __future__ import annotations

import argparse
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


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        app = Path(tmp)
        (app / "oneoff.toml").write_text(MANIFEST)
        (app / ".env").write_text("DATABASE_URL=sqlite:///var/db.sqlite\nSECRET_KEY=abcdefghijkl\n")
        direct_cmd = [sys.executable, "-c", "pass"]
        oneoff_cmd = [oneoff, "run", "noop", "--env", "development", "--quiet"]
        for _ in range(3):  # warm caches and the store
            timed(direct_cmd, app)
            timed(oneoff_cmd, app)
        direct, via = [], []
        for _ in range(args.runs):
            direct.append(timed(direct_cmd, app))
            via.append(timed(oneoff_cmd, app))
    d, v = statistics.median(direct), statistics.median(via)
    print(f"python -c pass            median {d:7.1f} ms  (n={args.runs})")
    print(f"oneoff run (python -c pass) median {v:7.1f} ms")
    print(f"overhead                  median {v - d:7.1f} ms  ratio {v / d:4.2f}x  target <= 40 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
