"""Benchmark the audit Merkle core: events/s to a root, proof generation and checking."""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from oneoff._audit.merkle import (
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

TARGET_EVENTS_PER_S = 300_000
EVENT_SIZE = 200


def synthetic_events(n: int) -> list[bytes]:
    # Distinct, incompressible-looking 200-byte blobs, built once outside the timing.
    base = hashlib.sha256(b"oneoff-bench").digest() * 7
    return [base[: EVENT_SIZE - 8] + i.to_bytes(8, "big") for i in range(n)]


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_root(events: list[bytes]) -> bytes:
    tb = TreeBuilder()
    tb.extend(map(leaf_hash, events))
    return tb.root()


def build_root_append(events: list[bytes]) -> bytes:
    tb = TreeBuilder()
    append = tb.append
    for e in events:
        append(leaf_hash(e))
    return tb.root()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100k events, fewer runs")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    runs = 3 if args.quick else 5
    samples = 200 if args.quick else 1000

    events = synthetic_events(n)
    leaves = [leaf_hash(e) for e in events]
    print(f"{n:,} events of {EVENT_SIZE} bytes, median of {runs} runs")

    t_hash = median_time(lambda: [leaf_hash(e) for e in events], runs)
    t_ext = median_time(lambda: build_root(events), runs)
    t_app = median_time(lambda: build_root_append(events), runs)
    t_root = median_time(lambda: root(leaves), runs)
    assert build_root(events) == root(leaves)
    rate = n / t_ext
    row("leaf_hash only", f"{t_hash:.3f} s", f"{n / t_hash:,.0f} events/s")
    row("leaf_hash + TreeBuilder.extend", f"{t_ext:.3f} s", f"{rate:,.0f} events/s")
    row("leaf_hash + TreeBuilder.append", f"{t_app:.3f} s", f"{n / t_app:,.0f} events/s")
    row("root(leaf_hashes) only", f"{t_root:.3f} s", f"{n / t_root:,.0f} leaves/s")
    row(f"ratio to {TARGET_EVENTS_PER_S:,} events/s target", f"{rate / TARGET_EVENTS_PER_S:.2f}x")

    rng = random.Random(6962)
    r = root(leaves)
    inc_times, con_times = [], []
    for _ in range(runs):
        i = rng.randrange(n)
        inc_times.append(median_time(partial(inclusion_proof, i, leaves), 1))
        m = rng.randrange(1, n)
        con_times.append(median_time(partial(consistency_proof, m, leaves), 1))
    proof = inclusion_proof(i, leaves)
    t_vinc = median_time(
        lambda: [verify_inclusion(leaves[i], i, n, proof, r) for _ in range(samples)], runs
    )
    old_root = root(leaves[:m])
    cproof = consistency_proof(m, leaves)
    t_vcon = median_time(
        lambda: [verify_consistency(m, n, old_root, r, cproof) for _ in range(samples)], runs
    )
    row("inclusion_proof generation", f"{statistics.median(inc_times) * 1e3:.1f} ms")
    row("consistency_proof generation", f"{statistics.median(con_times) * 1e3:.1f} ms")
    row("verify_inclusion", f"{t_vinc / samples * 1e6:.1f} us", f"{len(proof)} hashes")
    row("verify_consistency", f"{t_vcon / samples * 1e6:.1f} us", f"{len(cproof)} hashes")


def row(label: str, value: str, extra: str = "") -> None:
    print(f"  {label:<36} {value:>10}  {extra:>20}")


if __name__ == "__main__":
    main()
