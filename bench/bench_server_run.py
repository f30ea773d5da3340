"""Added latency of a run granted and recorded by the team server over a local run (#13,
target: <= 30 ms median).

Usage: python bench/bench_server_run.py [--rounds N] [--postgres]

Builds the access kit's app (tests/_access_kit.py), starts a real ``oneoff server`` on it
(SQLite, or a throw-away PostgreSQL with ``--postgres``), and runs the same task (``noop``
in production, signed by alice) N times each way, interleaved so both see the same load:

* local: ``run_task`` on a runner's checkout with its own store (plan, verify the release,
  decide, lock, execute, record, checkpoint);
* server: ``run_remote`` from the same checkout (plan and verify the release the same way,
  then the signed grant request, the grant's check, start, output, finish over HTTP to
  127.0.0.1; the server decides, records and checkpoints).

Both in this process (no interpreter start), so the difference is what the server adds.
Prints the medians, their difference and their ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _access_kit import make_access_app, make_keys
from _serverproc import ServerProc
from oneoff._app import open_app
from oneoff._identity import Signer
from oneoff._pipeline import RunRequest, run_task

TARGET_MS = 30.0


def one_local(root: Path, key: Path) -> float:
    app = open_app(root)
    request = RunRequest(task="noop", environment="production", signer=Signer(key, agent=False))
    start = time.perf_counter()
    try:
        outcome = run_task(app, request, stdout=io.BytesIO(), stderr=io.BytesIO())
    finally:
        app.close()
    took = time.perf_counter() - start
    assert outcome.exit_code == 0, outcome
    return took


def one_remote(root: Path, key: Path, url: str) -> float:
    from oneoff._client.remote import Remote
    from oneoff._client.url import parse_server_url
    from oneoff._remote.runner import run_remote

    app = open_app(root)
    signer = Signer(key, agent=False)
    request = RunRequest(task="noop", environment="production", signer=signer)
    start = time.perf_counter()
    remote = Remote(parse_server_url(url), signer)
    try:
        outcome = run_remote(app, request, remote, stdout=io.BytesIO(), stderr=io.BytesIO())
    finally:
        remote.close()
        app.close()
    took = time.perf_counter() - start
    assert outcome.exit_code == 0, outcome
    assert outcome.run.status == "succeeded", outcome
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--postgres", action="store_true", help="the server's store in PostgreSQL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oneoff-bench-server-run-"))
    pg = None
    server = None
    try:
        keys = make_keys(work / "keys")
        served = make_access_app(work / "served", keys)
        runner = work / "runner" / "served"
        shutil.copytree(served, runner)
        url = None
        if args.postgres:
            from _pgserver import PgServer, find_bindir
            from oneoff._store.postgres import migrate

            bindir = find_bindir()
            if bindir is None:
                print("PostgreSQL is not installed")
                return 2
            pg = PgServer(bindir)
            pg.start()
            url = pg.database("bench")
            migrate(url)
        os.environ["ONEOFF_LOG_FORMAT"] = "text"
        server = ServerProc(served, store_url=url).start()
        base = f"http://{server.host}:{server.port}"
        key = keys["alice"]
        one_local(runner, key)  # warm both paths: imports, caches, the server's workers
        one_remote(runner, key, base)
        local, remote = [], []
        for _ in range(args.rounds):
            local.append(one_local(runner, key))
            remote.append(one_remote(runner, key, base))
        ml, mr = statistics.median(local) * 1000, statistics.median(remote) * 1000
        added = mr - ml
        store = "PostgreSQL" if args.postgres else "SQLite"
        print(f"{args.rounds} runs each, noop in production (server store: {store})")
        print(f"local run            median {ml:8.1f} ms")
        print(f"server-mediated run  median {mr:8.1f} ms")
        mark = "ok" if added <= TARGET_MS else "HIGH"
        print(f"added by the server  median {added:8.1f} ms  ({mr / ml:.2f}x local)  "
              f"{mark}: target <= {TARGET_MS:g} ms")  # fmt: skip
        return 0
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
