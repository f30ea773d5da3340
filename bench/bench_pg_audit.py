"""Durable audit appends per second: PostgreSQL beside SQLite (issue #13, target >= 2,000/s).

Usage: python bench/bench_pg_audit.py [--quick] [--rounds N] [--url URL]

Starts a throw-away PostgreSQL server from Debian's ``postgresql`` package (as the tests
do, tests/_pgserver.py: fsync on, Unix socket) unless ``--url`` names a database, checks
``synchronous_commit`` is on, and prints medians of N rounds, side by side:

* SQLite: ``AuditLog.append``, one commit per event (WAL, synchronous=FULL);
* PostgreSQL: the same, one commit per event, from one writer;
* PostgreSQL: 8 threads appending at once, each event its own commit (a server's load);
* PostgreSQL: events appended 50 to a transaction (what a server batching concurrent
  requests into one commit would get).

Every write is serialized by the store's write lock and each commit waits for its WAL
flush, so one-event-per-commit appends are bounded by the disk's flush latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _pgserver import PgServer, find_bindir
from oneoff._audit.log import AuditLog
from oneoff._store.interface import Store
from oneoff._store.postgres import PostgresStore, migrate
from oneoff._store.sqlite import SQLiteStore


def row(name: str, rate: float, base: float | None = None) -> None:
    ratio = f"  ({rate / base:.2f}x SQLite)" if base else ""
    mark = "ok " if rate >= 2000 else "LOW"
    print(f"{name:<52} {rate:>10,.0f}/s  {mark} target >= 2,000/s{ratio}")


def serial(store: Store, n: int) -> float:
    log = AuditLog(store)
    start = time.perf_counter()
    for i in range(n):
        log.append("run.started", actor="os:bench", run_id=f"r{i}", payload={"i": i})
    return n / (time.perf_counter() - start)


def threaded(store: Store, n: int, threads: int = 8) -> float:
    stores = [store.connect_again() for _ in range(threads)]
    per = n // threads

    def work(s: Store) -> None:
        log = AuditLog(s)
        for i in range(per):
            log.append("run.started", actor="os:bench", payload={"i": i})

    workers = [threading.Thread(target=work, args=(s,)) for s in stores]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    for s in stores:
        s.close()
    return per * threads / elapsed


def batched(store: Store, n: int, batch: int = 50) -> float:
    log = AuditLog(store)
    start = time.perf_counter()
    for first in range(0, n, batch):
        with store.tx():
            for i in range(first, min(first + batch, n)):
                log.append("run.started", actor="os:bench", payload={"i": i})
    return n / (time.perf_counter() - start)


def disk_fsyncs(directory: Path, n: int = 200) -> float:
    """Raw 4 KiB write + fdatasync per second in ``directory``: the ceiling for any store
    committing one event at a time (printed so a loaded machine's figures can be read)."""
    import os

    fd = os.open(directory / "fsync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        start = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            os.fdatasync(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def median_of(rounds: int, make: Callable[[], Store], measure: Callable[[Store], float]) -> float:
    rates = []
    for _ in range(rounds):
        store = make()
        try:
            rates.append(measure(store))
        finally:
            store.close()
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--url", help="an empty PostgreSQL database to use instead")
    args = parser.parse_args()
    n = 400 if args.quick else 2000
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
        urls: list[str] = []

        def fresh_pg() -> Store:
            url = args.url if args.url else server.database("bench")  # type: ignore[union-attr]
            migrate(url)
            urls.append(url)
            return PostgresStore(url)

        probe = fresh_pg()
        setting = probe.db.execute("SHOW synchronous_commit").fetchone()
        fsync = probe.db.execute("SHOW fsync").fetchone()
        probe.close()
        sync = setting[0] if setting else "?"
        flush = fsync[0] if fsync else "?"
        print(f"PostgreSQL synchronous_commit={sync}, fsync={flush}; {n} events, {rounds} rounds")
        with tempfile.TemporaryDirectory() as tmp:
            rate = statistics.median(disk_fsyncs(Path(tmp)) for _ in range(rounds))
            print(f"{'this disk: write + fdatasync':<52} {rate:>10,.0f}/s  (the ceiling)")
            count = iter(range(10**6))
            base = median_of(
                rounds, lambda: SQLiteStore(Path(tmp) / f"s{next(count)}.db"),
                lambda s: serial(s, n),
            )  # fmt: skip
        row("SQLite, one commit per event", base)
        row(
            "PostgreSQL, one commit per event",
            median_of(rounds, fresh_pg, lambda s: serial(s, n)),
            base,
        )
        row("PostgreSQL, 8 threads, one commit per event",
            median_of(rounds, fresh_pg, lambda s: threaded(s, n)), base)  # fmt: skip
        row("PostgreSQL, 50 events per commit",
            median_of(rounds, fresh_pg, lambda s: batched(s, n)), base)  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
