"""Benchmark the release code snapshot: cold hashing vs sha256sum, warm verify, peak memory.

Usage: python bench/bench_release_tree.py [--quick]

Prints medians and ratios; asserts nothing. Targets: cold throughput >= 70% of a single
``sha256sum`` over the same files, warm verify (stat cache) <= 30 ms for 10,000 files,
peak RSS independent of file size.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import oneoff
from oneoff._release import lstats
from oneoff._release.tree import StatCache, snapshot, verify

MIB = 1 << 20


def make_tree(root: Path, n_files: int, total_bytes: int, seed: int = 1) -> list[Path]:
    """Write n_files of log-normally varied sizes summing to about total_bytes."""
    rng = random.Random(seed)
    weights = [rng.lognormvariate(0, 1.5) for _ in range(n_files)]
    scale = total_bytes / sum(weights)
    blob = os.urandom(16 * MIB)
    files = []
    for i, w in enumerate(weights):
        d = root / f"pkg{i % 100:02d}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = max(1, int(w * scale))
        start = rng.randrange(0, len(blob) - min(size, len(blob)) + 1)
        path = d / f"module_{i:05d}.py"
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = blob[start : start + min(left, len(blob) - start)]
                f.write(chunk)
                left -= len(chunk)
                start = 0
        files.append(path)
    return files


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def find_stats(root: Path) -> None:
    """The native floor for a warm check: GNU find lstat()s every entry and prints the
    fields the stat cache compares (size, mtime, ctime, inode, mode)."""
    subprocess.run(
        ["find", str(root), "-printf", "%s %T@ %C@ %i %m\\n"],
        stdout=subprocess.DEVNULL,
        check=True,
    )


def sha256sum(files: list[Path], parallel: int) -> None:
    listing = b"\0".join(os.fsencode(f) for f in files) + b"\0"
    argv = ["xargs", "-0", "-n", "2000"]
    if parallel > 1:
        argv += ["-P", str(parallel)]
    subprocess.run([*argv, "sha256sum"], input=listing, stdout=subprocess.DEVNULL, check=True)


PEAK_RSS_CHILD = """
import resource, sys
from oneoff._release.tree import snapshot
snap = snapshot(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(size: int) -> int:
    """Peak RSS of a fresh interpreter that snapshots a directory holding one file of size."""
    with tempfile.TemporaryDirectory() as tmp:
        # A sparse file reads as zeros at memory speed without needing disk space; what is
        # measured is whether memory grows with the file, not disk throughput.
        with open(os.path.join(tmp, "big.bin"), "wb") as f:
            f.truncate(size)
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_CHILD, tmp], capture_output=True, check=True
        )
        return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller tree, fewer runs")
    args = parser.parse_args()
    # Bytecode for the child interpreters below (PYTHONDONTWRITEBYTECODE may be set).
    compileall.compile_dir(str(Path(oneoff.__file__).parent), quiet=1)
    n_files, total, runs, big = (
        (2_000, 20 * MIB, 3, 200 * MIB) if args.quick else (10_000, 100 * MIB, 7, 1024 * MIB)
    )
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        files = make_tree(root, n_files, total)
        total_bytes = sum(f.stat().st_size for f in files)
        print(f"tree: {len(files)} files, {total_bytes / MIB:.1f} MiB, {cpus} CPUs")

        # Warm the page cache with both tools so neither pays for disk reads.
        snapshot(root)
        sha256sum(files, 1)

        t_ours = median_time(lambda: snapshot(root), runs)
        t_sum = median_time(lambda: sha256sum(files, 1), runs)
        t_sum_p = median_time(lambda: sha256sum(files, cpus), runs)
        mb = total_bytes / MIB
        print(f"cold snapshot          median {t_ours * 1000:8.1f} ms  {mb / t_ours:7.1f} MiB/s")
        print(f"sha256sum (1 process)  median {t_sum * 1000:8.1f} ms  {mb / t_sum:7.1f} MiB/s")
        print(
            f"sha256sum (-P {cpus})       median {t_sum_p * 1000:8.1f} ms  "
            f"{mb / t_sum_p:7.1f} MiB/s"
        )
        print(f"ratio ours/sha256sum throughput: {t_sum / t_ours:.2f} (target >= 0.70)")
        print(f"ratio ours/sha256sum -P{cpus} throughput: {t_sum_p / t_ours:.2f}")

        cache = StatCache(root / ".oneoff" / "statcache")
        expected = snapshot(root, cache=cache)
        # The first cached run leaves racy entries out; one more makes the cache complete.
        snapshot(root, cache=cache)
        # Interleaved: the two-process check (the default for large trees) and the same
        # check in one process (what a process with other threads gets), so host noise
        # hits both alike.
        split_min = lstats.SPLIT_MIN
        warm, one, native = [], [], []
        for _ in range(max(runs, 15)):
            warm.append(median_time(lambda: verify(root, expected, cache=cache), 1))
            lstats.SPLIT_MIN = 1 << 62
            try:
                one.append(median_time(lambda: verify(root, expected, cache=cache), 1))
            finally:
                lstats.SPLIT_MIN = split_min
            native.append(median_time(lambda: find_stats(root), 1))
        t_warm, t_one = statistics.median(warm), statistics.median(one)
        t_native = statistics.median(native)
        assert verify(root, expected, cache=cache) == []
        cache_size = (root / ".oneoff" / "statcache").stat().st_size
        t_load = median_time(cache.load, max(runs, 15))
        print(f"warm verify (stat cache) median {t_warm * 1000:6.1f} ms (target <= 30 ms)")
        print(
            f"warm verify, one process    median {t_one * 1000:6.1f} ms  "
            f"(two processes take {t_warm / t_one:.2f}x of that)"
        )
        print(
            f"find -printf of the same fields median {t_native * 1000:6.1f} ms  "
            f"(warm verify takes {t_warm / t_native:.2f}x of that)"
        )
        print(
            f"stat cache load: {len(cache)} entries, {cache_size / 1024:.0f} KiB, "
            f"median {t_load * 1000:.2f} ms"
        )

    small, large = 10 * MIB, big
    rss_small = peak_rss_kib(small)
    rss_large = peak_rss_kib(large)
    print(
        f"peak RSS hashing {small // MIB} MiB file: {rss_small / 1024:.1f} MiB; "
        f"{large // MIB} MiB file: {rss_large / 1024:.1f} MiB; ratio {rss_large / rss_small:.2f}"
    )


if __name__ == "__main__":
    main()
