"""What verifying a release adds to `oneoff run`: same app, with and without a current release.

Usage: python bench/bench_release_verify.py [--files N] [--runs N] [--git] [--signed] [--access]

Generates an app of N small files (default 10,000), then times `oneoff run noop` in two
copies of it: one without any release (development workflow: nothing is verified) and
one with a current release (every run checks the signature, the code tree through the
stat cache, the dependencies through their cache, and the config). Runs interleave so
machine noise hits both alike. Prints medians and their difference; asserts nothing.
With ``--access`` both apps have ``[access]`` (1,000 people, 101 policies, as
bench_access.py): the released one then also reads people and policies once and compares
those bytes in full with the release.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = """
{release}
[environments.development]
config = [{{ dotenv = ".env" }}]
{protection}

[tasks.noop]
argv = ["python", "-c", "pass"]
"""


def oneoff_bin() -> str:
    return shutil.which("oneoff", path=str(Path(sys.executable).parent)) or "oneoff"


def make_app(
    root: Path, n_files: int, release_table: str, protection: str, access: bool = False
) -> None:
    root.mkdir(parents=True)
    manifest = MANIFEST.format(release=release_table, protection=protection)
    if access:
        from bench_access import ACCESS, RUN_NOOP
        from bench_auth import write_people, write_policies

        manifest = ACCESS + manifest
        write_people(root, 1000)
        write_policies(root, 100)
        (root / "policies" / "p99.cedar").write_text(RUN_NOOP)
    (root / "oneoff.toml").write_text(manifest)
    (root / ".env").write_text("DATABASE_URL=sqlite:///var/db.sqlite\nSECRET_KEY=abcdefghijkl\n")
    for i in range(n_files):
        d = root / f"pkg{i % 100:02d}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"module_{i:05d}.py").write_bytes(b"x = %d\n" % i * 20)


def git_init(root: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}  # fmt: skip
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(argv, cwd=root, env=env, check=True)


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv} failed: {done.stderr.decode()}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--git", action="store_true", help="make the apps git checkouts")
    parser.add_argument("--signed", action="store_true", help="sign the release (Ed25519)")
    parser.add_argument("--access", action="store_true", help="both apps with [access]")
    parser.add_argument("--quick", action="store_true", help="a few runs, to check it works")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    # This shell may set PYTHONDONTWRITEBYTECODE: without .pyc files every run would
    # recompile oneoff, which an installed wheel never does.
    import oneoff as package

    compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)
    oneoff = oneoff_bin()
    env = {k: v for k, v in os.environ.items() if k != "ONEOFF_RELEASE_KEY_FILE"}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        release_table, protection, create = "", "", ["release", "create", "--env", "development"]
        if args.signed:
            keys = base / "keys"
            out = subprocess.run(
                [oneoff, "keys", "generate", "--out", str(keys)], capture_output=True, text=True,
                check=True, cwd=tmp, env=env,
            )  # fmt: skip
            line = next(x for x in out.stdout.splitlines() if "trusted_keys" in x)
            release_table = "[release]\n" + line.strip()
            protection = "release = { require_signed = true }"
            create += ["--key", str(keys / "release.key")]
        apps = {"no release": base / "plain", "with release": base / "released"}
        for root in apps.values():
            protected = protection if root.name == "released" else ""
            make_app(root, args.files, release_table, protected, args.access)
            if args.git:
                git_init(root)
        subprocess.run([oneoff, *create], cwd=apps["with release"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        cmd = [oneoff, "run", "noop", "--env", "development", "--quiet"]
        times: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(3):  # fill the stat, dependency and signature caches
            for root in apps.values():
                timed(cmd, root, env)
        for _ in range(args.runs):
            for name, root in apps.items():
                times[name].append(timed(cmd, root, env))
    plain = statistics.median(times["no release"])
    released = statistics.median(times["with release"])
    mode = ("git" if args.git else "walk") + (", signed" if args.signed else ", unsigned")
    mode += ", [access]" if args.access else ""
    print(f"app: {args.files} files ({mode}), {args.runs} runs each, interleaved")
    print(f"oneoff run noop, no release     median {plain:7.1f} ms")
    print(f"oneoff run noop, with release   median {released:7.1f} ms")
    print(f"release verification adds      median {released - plain:7.1f} ms  "
          f"ratio {released / plain:4.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
