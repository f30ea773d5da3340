"""What a run's watchdog (oneoff._watchdog) adds to a run (budget: <= 2 ms median).

Usage: python bench/bench_watchdog.py [--runs N]

Interleaved in this one process (it has imported oneoff, as a runner has):

- pair: ``Watchdog.start(tree)`` then ``disarm()`` alone (pipe, fork, the "done" byte);
- run_process of ``true`` in the run's tree, without then with the watchdog.

Reaping the disarmed watchdog is left out of both: a run does it once it is recorded (a
daemon runner after its reply), when the watchdog has long exited.

Every run gets its own RunTree (a cgroup where this machine allows), removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from oneoff import _watchdog
from oneoff._contain import RunTree
from oneoff._proc import run_process


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    real_start = _watchdog.Watchdog.start
    times: dict[str, list[float]] = {"pair": [], "without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            tree = RunTree.new(f"rbench{os.getpid()}x{i}")
            start = time.perf_counter()
            dog = real_start(tree)
            assert dog is not None
            dog.disarm()
            times["pair"].append((time.perf_counter() - start) * 1000)
            _watchdog.reap()
            for side in ("without", "with"):
                _watchdog.Watchdog.start = real_start if side == "with" else (lambda t: None)  # type: ignore[method-assign,assignment]
                start = time.perf_counter()
                run_process(
                    ["true"], env={"PATH": os.defpath}, cwd=Path(tmp), timeout=60,
                    on_output=lambda fd, chunk: None, tree=tree,
                )  # fmt: skip
                times[side].append((time.perf_counter() - start) * 1000)
                _watchdog.reap()
            tree.stop(marks=False)
    _watchdog.Watchdog.start = real_start  # type: ignore[method-assign]
    for name, label in (
        ("pair", "watchdog start + disarm"),
        ("without", "run_process(true), no watchdog"),
        ("with", "run_process(true), watchdog"),
    ):
        print(f"{label:<32} median {statistics.median(times[name]):6.2f} ms  (n={args.runs})")
    added = statistics.median(times["with"]) - statistics.median(times["without"])
    print(f"added by the watchdog            median {added:6.2f} ms  budget <= 2 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
