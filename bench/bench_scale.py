"""Cost per unit of work as the store and the manifest grow (issue #11): it must stay flat.

Usage: python bench/bench_scale.py [--quick] [--rounds N]

Prints medians per size and the ratio largest/smallest per unit of work (1.00 = flat):

* run-id lookups with 10k / 100k / 1M stored runs: the reads of the runs table around a
  run (look up by exact id and by prefix, list running runs),
  and, side by side, the lookup oneoff used before (``id = ? OR id LIKE ?``, a table scan);
  then a whole in-process `oneoff run` of a trivial task against such a store (target:
  per-run overhead flat within 10 % from 10k to 1M runs);
* `audit verify` of 10k / 100k / 1M events with one signed checkpoint per 3 events (one per
  run: started, finished, checkpoint), default mode (target: >= 300,000 events/s at every
  size), and the same with ``--all-signatures``;
* loading a manifest with 1k and 10k tasks (per task; it was quadratic: 10k took 18 s).

Stores are generated in bulk through the store's own SQL, in the format oneoff writes.
``--quick`` (what `make bench` runs) uses sizes 10 to 100 times smaller.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_audit_log import build_log

from oneoff._audit.keys import AuditKey
from oneoff._audit.verify import verify_log
from oneoff._manifest import load_project
from oneoff._store.sqlite import SQLiteStore
from oneoff._store.sqlite_runs import _COLUMNS
from oneoff.testing import invoke


def row(name: str, value: str, target: str = "-") -> None:
    print(f"{name:<50} {value:>18}   target {target}", flush=True)


def ratio(per_unit: list[float]) -> str:
    return f"{max(per_unit[-1], per_unit[0]) / min(per_unit[-1], per_unit[0]):.2f}x"


def fill_runs(db_path: Path, n: int) -> None:
    """``n`` finished runs, ids as oneoff makes them (time-sortable, random suffix)."""
    store = SQLiteStore(db_path)
    placeholders = ", ".join("?" for _ in _COLUMNS)
    sql = f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
    batch = 50_000
    with store.tx() as db:
        for start in range(0, n, batch):
            db.executemany(
                sql,
                (
                    (
                        f"r2026{i:09d}{os.urandom(4).hex()}", "migrate", "production",
                        '{"target": "latest"}', "os:bench", None, "sha256:" + "ab" * 32,
                        "succeeded", 0, f"2026-01-01T00:00:00.{i % 1000:03d}Z",
                        "2026-01-01T00:00:01.000Z", "host/boot", 1, "1", 0, None, 0, None,
                        10, "sha256:" + "cd" * 32, 0,
                    )
                    for i in range(start, min(n, start + batch))
                ),
            )  # fmt: skip
    store.close()


def median_us(fn: Callable[[], object], count: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times) * 1e6


def runs_at(n: int, rounds: int, e2e: int) -> tuple[float, float, float | None]:
    """Per run at ``n`` stored runs: reads (us), the old lookup (us), a whole run (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        (app / "oneoff.toml").write_text('[environments.development]\n[tasks.t]\nargv = ["true"]\n')
        (app / ".oneoff").mkdir(mode=0o700)
        start = time.perf_counter()
        fill_runs(app / ".oneoff" / "state.db", n)
        built = time.perf_counter() - start
        store = SQLiteStore(app / ".oneoff" / "state.db")
        spread = [r[0] for r in store.db.execute("SELECT id FROM runs WHERE rowid % 997 = 1")]
        recent = [r[0] for r in store.db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 64")]
        counter = iter(range(10**9))

        def one_run() -> None:
            # The reads of the runs table around a run besides its own two writes (whose
            # cost is an fsync, not a function of the table's size): ids of recent runs.
            i = next(counter)
            store.get_run(recent[i % 64])  # an exact id (a lock's run, `show`)
            store.get_run(recent[(i + 7) % 64][:-6])  # a unique prefix
            store.running_runs()  # reap_lost_runs, before every run

        def any_id() -> None:
            # Ids spread over the whole table: B-tree pages mostly not cached.
            i = next(counter)
            store.get_run(spread[i % len(spread)])
            store.get_run(spread[(i + 7) % len(spread)][:-6])

        def old_lookup() -> None:
            probe = spread[len(spread) // 2]
            store.db.execute(
                "SELECT id FROM runs WHERE id = ? OR id LIKE ? ORDER BY id LIMIT 2",
                (probe, probe + "%"),
            ).fetchall()

        reads = median_us(one_run, 2000, rounds)
        spread_us = median_us(any_id, 2000, rounds)
        old = median_us(old_lookup, 5 if n >= 1_000_000 else 50, rounds)
        store.close()
        row(f"{n:>9,} runs (built in {built:.1f} s): run-table reads per run", f"{reads:,.0f} us")
        row("  an exact id and a prefix anywhere in the table", f"{spread_us:,.0f} us")
        row("  before: one lookup by `id = ? OR id LIKE ?`", f"{old:,.0f} us")
        if not e2e:
            return reads, old, None
        os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        times = []
        for _ in range(e2e):
            start = time.perf_counter()
            result = invoke(["--app", str(app), "run", "t", "-q"])
            times.append(time.perf_counter() - start)
            assert result.exit_code == 0, result.output
        whole = statistics.median(times) * 1000
        row(f"  whole `oneoff run` in process ({e2e} runs)", f"{whole:.1f} ms")
        return reads, old, whole


def bench_runs(sizes: list[int], rounds: int, e2e: int) -> None:
    print(f"-- run-id lookups (medians of {rounds} rounds)")
    results = [runs_at(n, rounds, e2e) for n in sizes]
    row("run-table reads per run, largest/smallest", ratio([r[0] for r in results]), "<= 1.10x")
    row("  before (id = ? OR id LIKE ?), largest/smallest", ratio([r[1] for r in results]))
    whole = [r[2] for r in results if r[2] is not None]
    if whole:
        row("whole `oneoff run`, largest/smallest", ratio(whole), "<= 1.10x")


def bench_verify(sizes: list[int], rounds: int) -> None:
    print(f"-- audit verify, one checkpoint per 3 events (medians of {rounds} rounds)")
    rates, full_rates = [], []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            store = build_log(Path(tmp), n, 3)
            built = time.perf_counter() - start
            public = AuditKey(Path(tmp)).public()
            cheap, full = [], []
            for _ in range(rounds):
                start = time.perf_counter()
                report = verify_log(store, public)
                cheap.append(time.perf_counter() - start)
                assert report.events == n, report
                assert report.signatures <= 65, report
                start = time.perf_counter()
                verify_log(store, public, all_signatures=True)
                full.append(time.perf_counter() - start)
            store.close()
        rates.append(n / statistics.median(cheap))
        full_rates.append(n / statistics.median(full))
        row(f"{n:>9,} events, {report.checkpoints:,} checkpoints (built {built:.0f} s)",
            f"{rates[-1]:,.0f} events/s", ">= 300,000 events/s")  # fmt: skip
        row("  --all-signatures", f"{full_rates[-1]:,.0f} events/s")
    row("verify time per event, largest/smallest", ratio([1 / r for r in rates]), "flat")


def bench_manifest(sizes: list[int], rounds: int) -> None:
    print(f"-- loading oneoff.toml (medians of {rounds} rounds)")
    per_task = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "oneoff.toml").write_text(
                "[environments.development]\n"
                + "".join(
                    f'[tasks.t{i}]\nargv = ["python", "-c", "print(1)", "{{name}}"]\n'
                    f'params.name = {{ type = "string", default = "x" }}\n'
                    'locks = ["database"]\n'
                    for i in range(n)
                )
            )
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                load_project(root)
                times.append(time.perf_counter() - start)
        per_task.append(statistics.median(times) / n * 1e6)
        row(f"{n:>9,} tasks", f"{statistics.median(times):.2f} s",
            "10k tasks: was 18 s")  # fmt: skip
        row("  per task", f"{per_task[-1]:.0f} us")
    row("per task, largest/smallest", ratio(per_task), "flat")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}")
    if args.quick:
        bench_runs([1_000, 10_000], args.rounds, e2e=5)
        bench_verify([3_000, 30_000], args.rounds)
        bench_manifest([100, 1_000], args.rounds)
    else:
        bench_runs([10_000, 100_000, 1_000_000], args.rounds, e2e=21)
        bench_verify([10_000, 100_000, 1_000_000], args.rounds)
        bench_manifest([1_000, 10_000], args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
