"""Cost per unit of work as the store and the manifest grow (issue #11): it must stay flat.

Usage: python bench/bench_scale.py [--quick] [--rounds N] [--whole-runs N] [--only SECTION]
                                   [--baseline SRC]

Prints medians per size and the ratio largest/smallest per unit of work (1.00 = flat):

* run-id lookups with 10k / 100k / 1M stored runs: the reads of the runs table around a
  run (look up by exact id and by prefix, list running runs),
  and, side by side, the lookup oneoff used before (``id = ? OR id LIKE ?``, a table scan);
  then a whole in-process `oneoff run` of a trivial task against such a store, whose
  audit log holds 3 events per stored run and one signed checkpoint per 3 events, as
  oneoff writes them (target: per-run overhead flat within 10 % from 10k to 1M runs).
  Each is reported in wall time and in this process's CPU time: on a shared machine the
  wall clock mostly measures the other jobs. The depth of the runs table's B-trees is
  printed beside them (what remains of the growth: one page more per level);
* `audit verify` of 10k / 100k / 1M events with one signed checkpoint per 3 events (one per
  run: started, finished, checkpoint), default mode (target: >= 300,000 events/s at every
  size), and the same with ``--all-signatures``; smaller logs are verified more times a
  round (as many events in all, up to 300k), so their medians are not one preempted run's.
  Beside them, a gauge of the host's speed measured in every round (seconds for 1M SHA-256
  of 200 bytes, as in the README: 0.46 s in this host's fast phases, 0.74-0.81 s in its slow
  ones) and the load average, so figures from different phases can be told apart; with
  ``--baseline SRC`` (another checkout's ``src``, e.g. of main: ``git worktree add --detach
  /tmp/base main``), that code's verify of the same logs, in a process of its own, taking
  turns with this code's in every round, and the ratio of the two;
* loading a manifest with 1k and 10k tasks (per task; it was quadratic: 10k took 18 s).

Stores are generated in bulk through the store's own SQL, in the format oneoff writes.
``--quick`` (what `make bench` runs) uses sizes 10 to 100 times smaller.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
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


def gauge() -> float:
    """Seconds 1M SHA-256 of 200 bytes take now (200k of them, scaled): this host's CPU
    speed swings by up to 1.7x within minutes, and audit verify's work is mostly hashing."""
    data, sha256 = b"x" * 200, hashlib.sha256
    start = time.process_time()
    for _ in range(200_000):
        sha256(data).digest()
    return (time.process_time() - start) * 5


def per_call_us(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


class RunsAt:
    """An app whose store holds ``n`` runs, and the measurements made on it."""

    def __init__(self, root: Path, n: int, *, with_audit: bool) -> None:
        self.n, self.app = n, root
        (root / "oneoff.toml").write_text(
            '[environments.development]\n[tasks.t]\nargv = ["true"]\n'
        )
        (root / ".oneoff").mkdir(mode=0o700)
        start = time.perf_counter()
        fill_runs(root / ".oneoff" / "state.db", n)
        if with_audit:
            build_log(root / ".oneoff", 3 * n, 3).close()
        self.built = time.perf_counter() - start
        self.store = SQLiteStore(root / ".oneoff" / "state.db")
        db = self.store.db
        self.depth = {
            name: db.execute(
                "SELECT max(length(path)) / 4 + 1 FROM dbstat WHERE name = ?", (name,)
            ).fetchone()[0]
            for name in ("runs", "sqlite_autoindex_runs_1")
        }
        self.spread = [r[0] for r in db.execute("SELECT id FROM runs WHERE rowid % 997 = 1")]
        self.recent = [r[0] for r in db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 64")]
        self.i = 0
        self.reads: list[float] = []
        self.reads_cpu: list[float] = []
        self.anywhere: list[float] = []
        self.old: list[float] = []
        self.whole: list[float] = []
        self.whole_cpu: list[float] = []

    def one_run(self) -> None:
        # The reads of the runs table around a run besides its own two writes (whose cost
        # is an fsync, not a function of the table's size): ids of recent runs.
        self.i += 1
        self.store.get_run(self.recent[self.i % 64])  # an exact id (a lock's run, `show`)
        self.store.get_run(self.recent[(self.i + 7) % 64][:-6])  # a unique prefix
        self.store.running_runs()  # reap_lost_runs, before every run

    def any_id(self) -> None:
        # Ids spread over the whole table: B-tree pages mostly not cached.
        self.i += 1
        self.store.get_run(self.spread[self.i % len(self.spread)])
        self.store.get_run(self.spread[(self.i + 7) % len(self.spread)][:-6])

    def old_lookup(self) -> None:
        probe = self.spread[len(self.spread) // 2]
        self.store.db.execute(
            "SELECT id FROM runs WHERE id = ? OR id LIKE ? ORDER BY id LIMIT 2",
            (probe, probe + "%"),
        ).fetchall()

    def measure(self, whole_runs: int) -> None:
        cpu = time.process_time()
        self.reads.append(per_call_us(self.one_run, 1000))
        self.reads_cpu.append((time.process_time() - cpu) / 1000 * 1e6)
        self.anywhere.append(per_call_us(self.any_id, 1000))
        self.old.append(per_call_us(self.old_lookup, 3 if self.n >= 1_000_000 else 20))
        for _ in range(whole_runs):
            start, cpu = time.perf_counter(), time.process_time()
            result = invoke(["--app", str(self.app), "run", "t", "-q"])
            self.whole.append((time.perf_counter() - start) * 1000)
            self.whole_cpu.append((time.process_time() - cpu) * 1000)
            assert result.exit_code == 0, result.output


def bench_runs(sizes: list[int], rounds: int, whole_runs: int) -> None:
    print(f"-- run-id lookups: medians of {rounds} rounds, sizes interleaved in each round")
    print(f"   (load average before: {os.getloadavg()[0]:.1f})")
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    with contextlib.ExitStack() as stack:
        at = [
            RunsAt(Path(stack.enter_context(tempfile.TemporaryDirectory())), n,
                   with_audit=whole_runs > 0)
            for n in sizes
        ]  # fmt: skip
        for _ in range(rounds):
            for one in at:
                one.measure(whole_runs)
        for one in at:
            one.store.close()
    med = statistics.median
    print(f"   (load average after: {os.getloadavg()[0]:.1f})")
    for one in at:
        row(f"{one.n:>9,} runs (built in {one.built:.1f} s): run-table reads per run",
            f"{med(one.reads):,.0f} us")  # fmt: skip
        row("  the same, CPU time", f"{med(one.reads_cpu):,.0f} us")
        row("  B-tree levels: runs table, id index",
            f"{one.depth['runs']}, {one.depth['sqlite_autoindex_runs_1']}")  # fmt: skip
        row("  an exact id and a prefix anywhere in the table", f"{med(one.anywhere):,.0f} us")
        row("  before: one lookup by `id = ? OR id LIKE ?`", f"{med(one.old):,.0f} us")
        if whole_runs:
            row(f"  whole `oneoff run` in process ({len(one.whole)} runs)",
                f"{med(one.whole):.1f} ms")  # fmt: skip
            row("  the same, CPU time of the runner", f"{med(one.whole_cpu):.1f} ms")
    row("run-table reads per run, largest/smallest", ratio([med(x.reads) for x in at]), "<= 1.10x")
    row("  the same, CPU time", ratio([med(x.reads_cpu) for x in at]), "<= 1.10x")
    row("  anywhere in the table, largest/smallest", ratio([med(x.anywhere) for x in at]))
    row("  before (id = ? OR id LIKE ?), largest/smallest", ratio([med(x.old) for x in at]))
    if whole_runs:
        row("whole `oneoff run`, largest/smallest", ratio([med(x.whole) for x in at]), "<= 1.10x")
        row("  the same, CPU time", ratio([med(x.whole_cpu) for x in at]), "<= 1.10x")


# Another checkout's verify_log, in a process of its own (two versions of one package cannot
# share a process): it verifies a log as often as asked and answers with the times.
_BASELINE = """
import json, sys, time
from pathlib import Path
import oneoff
from oneoff._audit.keys import AuditKey
from oneoff._audit.verify import verify_log
from oneoff._store.sqlite import SQLiteStore
print(json.dumps(oneoff.__file__), flush=True)
opened = {}
for line in sys.stdin:
    root, count = json.loads(line)
    if root not in opened:
        opened[root] = SQLiteStore(Path(root) / "state.db"), AuditKey(Path(root)).public()
    store, public = opened[root]
    times = []
    for _ in range(count):
        start, cpu = time.perf_counter(), time.process_time()
        events = verify_log(store, public).events
        times.append((time.perf_counter() - start, time.process_time() - cpu, events))
    print(json.dumps(times), flush=True)
"""


class Baseline:
    """The verify of the checkout whose ``src`` is given, run on request."""

    def __init__(self, src: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}  # ahead of this checkout's install
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BASELINE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.where = Path(json.loads(self.stdout.readline())).parent
        if not self.where.is_relative_to(src.resolve()):
            sys.exit(f"--baseline: {src} did not provide oneoff (got {self.where})")

    def verify(self, root: Path, count: int) -> list[tuple[float, float, int]]:
        self.stdin.write(json.dumps([str(root), count]) + "\n")
        self.stdin.flush()
        return [(float(t), float(c), int(n)) for t, c, n in json.loads(self.stdout.readline())]

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=60)


def bench_verify(sizes: list[int], rounds: int, baseline: Baseline | None = None) -> None:
    print(
        f"-- audit verify, one checkpoint per 3 events: medians of {rounds} rounds, sizes "
        "interleaved in each round"
    )
    with contextlib.ExitStack() as stack:
        logs = []
        for n in sizes:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            start = time.perf_counter()
            logs.append((n, build_log(tmp, n, 3), AuditKey(tmp).public(), tmp))
            print(f"  (built {n:,} events in {time.perf_counter() - start:.0f} s)", flush=True)
        times: dict[int, list[float]] = {n: [] for n in sizes}
        cpu: dict[int, list[float]] = {n: [] for n in sizes}
        base: dict[int, list[tuple[float, float, int]]] = {n: [] for n in sizes}
        gauges, loads = [gauge()], [os.getloadavg()[0]]
        for turn in range(rounds):
            for n, store, public, root in logs:
                # Smaller logs are verified more times a round (as many events in all, up to
                # 300k): a 30 ms run's median of 3 mostly measures who else had the CPU.
                count = max(1, 300_000 // n)
                if baseline is not None and turn % 2 == 0:  # first every other round
                    base[n] += baseline.verify(root, count)
                for _ in range(count):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    report = verify_log(store, public)
                    times[n].append(time.perf_counter() - start)
                    cpu[n].append(time.process_time() - start_cpu)
                    assert report.events == n, report
                    assert report.signatures <= 65, report
                if baseline is not None and turn % 2 == 1:
                    base[n] += baseline.verify(root, count)
                assert all(events == n for _, _, events in base[n]), base[n]
            gauges.append(gauge())
            loads.append(os.getloadavg()[0])
        # Every signature costs the same at every size: measured once, on the smallest log.
        n, store, public, _ = logs[0]
        start = time.perf_counter()
        full = verify_log(store, public, all_signatures=True)
        all_rate = n / (time.perf_counter() - start)
        for _, store, _, _ in logs:
            store.close()
    rates = [n / statistics.median(times[n]) for n in sizes]
    cpu_rates = [n / statistics.median(cpu[n]) for n in sizes]
    row("host speed gauge: CPU s for 1M SHA-256 of 200 B",
        f"{statistics.median(gauges):.2f} s ({min(gauges):.2f}-{max(gauges):.2f})")  # fmt: skip
    row("load average (median, range)",
        f"{statistics.median(loads):.1f} ({min(loads):.1f}-{max(loads):.1f})")  # fmt: skip
    for n, rate, cpu_rate in zip(sizes, rates, cpu_rates, strict=True):
        row(f"{n:>9,} events, {n // 3:,} checkpoints ({len(times[n])} runs)",
            f"{rate:,.0f} events/s", ">= 300,000 events/s")  # fmt: skip
        # On a shared machine the wall clock also counts time spent waiting for a CPU.
        row("  the same, per second of this process's CPU time", f"{cpu_rate:,.0f} events/s")
        if baseline is not None:
            old = n / statistics.median(t for t, _, _ in base[n])
            old_cpu = n / statistics.median(c for _, c, _ in base[n])
            row("  baseline, wall / CPU time", f"{old:,.0f} / {old_cpu:,.0f}")
            row("  this code / baseline, wall / CPU time",
                f"{rate / old:.2f}x / {cpu_rate / old_cpu:.2f}x")  # fmt: skip
    row(f"  --all-signatures ({full.checkpoints:,} checkpoints)", f"{all_rate:,.0f} events/s")
    row("verify time per event, largest/smallest", ratio([1 / r for r in rates]), "flat")
    row("  the same, CPU time", ratio([1 / r for r in cpu_rates]), "flat")


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
            times, cpu = [], []
            for _ in range(rounds):
                start, start_cpu = time.perf_counter(), time.process_time()
                load_project(root)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        per_task.append(statistics.median(times) / n * 1e6)
        row(f"{n:>9,} tasks", f"{statistics.median(times):.2f} s",
            "10k tasks: was 18 s")  # fmt: skip
        row("  per task", f"{per_task[-1]:.0f} us")
        row("  per task, CPU time", f"{statistics.median(cpu) / n * 1e6:.0f} us")
    row("per task, largest/smallest", ratio(per_task), "flat")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--whole-runs", type=int, default=3, help="`oneoff run`s per round")
    parser.add_argument("--only", choices=("runs", "verify", "manifest"), help="one section")
    parser.add_argument(
        "--baseline", type=Path, metavar="SRC", help="another checkout's src: its verify beside"
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}")
    quick = args.quick
    if args.only in (None, "runs"):
        sizes = [1_000, 10_000] if quick else [10_000, 100_000, 1_000_000]
        bench_runs(sizes, args.rounds, whole_runs=2 if quick else args.whole_runs)
    if args.only in (None, "verify"):
        baseline = Baseline(args.baseline) if args.baseline else None
        if baseline is not None:
            print(f"baseline: {baseline.where}")
        sizes = [3_000, 30_000] if quick else [10_000, 100_000, 1_000_000]
        bench_verify(sizes, args.rounds, baseline)
        if baseline is not None:
            baseline.close()
    if args.only in (None, "manifest"):
        bench_manifest([100, 1_000] if quick else [1_000, 10_000], args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
