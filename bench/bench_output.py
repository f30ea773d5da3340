"""Benchmark: oneoff's own output path, with nothing to redact versus 100 secrets to redact.

Usage: ``python bench/bench_output.py [--quick] [--reps N] [--size MB] [--skip-micro]``

Issues #4 and #12's target: "redaction throughput >= 50% of an unredacted pass-through of
the same output with 100 secrets in all encodings" (#12 added more URL and JSON forms and
base64 wrapped in lines, which bench_redact.make_log plants too).

Both sides here are real ``oneoff run`` processes (the installed console script, bytecode
compiled first) on a generated app whose task is ``cat output.log``: ~64 MB of log-like lines
from a file in the page cache, the oneoff process's stdout going to /dev/null. Everything
oneoff does with output is on both sides: the runner's read loop, the redactor per stream, the
terminal write and flush of every chunk, capture of the first ``[audit] output_cap`` bytes
(default 16 MiB) compressed in SQLite, the output digest, and the run's fixed cost (plan, audit
events, checkpoint).

(a) pass-through: environment ``plain`` has no secrets, so nothing is redacted.
(b) redaction: environment ``secret`` loads 100 secrets (three alphabets, 12-48 characters)
    from its dotenv config; the same output carries every form ``forms_of`` lists, planted
    in some lines (a random form each).

Runs alternate a/b after one untimed warm-up of each; medians in MB/s (wall clock of the
whole ``oneoff run`` process) and their ratio are printed, with the CPU time of the oneoff
process and its task (``wait4``) per MB, and the fixed cost of a run over an empty file.
Before timing, one run of each is captured and checked: (a) byte-identical to the file,
(b) identical to ``Redactor.redact`` of it, no form left, one marker per planted form.
Then bench_redact.py's micro comparison (the bare ``_proc`` loop, with and without
``Redactor.feed``) runs too, unless ``--skip-micro``, so both figures print together.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_redact import make_log, make_secrets

from oneoff._dotenv import format_dotenv
from oneoff._redact import Redactor, forms_of

MANIFEST = """
[environments.plain]

[environments.secret]
config = [{{ dotenv = "secrets.env" }}]
secrets = [{names}]

[tasks.flood]
argv = ["cat", "output.log"]

[tasks.empty]
argv = ["cat", "empty.log"]
"""


def oneoff_command() -> list[str]:
    script = shutil.which("oneoff", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "oneoff"]


def run(app: Path, env_name: str, task: str, stdout: int) -> tuple[float, float]:
    """One ``oneoff run TASK``: wall seconds and CPU seconds (oneoff and its task)."""
    argv = [*oneoff_command(), "run", task, "--env", env_name, "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=app, stdout=stdout, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"oneoff run --env {env_name} failed ({proc.returncode}): {err.decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime


def make_app(root: Path, secrets: dict[str, str], data: bytes) -> None:
    root.mkdir()
    (root / "output.log").write_bytes(data)
    (root / "empty.log").write_bytes(b"")
    (root / "secrets.env").write_text(format_dotenv(secrets))
    names = ", ".join(f'"{name}"' for name in secrets)
    (root / "oneoff.toml").write_text(MANIFEST.format(names=names))


def check(app: Path, data: bytes, secrets: dict[str, str], planted: int) -> None:
    """The captured output of one run per side is exactly what it must be."""
    out_path = app.parent / "captured"
    for env_name in ("plain", "secret"):
        with open(out_path, "wb") as sink:
            run(app, env_name, "flood", sink.fileno())
        out = out_path.read_bytes()
        if env_name == "plain":
            assert out == data, "pass-through changed the output"
            continue
        assert out == Redactor(secrets).redact(data), "oneoff's output differs from redact()"
        import ahocorasick_rs

        forms = list({form for value in secrets.values() for form in forms_of(value)})
        left = ahocorasick_rs.BytesAhoCorasick(forms).find_matches_as_indexes(out)
        assert not left, f"{len(left)} forms left in the output"
        assert out.count(b"[REDACTED:") == planted
    out_path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MB and 3 repetitions")
    parser.add_argument("--size", type=int, default=None, help="output size in MB (default 64)")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per side (default 7)")
    parser.add_argument("--skip-micro", action="store_true", help="skip bench_redact.py's runs")
    args = parser.parse_args()
    size = (args.size or (16 if args.quick else 64)) << 20
    reps = args.reps or (3 if args.quick else 7)

    import compileall

    import oneoff as package

    # An editable checkout under PYTHONDONTWRITEBYTECODE has no bytecode: every run would
    # compile oneoff first, a cost an installed wheel does not have.
    compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)

    rng = random.Random(20240501)
    secrets = make_secrets(rng)
    data, planted = make_log(rng, size, secrets)
    mb = len(data) / 1e6
    with tempfile.TemporaryDirectory(prefix="bench_output_") as tmp:
        app = Path(tmp) / "app"
        make_app(app, secrets, data)
        check(app, data, secrets, planted)
        fixed = statistics.median(
            run(app, name, "empty", subprocess.DEVNULL)[0]
            for name in ("plain", "secret", "plain", "secret", "plain", "secret")
        )
        print(
            f"{mb:.1f} MB of output per run, 100 secrets ({planted} forms planted); `oneoff run` "
            f"of an empty output {fixed * 1e3:.0f} ms; {os.cpu_count()} CPUs, load "
            f"{os.getloadavg()[0]:.2f}; Python {sys.version.split()[0]}"
        )
        run(app, "plain", "flood", subprocess.DEVNULL)  # warm-up
        run(app, "secret", "flood", subprocess.DEVNULL)
        sides: dict[str, list[tuple[float, float]]] = {"plain": [], "secret": []}
        for _ in range(reps):
            for name in sides:
                sides[name].append(run(app, name, "flood", subprocess.DEVNULL))
    rates = {}
    for name, label in (("plain", "(a) pass-through, no secrets"), ("secret", "(b) 100 secrets")):
        runs = sides[name]
        rates[name] = statistics.median(mb / wall for wall, _ in runs)
        cpu = statistics.median(cpu for _, cpu in runs) * 1e3 / mb
        print(
            f"{label:<30} median {rates[name]:6.1f} MB/s  runs "
            f"{[round(mb / wall) for wall, _ in runs]}  CPU {cpu:.2f} ms/MB"
        )
    print(f"oneoff run: ratio b/a = {rates['secret'] / rates['plain']:.2f} (target >= 0.50)")
    if not args.skip_micro:
        print("\nbench_redact.py (bare _proc loop to /dev/null, with and without Redactor.feed):")
        sys.stdout.flush()
        micro = [sys.executable, str(Path(__file__).with_name("bench_redact.py"))]
        micro += ["--size", str(size >> 20), "--reps", str(reps)]
        subprocess.run(micro, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
