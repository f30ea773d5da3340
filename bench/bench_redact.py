"""Benchmark: a task's output streamed through Redactor.feed versus plain pass-through.

Usage: ``python bench/bench_redact.py [--quick] [--reps N] [--size MB]``

Both sides run the runner's own streaming loop, ``oneoff._proc.run_process``: the child
(``cat`` of a pre-generated log file in the page cache, so the writer is as fast as it gets and
the runner's side is what is measured) writes into a pipe, the runner polls it and reads chunks
of at most 64 KiB, and ``on_output`` writes each chunk to the sink and flushes it, as
``oneoff._pipeline`` does. The sink is /dev/null.

(a) pass-through: ``sink.write(chunk)``.
(b) redaction: ``sink.write(redactors[fd].feed_view(chunk))`` (what OutputRecorder calls: no
    copy when nothing is redacted) with one Redactor per output fd, the second a ``fresh()``
    copy of the first as ``build_redactors`` makes them, built inside the timed region (the
    runner builds them per run), and their ``flush()`` at the end.

The output is ~64 MB of log-like lines; 100 secrets (three alphabets, 12-48 characters) give
every form ``forms_of`` lists, and some lines carry one of them, in a random form, or a
block of base64 wrapped at 76 columns with a secret inside (most cross a line break). Runs
alternate a/b after one untimed warm-up of each; medians in MB/s (wall clock) and their ratio are
printed, with the runner process's median CPU time per MB, which other load on the machine
disturbs less than wall-clock rates.
Before timing, one streamed run is captured and checked: identical to ``Redactor.redact`` of
the whole output, no form of any secret left in it, one marker per planted form.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from oneoff._proc import run_process
from oneoff._redact import Redactor, forms_of

Sink = Callable[[bytes | memoryview], object]


def make_secrets(rng: random.Random) -> dict[str, str]:
    alphabets = [string.ascii_letters + string.digits, string.printable[:94], "abcdef0123456789"]
    secrets = {}
    for i in range(100):
        alphabet = alphabets[i % len(alphabets)]
        length = rng.randrange(12, 49)
        secrets[f"SECRET_{i:03d}"] = "".join(rng.choice(alphabet) for _ in range(length))
    return secrets


def make_log(rng: random.Random, size: int, secrets: dict[str, str]) -> tuple[bytes, int]:
    words = ["the", "job", "worker", "request", "user", "status", "ok", "error", "retry"]
    words += ["connect", "database", "query", "rows", "updated", "took", "cache", "timeout"]
    levels = ["INFO", "DEBUG", "WARN", "ERROR"]
    values = list(secrets.values())
    lines: list[bytes] = []
    total = planted = 0
    while total < size:
        line = (
            f"2024-05-01T12:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
            f"{rng.randrange(1000):03d}Z {rng.choice(levels)} worker[{rng.randrange(99999)}] "
            f"{' '.join(rng.choices(words, k=rng.randrange(4, 12)))} "
            f"request_id={rng.getrandbits(64):016x} "
            f"payload={base64.b64encode(rng.randbytes(rng.randrange(6, 30))).decode()}\n"
        ).encode()
        if rng.random() < 0.0005:
            form = rng.choice(forms_of(rng.choice(values)))
            line = line[:-1] + b" leaked=" + form + b"\n"
            planted += 1
        elif rng.random() < 0.0002:  # a secret inside wrapped base64 (a MIME part, a PEM body)
            raw = rng.choice(values).encode()
            wrapped = base64.encodebytes(rng.randbytes(rng.randrange(40, 80)) + raw + b"!")
            line += b"attachment:\n" + wrapped
            planted += 1
        lines.append(line)
        total += len(line)
    return b"".join(lines), planted


def stream(
    path: str, secrets: dict[str, str] | None, write: Sink, flush: Callable[[], object]
) -> int:
    """One run of the task ``cat path`` through run_process; returns the bytes read."""
    total = 0
    if secrets is None:

        def on_output(fd: int, chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)
            write(chunk)
            flush()

    else:
        first = Redactor(secrets)
        redactors = {1: first, 2: first.fresh()}

        def on_output(fd: int, chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)
            write(redactors[fd].feed_view(chunk))
            flush()

    cat = shutil.which("cat") or "/bin/cat"
    result = run_process(
        [cat, path],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        cwd=Path(path).parent,
        timeout=None,
        on_output=on_output,
    )
    assert result.exit_code == 0, result
    if secrets is not None:
        for redactor in redactors.values():
            write(redactor.flush())
        flush()
    return total


def timed(path: str, secrets: dict[str, str] | None) -> tuple[float, float]:
    """MB/s of one run (wall clock) and the runner's own CPU time per MB, in ms."""
    with open(os.devnull, "wb") as sink:
        cpu = time.process_time()
        start = time.perf_counter()
        total = stream(path, secrets, sink.write, sink.flush)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return total / elapsed / 1e6, cpu * 1e3 / (total / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 MB and 3 repetitions")
    parser.add_argument("--size", type=int, default=None, help="output size in MB (default 64)")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per side (default 7)")
    args = parser.parse_args()
    size = (args.size or (8 if args.quick else 64)) << 20
    reps = args.reps or (3 if args.quick else 7)
    rng = random.Random(20240501)
    secrets = make_secrets(rng)
    data, planted = make_log(rng, size, secrets)
    all_forms = {form for value in secrets.values() for form in forms_of(value)}

    t0 = time.perf_counter()
    redactor = Redactor(secrets)
    build = time.perf_counter() - t0
    expected = redactor.redact(data)

    with tempfile.TemporaryDirectory(prefix="bench_redact_") as tmp:
        path = os.path.join(tmp, "task-output.log")
        with open(path, "wb") as f:
            f.write(data)

        # Check the streamed result before timing anything.
        captured: list[bytes | memoryview] = []
        assert stream(path, secrets, captured.append, lambda: None) == len(data)
        out = b"".join(captured)
        assert out == expected, "streamed output differs from Redactor.redact"
        # An independent automaton over the whole forms: nothing may be left.
        import ahocorasick_rs

        leftovers = ahocorasick_rs.BytesAhoCorasick(list(all_forms)).find_matches_as_indexes(out)
        assert not leftovers, f"{len(leftovers)} forms left in the output"
        assert out.count(b"[REDACTED:") == planted
        print(
            f"{len(data) / 1e6:.1f} MB of output, 100 secrets, {len(all_forms)} forms, "
            f"{planted} planted and redacted; Redactor build {build * 1e3:.1f} ms; "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; Python {sys.version.split()[0]}"
        )

        timed(path, None)  # warm-up
        timed(path, secrets)
        plain: list[tuple[float, float]] = []
        redacted: list[tuple[float, float]] = []
        for _ in range(reps):
            plain.append(timed(path, None))
            redacted.append(timed(path, secrets))
    for label, runs in (("(a) pass-through ", plain), ("(b) Redactor.feed", redacted)):
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(
            f"{label} median {rate:7.1f} MB/s  runs {[round(r) for r, _ in runs]}"
            f"  runner CPU {cpu:.2f} ms/MB"
        )
    a = statistics.median(r for r, _ in plain)
    b = statistics.median(r for r, _ in redacted)
    # Issue #4's >= 0.50 target is for oneoff's whole output path (bench_output.py); this
    # bare loop, writing to /dev/null at several hundred MB/s, shows the redactor's own cost.
    print(f"ratio b/a = {b / a:.2f} (the redactor alone; the target is bench_output.py's)")


if __name__ == "__main__":
    main()
