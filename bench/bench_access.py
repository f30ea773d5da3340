"""End-to-end cost of access control: `oneoff run noop` with and without [access].

Usage: python bench/bench_access.py [--runs N]
Three apps, identical but for access: none (zero setup); [access] with 1,000 people and
101 policies, run as the OS user (policy only); the same, signing with a key file (policy +
SSHSIG sign and verify + nonce). Each `oneoff run noop --env development` is a real process;
prints medians and the differences against the 10 ms target.
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

from bench_auth import write_people, write_policies

TARGET_MS = 10.0
BASE = """
[environments.development]

[tasks.noop]
argv = ["python", "-c", "pass"]
"""
ACCESS = """
[access]
signers = "allowed_signers"
policies = "policies"
"""
RUN_NOOP = """
@id("team0-runs-noop")
permit (principal in Oneoff::Group::"team0", action == Oneoff::Action::"run",
        resource == Oneoff::Task::"noop");
@id("os-users-run-noop")
permit (principal, action == Oneoff::Action::"run", resource == Oneoff::Task::"noop")
when { context.environment == "development" };
"""


def make(directory: Path, access: bool) -> Path:
    directory.mkdir()
    (directory / "oneoff.toml").write_text((ACCESS if access else "") + BASE)
    if access:
        write_people(directory, 1000)
        write_policies(directory, 100)
        (directory / "policies" / "p99.cedar").write_text(RUN_NOOP)
    return directory


def timed_ms(command: list[str], app: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=app, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{app.name}: {done.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="a few runs, to check it works")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ONEOFF_SIGNING_KEY", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from bytecode
    run = [sys.executable, "-m", "oneoff", "run", "noop", "--env", "development", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")  # bytecode outside the checkout
        plain = make(root / "plain", access=False)
        guarded = make(root / "guarded", access=True)
        variants = {
            "plain": (run, plain),
            "os-user": (run, guarded),
            "signed": ([*run, "--key", str(guarded / "signer")], guarded),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(args.runs + 2):
            # One run of each variant per round, so drift in machine load hits all alike;
            # the first rounds create the stores and the access cache.
            for name, (command, app) in variants.items():
                elapsed = timed_ms(command, app, env)
                if i >= 2:
                    samples[name].append(elapsed)
    plain_ms = statistics.median(samples["plain"])
    print(
        f"oneoff run noop --env development: {args.runs} rounds of real processes; "
        "[access] with 1,000 people and 101 policies"
    )
    print(f"no [access]                          median {plain_ms:7.1f} ms")
    for name, label in (
        ("os-user", "[access], OS user (policy only)"),
        ("signed", "[access], signed with --key FILE"),
    ):
        ms = statistics.median(samples[name])
        # The median of per-round differences is steadier than a difference of medians.
        extra = statistics.median(
            a - b for a, b in zip(samples[name], samples["plain"], strict=True)
        )
        verdict = "OK" if extra <= TARGET_MS else "OVER TARGET"
        print(
            f"{label:<36} median {ms:7.1f} ms  +{extra:5.1f} ms per run "
            f"({ms / plain_ms:.2f}x; target +{TARGET_MS:g} ms) {verdict}"
        )


if __name__ == "__main__":
    main()
