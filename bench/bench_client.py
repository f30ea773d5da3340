"""What asking the team server costs a CLI command, beside the same command run locally.

Usage: python bench/bench_client.py [--quick] [--rounds N]

Starts a real ``oneoff server`` (tests/_serverproc.py, SQLite, 127.0.0.1) on an access-kit
app, then times, in this process (``oneoff.cli.main``), the median of N rounds of:

* ``requests`` locally (opens the store) and with ``--server`` (a cached session token:
  one HTTP read), and ``--server`` with no cached token (a signed ``POST /v1/session``
  first: the cost once per 15 minutes);
* ``audit verify`` locally (the whole log) and with ``--server`` (the server verifies;
  this client checks the checkpoint's signature and a consistency proof).

Times include output to /dev/null; the machine may be shared, so compare the columns of
one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _access_kit import make_access_app, make_keys
from _serverproc import ServerProc
from oneoff.cli import main


def timed(argv: list[str], rounds: int, before: Callable[[], None] | None = None) -> float:
    samples = []
    for _ in range(rounds):
        if before is not None:
            before()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            start = time.perf_counter()
            code = main(argv)
            samples.append(time.perf_counter() - start)
        if code != 0:
            raise SystemExit(f"{' '.join(argv)} exited {code}")
    return statistics.median(samples) * 1000


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (CI smoke run)")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["XDG_STATE_HOME"] = str(root / "state")
        keys = make_keys(root / "keys")
        app = make_access_app(root / "app", keys)
        os.environ["ONEOFF_SIGNING_KEY"] = str(keys["bob"])
        server = ServerProc(app).start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            sessions = root / "state" / "oneoff" / "sessions"

            def no_session() -> None:
                for path in sessions.glob("*.json"):
                    path.unlink()

            rows = [
                ("requests (local store)", timed(["requests", "--app", str(app)], rounds)),
                ("requests --server (cached token)", timed(["requests", "--server", url], rounds)),
                ("requests --server (new session first)",
                 timed(["requests", "--server", url], rounds, no_session)),
                ("audit verify (local store)",
                 timed(["audit", "verify", "--app", str(app)], rounds)),
                ("audit verify --server (witness check)",
                 timed(["audit", "verify", "--server", url], rounds)),
            ]  # fmt: skip
        finally:
            server.stop()
    base = {"requests": rows[0][1], "audit": rows[3][1]}
    print(f"{'command':<42} {'median':>10}  vs local   ({rounds} rounds)")
    for name, ms in rows:
        ratio = ms / base[name.split()[0]]
        print(f"{name:<42} {ms:>8.1f} ms  {ratio:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
