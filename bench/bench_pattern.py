"""Benchmark: a param's pattern with Python's backtracking ``re`` (before) versus RE2 (now).

Usage: ``python bench/bench_pattern.py [--reps N]``

(a) typical patterns (the README's and common forms) against their 1-3 honest values of up
    to 64 characters: the cost of checking them, old ``re.compile(rf"(?:{p})\\Z").match(v)`` versus
    ``oneoff._pattern.compile_pattern(p).fullmatch(v)``, interleaved, medians in µs;
(b) compiling each pattern once (what loading a manifest pays), old versus new, in µs;
(c) ``(a+)+$`` against n `a`s and a `!`: the old matcher's time doubles with each `a`
    (only small n are run), RE2's stays linear up to n = 4096;
(d) ``import re2`` in a fresh interpreter (what the first manifest with a pattern pays on
    the CLI when the daemon is not running), from ``-X importtime``.
The load average is printed beside the figures (this host's speed varies with load).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from oneoff._pattern import compile_pattern

TYPICAL = [
    ("latest|[0-9]{4}", ["latest", "0042", "2026"]),
    ("[a-z][a-z0-9_-]{0,63}", ["users", "orders_2026", "a" * 60]),
    (r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,63}\.[a-z]{2,24}", ["ops@example.com"]),
    (r"\d{4}-\d{2}-\d{2}", ["2026-12-07"]),
    ("(eu|us|ap)-(north|south|east|west)-[1-3]", ["eu-west-1", "ap-south-3"]),
    (r"[\w.-]{1,64}", ["release-2026.12.07_rc1"]),
]


def median_us(check: Callable[[str], object], values: list[str], reps: int, inner: int) -> float:
    """Median over ``reps`` runs of the time, in µs, to check every value once."""
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            for value in values:
                check(value)
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")

    print("\n(a) checking a row's honest values (1-3) once, µs (median of", args.reps, "runs)")
    for pattern, values in TYPICAL:
        old = re.compile(rf"(?:{pattern})\Z")
        new = compile_pattern(pattern, "bench")
        assert all(old.match(v) for v in values)
        assert all(new.fullmatch(v) for v in values)
        old_us: list[float] = []
        new_us: list[float] = []
        for _ in range(args.reps):  # interleaved: a slow phase hits both sides alike
            old_us.append(median_us(old.match, values, 1, 2000))
            new_us.append(median_us(new.fullmatch, values, 1, 2000))
        o, n = statistics.median(old_us), statistics.median(new_us)
        print(f"  {pattern[:40]:42} old {o:7.2f}  new {n:7.2f}  new/old {n / o:5.2f}")

    print("\n(b) compiling once (a manifest load), µs")
    for pattern, _ in TYPICAL:
        o_list, n_list = [], []
        for _ in range(args.reps):
            re.purge()
            start = time.perf_counter()
            re.compile(rf"(?:{pattern})\Z")
            o_list.append((time.perf_counter() - start) * 1e6)
            re.purge()
            import re2

            re2.purge()
            start = time.perf_counter()
            compile_pattern(pattern, "bench")
            n_list.append((time.perf_counter() - start) * 1e6)
        o, n = statistics.median(o_list), statistics.median(n_list)
        print(f"  {pattern[:40]:42} old {o:8.1f}  new {n:8.1f}")

    print("\n(c) (a+)+$ against 'a' * n + '!', ms")
    old = re.compile(r"(?:(a+)+$)\Z")
    new = compile_pattern("(a+)+$", "bench")
    for n in (16, 18, 20, 22):
        value = "a" * n + "!"
        start = time.perf_counter()
        assert not old.match(value)
        o = (time.perf_counter() - start) * 1e3
        n_ms = median_us(new.fullmatch, [value], 5, 100) / 1e3
        print(f"  n={n:5}  old {o:10.2f}  new {n_ms:8.4f}")
    for n in (256, 4096):
        value = "a" * n + "!"
        n_ms = median_us(new.fullmatch, [value], 5, 100) / 1e3
        print(f"  n={n:5}  old {'(2^n)':>10}  new {n_ms:8.4f}")

    print("\n(d) import re2 in a fresh interpreter, µs (cumulative, median)")
    costs = []
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import oneoff._params, re2"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        line = next(x for x in done.stderr.splitlines() if x.rstrip().endswith("| re2"))
        costs.append(int(line.split("|")[1]))
    print(f"  re2: {statistics.median(costs)}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
