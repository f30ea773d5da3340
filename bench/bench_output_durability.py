"""How long output shown on the terminal waits before it is in the store (bound: 0.75 s + a commit).

Usage: python bench/bench_output_durability.py [--runs N] [--quick]

Each run is `oneoff run quiet` (in-process) whose task prints a line, another 0.1 s later,
and goes quiet: the case where a runner killed with SIGKILL used to lose its last output.
For each line this script reads it from oneoff's stdout, then polls the store (read-only,
every 2 ms) until its row is committed; it reports the delays' medians and maxima. The
first line comes after a quiet spell (committed at once); the second waits for the timer.
The runner is then SIGKILLed, as in tests/test_contain.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.quiet]
argv = ["python", "-u", "-c", "import time; print(1); time.sleep(0.1); print(2); time.sleep(60)"]
"""


def one(app: Path, env: dict[str, str]) -> tuple[float, float]:
    oneoff = str(Path(sys.executable).parent / "oneoff")
    proc = subprocess.Popen(
        [oneoff, "run", "quiet", "--env", "development"], cwd=app, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    db = f"file:{app / '.oneoff' / 'state.db'}?mode=ro"
    try:
        shown_until(proc.stdout.fileno(), b"1")
        first = stored_after(db, 1)
        shown_until(proc.stdout.fileno(), b"2")
        return first, stored_after(db, 3)
    finally:
        proc.kill()
        proc.wait()


def shown_until(fd: int, wanted: bytes) -> None:
    """Read what oneoff shows, byte by byte, until ``wanted`` appears."""
    while os.read(fd, 1) != wanted:
        pass


def stored_after(db: str, size: int) -> float:
    """Seconds until the newest run has this many bytes of output committed."""
    shown = time.perf_counter()
    while True:
        with sqlite3.connect(db, uri=True, timeout=30) as conn:
            rows = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM output_chunks WHERE run_id = "
                "(SELECT id FROM runs ORDER BY started_at DESC LIMIT 1)"
            ).fetchone()[0]
        if rows >= size:
            return time.perf_counter() - shown
        time.sleep(0.002)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    tmp = Path(tempfile.mkdtemp())
    try:
        app = tmp / "app"
        app.mkdir()
        (app / "oneoff.toml").write_text(MANIFEST)
        (app / ".env").write_text("X=1\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONEOFF_")}
        env["ONEOFF_DAEMON"] = "off"
        one(app, env)  # warm up: creates the store
        pairs = [one(app, env) for _ in range(runs)]
    finally:
        subprocess.run([str(Path(sys.executable).parent / "oneoff"), "runs"], cwd=tmp / "app",
                       env=env, capture_output=True)  # fmt: skip
        shutil.rmtree(tmp)
    for name, delays in (
        ("a line after a quiet spell", [a for a, _ in pairs]),
        ("a line 0.1 s after a commit", [b for _, b in pairs]),
    ):
        print(
            f"shown -> stored, {name}: median {statistics.median(delays) * 1000:.0f} ms, "
            f"max {max(delays) * 1000:.0f} ms over {runs} runs (bound: 750 ms + one commit)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
