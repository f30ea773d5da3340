"""Audit log and output capture speed: durable appends, full verification, runner memory.

Usage: python bench/bench_audit_log.py [--quick] [--rounds N]

Prints medians and the targets of issue #4, side by side:

* durable appends/s: ``AuditLog.append`` on a real store (WAL, synchronous=FULL), one commit
  per event (target >= 2,000/s);
* verify of 1,000,000 events (events/s, target >= 300,000/s, i.e. <= 3.5 s), with a signed
  checkpoint every 1,000 events; plus the cost of one checkpoint signature check;
* verify of the same log with dense checkpoints, one every 3 events (one per run: started,
  finished, checkpoint), in the default mode for a log that large (every root checked, the
  newest signature and a random sample of 32 to 64) and with ``all_signatures=True``;
* a checkpoint's cost (signing after a run: key load + O(log n) tree update);
* the peak RSS of the `oneoff run` process while its task streams 1 GiB to stdout
  (target <= 60 MB), read from /proc/PID/status VmHWM.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oneoff._audit.checkpoint import sign_checkpoint, verify_checkpoint
from oneoff._audit.keys import AuditKey
from oneoff._audit.log import GENESIS, AuditLog, chain_hash, event_body
from oneoff._audit.merkle import TreeBuilder
from oneoff._audit.verify import verify_log
from oneoff._store.sqlite import SQLiteStore


def row(name: str, value: str, target: str) -> None:
    print(f"{name:<44} {value:>22}   target {target}")


def bench_appends(n: int, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            log = AuditLog(SQLiteStore(Path(tmp) / "state.db"), AuditKey(Path(tmp)))
            start = time.perf_counter()
            for i in range(n):
                log.append("run.started", actor="os:bench", run_id=f"r{i}", payload={"i": i})
            rates.append(n / (time.perf_counter() - start))
            log.store.close()
    return statistics.median(rates)


def build_log(root: Path, n: int, every: int) -> SQLiteStore:
    """``n`` events written in bulk (same format as append), a checkpoint every ``every``."""
    store = SQLiteStore(root / "state.db")
    key = AuditKey(root).private()
    tree, prev, rows, cps = TreeBuilder(), GENESIS, [], []
    for seq in range(1, n + 1):
        body = event_body(
            ts="2026-01-01T00:00:00.000000Z", kind="run.finished", actor="os:bench",
            environment="production", task="migrate", run_id=f"r{seq:012d}", release_id=None,
            plan_hash="sha256:" + "ab" * 32,
            payload={"status": "succeeded", "exit_code": 0, "output_bytes": seq},
        )  # fmt: skip
        digest = chain_hash(prev, body)
        rows.append((seq, prev, body, digest))
        tree.append(digest)
        prev = digest
        if seq % every == 0 or seq == n:
            cp = sign_checkpoint(seq, tree.root(), 1_800_000_000, key)
            cps.append((cp.size, cp.root, cp.timestamp, cp.key_id, cp.signature,
                        b"".join(tree.frontier)))  # fmt: skip
    with store.tx() as db:
        db.executemany(
            "INSERT INTO audit_events (seq, prev_hash, body, hash) VALUES (?,?,?,?)", rows
        )
        db.executemany("INSERT INTO audit_checkpoints VALUES (?,?,?,?,?,?)", cps)
    return store


def bench_verify(n: int, rounds: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        store = build_log(Path(tmp), n, 1000)
        public = AuditKey(Path(tmp)).public()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            report = verify_log(store, public)
            times.append(time.perf_counter() - start)
        assert report.events == n
        size = (Path(tmp) / "state.db").stat().st_size
        store.close()
    return statistics.median(times), n / statistics.median(times), size


def bench_verify_dense(n: int, every: int, rounds: int) -> tuple[float, float, int]:
    """Median seconds of the default verify and of all_signatures=True, and checkpoints."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = build_log(Path(tmp), n, every)
        print(f"  (built {n:,} events with a checkpoint every {every} in "
              f"{time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        public = AuditKey(Path(tmp)).public()
        cheap, full = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            report = verify_log(store, public)
            cheap.append(time.perf_counter() - start)
            assert report.events == n, report
            assert report.signatures <= 65, report
            start = time.perf_counter()
            report = verify_log(store, public, all_signatures=True)
            full.append(time.perf_counter() - start)
            assert report.signatures == report.checkpoints
        store.close()
    return statistics.median(cheap), statistics.median(full), report.checkpoints


def bench_signature_check(rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        key = AuditKey(Path(tmp)).private()
        cp = sign_checkpoint(1, b"\x01" * 32, 1_800_000_000, key)
        public = key.public_key()
        start = time.perf_counter()
        for _ in range(rounds):
            verify_checkpoint(cp, public)
        return (time.perf_counter() - start) / rounds * 1e6


def bench_checkpoint(n: int, rounds: int) -> float:
    """One checkpoint after one new event, on a log of ``n`` events, fresh key object each."""
    with tempfile.TemporaryDirectory() as tmp:
        build_log(Path(tmp), n, n).close()
        times = []
        for _ in range(rounds):
            log = AuditLog(SQLiteStore(Path(tmp) / "state.db"), AuditKey(Path(tmp)))
            log.append("run.finished", actor="os:bench")
            start = time.perf_counter()
            log.checkpoint()
            times.append(time.perf_counter() - start)
            log.store.close()
        return statistics.median(times) * 1000


WRITER = "import sys\nc = b'x' * 1048576\nfor _ in range({mib}): sys.stdout.buffer.write(c)\n"


def bench_stream_rss(mib: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "writer.py").write_text(WRITER.format(mib=mib))
        (root / "oneoff.toml").write_text(
            '[environments.development]\n[tasks.flood]\nargv = ["python", "writer.py"]\n'
        )
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "oneoff", "run", "flood", "-q"],
            cwd=root, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        peak = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                break
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        if proc.wait() != 0:
            sys.exit("oneoff run flood failed")
        return peak / 1024, mib / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n_append = 500 if args.quick else 3000
    n_verify = 100_000 if args.quick else 1_000_000
    mib = 128 if args.quick else 1024
    print(f"python {sys.version.split()[0]}, medians of {args.rounds} rounds")
    rate = bench_appends(n_append, args.rounds)
    row(f"durable appends ({n_append} events)", f"{rate:,.0f} events/s", ">= 2,000 events/s")
    seconds, vrate, size = bench_verify(n_verify, args.rounds)
    row(f"verify {n_verify:,} events (cp every 1,000)", f"{seconds:.2f} s", "<= 3.5 s per 1M")
    row("  verify throughput", f"{vrate:,.0f} events/s", ">= 300,000 events/s")
    row("  store size", f"{size / n_verify:.0f} bytes/event", "-")
    row("checkpoint signature check", f"{bench_signature_check(2000):.0f} us each", "-")
    cheap, full, cps = bench_verify_dense(n_verify, 3, args.rounds)
    row(f"verify {n_verify:,} events, {cps:,} checkpoints", f"{cheap:.2f} s", "<= 3.5 s per 1M")
    row("  the same, --all-signatures", f"{full:.2f} s", "-")
    row(
        f"checkpoint after a run (log of {n_verify:,})",
        f"{bench_checkpoint(n_verify, 5):.1f} ms",
        "-",
    )
    peak, throughput = bench_stream_rss(mib)
    row(f"runner peak RSS streaming {mib} MiB", f"{peak:.1f} MB", "<= 60 MB")
    row("  streaming throughput (redacted + stored)", f"{throughput:,.0f} MiB/s", "-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
