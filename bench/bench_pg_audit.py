"""Durable audit appends per second on PostgreSQL: group commit beside one commit per append
(issue #13, target >= 2,000/s with synchronous_commit on).

Usage: python bench/bench_pg_audit.py [--quick] [--rounds N] [--url URL]

Starts a throw-away PostgreSQL server from Debian's ``postgresql`` package (as the tests
do, tests/_pgserver.py: fsync on, Unix socket) unless ``--url`` names a database, checks
``synchronous_commit`` is on, and prints medians of N rounds (a fresh database each):

* this disk's raw write + fdatasync rate (what one commit per append is bounded by);
* SQLite, ``AuditLog.append`` from one writer, one commit per event (WAL, synchronous=FULL);
* PostgreSQL at 1, 8 and 32 concurrent appenders (threads, each its own connection, as the
  server's worker threads are): ``AuditLog.append`` as the store does it (group commit:
  appends waiting together share one transaction and one WAL flush), side by side with the
  one-commit-per-append baseline (each append inside its own ``store.tx()``), the ratio and
  the mean events per commit;
* PostgreSQL, 4 processes of 8 threads on one database (group commit across processes:
  their batches are serialized by the store's advisory lock).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import oneoff._store.postgres as pg
from _pgserver import PgServer, find_bindir
from oneoff._audit.log import AuditLog
from oneoff._store.interface import Store
from oneoff._store.postgres import PostgresStore, migrate
from oneoff._store.postgres_group import group_for
from oneoff._store.sqlite import SQLiteStore

# Each appender thread holds a connection; the default pool (10) would make the 32 wait.
pg.POOL_MAX = 40
TARGET = 2000


def row(name: str, rate: float, extra: str = "") -> None:
    mark = "ok " if rate >= TARGET else "LOW"
    print(f"{name:<46} {rate:>9,.0f}/s  {mark} {extra}", flush=True)


def appenders(url: str, count: int, per: int, *, one_commit_each: bool) -> float:
    """``count`` threads append ``per`` events each, started together; events/s."""
    stores = [PostgresStore(url) for _ in range(count)]
    start_line = threading.Barrier(count + 1)

    def work(store: Store) -> None:
        log = AuditLog(store)
        start_line.wait()
        for i in range(per):
            if one_commit_each:
                with store.tx():  # the append joins it: its own transaction, its own commit
                    log.append("run.started", actor="os:bench", payload={"i": i})
            else:
                log.append("run.started", actor="os:bench", payload={"i": i})

    workers = [threading.Thread(target=work, args=(s,)) for s in stores]
    for w in workers:
        w.start()
    start_line.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    for s in stores:
        s.close()
    return count * per / elapsed


def sqlite_serial(path: Path, n: int) -> float:
    store = SQLiteStore(path)
    log = AuditLog(store)
    start = time.perf_counter()
    for i in range(n):
        log.append("run.started", actor="os:bench", payload={"i": i})
    rate = n / (time.perf_counter() - start)
    store.close()
    return rate


def disk_fsyncs(directory: Path, n: int = 200) -> float:
    """Raw 4 KiB write + fdatasync per second in ``directory``."""
    fd = os.open(directory / "fsync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        start = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            os.fdatasync(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def processes(url: str, count: int, threads: int, per: int) -> tuple[float, float]:
    """``count`` processes of ``threads`` appenders each; events/s and events per commit."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        argv = [sys.executable, __file__, "--worker", url, go, str(threads), str(per)]
        procs = [
            subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        for p in procs:  # each says "ready" once connected
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    # From the first start to the last end (one clock: the same machine's).
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    events = sum(o["events"] for o in outs)
    return events / elapsed, events / max(1, sum(o["batches"] for o in outs))


def worker(url: str, go: Path, threads: int, per: int) -> int:
    """One process of ``processes``: connects, waits for ``go``, appends, reports."""
    stores = [PostgresStore(url) for _ in range(threads)]
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)

    def work(store: Store) -> None:
        log = AuditLog(store)
        for i in range(per):
            log.append("run.started", actor=f"os:bench{os.getpid()}", payload={"i": i})

    ts = [threading.Thread(target=work, args=(s,)) for s in stores]
    start = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    end = time.time()
    group = group_for(url)
    print(
        json.dumps({"events": group.events, "batches": group.batches, "start": start, "end": end})
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--url", help="an empty PostgreSQL database to use instead")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, go, threads, per = args.worker
        return worker(url, Path(go), int(threads), int(per))
    n = 320 if args.quick else 960  # events per measurement, split among the appenders
    rounds = args.rounds or (1 if args.quick else 5)
    server = None
    if args.url is None:
        bindir = find_bindir()
        if bindir is None:
            print("PostgreSQL is not installed: skipped")
            return 0
        server = PgServer(bindir)
        server.start()
    try:

        def fresh() -> str:
            url = args.url if args.url else server.database("bench")  # type: ignore[union-attr]
            migrate(url)
            return url

        probe = PostgresStore(fresh())
        sync = probe.db.execute("SHOW synchronous_commit").fetchone()
        fsync = probe.db.execute("SHOW fsync").fetchone()
        probe.close()
        print(
            f"PostgreSQL synchronous_commit={sync[0] if sync else '?'}, "
            f"fsync={fsync[0] if fsync else '?'}; {n} events a measurement, medians of "
            f"{rounds} rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        with tempfile.TemporaryDirectory() as tmp:
            disk = statistics.median(disk_fsyncs(Path(tmp)) for _ in range(rounds))
            print(f"{'this disk: write + fdatasync':<46} {disk:>9,.0f}/s  (one commit's ceiling)")
            lite = statistics.median(
                sqlite_serial(Path(tmp) / f"s{r}.db", n // 2) for r in range(rounds)
            )
        row("SQLite, 1 appender, one commit per append", lite)

        for count in (1, 8, 32):
            base: list[float] = []
            grouped: list[float] = []
            per_commit: list[float] = []
            for _ in range(rounds):
                base.append(appenders(fresh(), count, n // count, one_commit_each=True))
                url = fresh()
                grouped.append(appenders(url, count, n // count, one_commit_each=False))
                group = group_for(url)
                per_commit.append(group.events / max(1, group.batches))
            b, g = statistics.median(base), statistics.median(grouped)
            row(f"PostgreSQL, {count:>2} appenders, one commit each", b)
            row(
                f"PostgreSQL, {count:>2} appenders, group commit", g,
                f"{g / b:5.2f}x baseline, {statistics.median(per_commit):.1f} events/commit",
            )  # fmt: skip
        results = [processes(fresh(), 4, 8, n // 8) for _ in range(rounds)]
        rate = statistics.median(r[0] for r in results)
        row(
            "PostgreSQL, 4 processes x 8 appenders, group", rate,
            f"{statistics.median(r[1] for r in results):.1f} events/commit",
        )  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
