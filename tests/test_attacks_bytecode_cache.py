"""Attack: poison oneoff's own bytecode cache through an unverified run.

Python trusts a cached ``.pyc`` whose recorded source mtime and size match the source. An
operator who may run the app's development environment (no release) edits a released
file keeping its size, sets its mtime back, runs a development task (which compiles the
edit into the cache), then restores the file. The tree verifies against the release
again, byte for byte; the verified production run must still execute the released code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from oneoff.testing import make_app, run_cli

MANIFEST = """
[app]
name = "cached"

[release]
trusted_keys = ["{trusted}"]

[environments.development]
config = []

[environments.production]
config = []
release = {{ require_signed = true }}

[tasks.job]
argv = ["python", "-c", "from app.job import WHO; print(WHO)"]
"""
RELEASED = 'WHO = "the released code"\n'
PLANTED = 'WHO = "PLANTED code ran!"\n'
STAMP = 1_700_000_000


def test_a_development_run_cannot_leave_bytecode_for_a_verified_run(
    tmp_path: Path, release_key: tuple[Path, str], cli_env: dict[str, str]
) -> None:
    """Bytecode compiled by an unverified run is never read by a verified one."""
    assert len(PLANTED) == len(RELEASED)
    root = make_app(
        tmp_path / "app",
        MANIFEST.format(trusted=release_key[1]),
        {"app/__init__.py": "", "app/job.py": RELEASED},
    )
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "app"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
        )
    created = run_cli(
        ["release", "create", "--env", "production", "--key", str(release_key[0])],
        cwd=root,
        env=cli_env,
    )
    assert created.exit_code == 0, created.output
    job = root / "app" / "job.py"
    job.write_text(PLANTED)
    os.utime(job, (STAMP, STAMP))
    dev = run_cli(["run", "job", "--env", "development"], cwd=root, env=cli_env)
    assert dev.exit_code == 0, dev.output
    assert "PLANTED" in dev.stdout  # compiled into a cache by the unverified run
    job.write_text(RELEASED)
    os.utime(job, (STAMP, STAMP))
    verified = run_cli(
        ["release", "verify", "--env", "production", "--no-cache"], cwd=root, env=cli_env
    )
    assert verified.exit_code == 0, verified.output
    for _ in range(2):
        done = run_cli(["run", "job", "--env", "production"], cwd=root, env=cli_env)
        assert done.exit_code == 0, done.output
        assert "the released code" in done.stdout
        assert "PLANTED" not in done.stdout


def test_release_caches_are_separate_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    """Each verified release gets its own cache, unverified runs another; making a fourth
    release cache removes the least recently used one, never the unverified one."""
    from oneoff._bytecode import KEEP_RELEASES, bytecode_env

    app = tmp_path / "app"
    app.mkdir()
    unverified = Path(bytecode_env(app)["PYTHONPYCACHEPREFIX"])
    made = []
    for i in range(KEEP_RELEASES + 2):
        prefix = Path(bytecode_env(app, f"rel_{i:08x}")["PYTHONPYCACHEPREFIX"])
        assert prefix not in made
        assert prefix != unverified
        os.utime(prefix, ns=(i * 10**9, i * 10**9))  # a distinct last use each
        made.append(prefix)
    assert unverified.is_dir()
    assert [p.is_dir() for p in made] == [False, False, True, True, True]
    assert Path(bytecode_env(app, "rel_00000004")["PYTHONPYCACHEPREFIX"]) == made[-1]
