"""Attack: the operator's PYTHONPATH must not decide which dependencies the release check sees.

A task never gets the operator's ``PYTHON*`` variables, so the dependency check must look
at ``sys.path`` as the task will. Before, the probe inherited them: an operator who had
upgraded a package in the app's virtualenv put the released version's metadata on
``PYTHONPATH``, the check saw the released version, and the task ran the other one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from oneoff.testing import make_app, run_cli

MANIFEST = """
[app]
name = "deps"
{python}

[release]
ignore = ["venv/"]
trusted_keys = ["{trusted}"]

[environments.production]
config = []
release = {{ require_signed = true }}

[tasks.job]
argv = ["python", "-c", "import fakepkg; print(fakepkg.WHO)"]
"""


def install_fake(site: Path, version: str, who: str) -> Path:
    """A distribution ``fakepkg`` at ``version`` in ``site``; returns its dist-info."""
    (site / "fakepkg").mkdir(exist_ok=True)
    (site / "fakepkg" / "__init__.py").write_text(f"WHO = {who!r}\n")
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    (info / "RECORD").write_text(
        f"fakepkg/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
    )
    return info


def git_app(root: Path) -> None:
    for argv in (["init", "-q"], ["add", "oneoff.toml"], ["commit", "-qm", "app"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
        )


def release_app(root: Path, key: Path, cli_env: dict[str, str]) -> dict[str, str]:
    """Commit the app and release production with ``key``; the operator's environment
    without PYTHON* variables (the tests add their own)."""
    git_app(root)
    env = {k: v for k, v in cli_env.items() if not k.startswith("PYTHON")}
    created = run_cli(["release", "create", "--env", "production", "--key", str(key)],
                      cwd=root, env=env)  # fmt: skip
    assert created.exit_code == 0, created.output
    return env


def test_pythonpath_cannot_hide_an_upgraded_dependency_of_the_apps_python(
    tmp_path: Path, release_key: tuple[Path, str], cli_env: dict[str, str]
) -> None:
    """A package upgraded in the app's venv refuses the run even when the operator's
    PYTHONPATH shows the released version's metadata first."""
    root = tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    site = next((root / "venv" / "lib").glob("python3*/site-packages"))
    released = install_fake(site, "1.0", "the released fakepkg")
    make_app(root, MANIFEST.format(python='python = "venv/bin/python"', trusted=release_key[1]))
    env = release_app(root, release_key[0], cli_env)
    ran = run_cli(["run", "job", "--env", "production"], cwd=root, env=env)
    assert ran.exit_code == 0, ran.output
    assert "the released fakepkg" in ran.stdout
    # The attacker upgrades the package, keeping the old metadata where PYTHONPATH finds it.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    released.rename(shadow / released.name)
    install_fake(site, "2.0", "PLANTED code ran")
    for args in (["run", "job", "--env", "production"], ["release", "verify", "--no-cache"]):
        done = run_cli(args, cwd=root, env={**env, "PYTHONPATH": str(shadow)})
        assert done.exit_code == 6, done.output
        assert "fakepkg 1.0 -> 2.0" in done.stderr
        assert "PLANTED" not in done.stdout


def test_the_operators_pythonpath_adds_no_dependency_the_task_cannot_see(
    tmp_path: Path, release_key: tuple[Path, str], cli_env: dict[str, str]
) -> None:
    """oneoff's own interpreter as the app's (no [app] python): a distribution only on the
    operator's PYTHONPATH is not one of the task's, so it is no drift either."""
    root = make_app(tmp_path / "app", MANIFEST.format(python="", trusted=release_key[1]))
    env = release_app(root, release_key[0], cli_env)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    install_fake(shadow, "1.0", "only on the operator's path")
    for cache in ([], ["--no-cache"]):
        done = run_cli(
            ["release", "verify", *cache], cwd=root, env={**env, "PYTHONPATH": str(shadow)}
        )
        assert done.exit_code == 0, done.output
        assert "verified" in done.stdout
