"""Attacks: a symlink in the release must not carry code the release does not contain.

A release records a link by its target text. The attacker cannot change what the release
contains but can write where a link leads: a file outside the app (``/etc``, a shared
directory), an ignored directory inside it, or the old location of an app that moved.
Each must refuse ``release create`` or the run (exit 6), before the task starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from _access_kit import events
from oneoff.testing import CliResult, invoke, make_app

MANIFEST = """
[app]
name = "linked"

[release]
trusted_keys = ["{trusted}"]
ignore = ["var/"]

[environments.production]
config = [{{ dotenv = ".env.production" }}]

[tasks.job]
argv = ["python", "-c", "import helper; print(helper.WHO)"]
"""
GOOD = "WHO = 'the released helper'\n"
EVIL = "WHO = 'PLANTED code ran'\n"


def make_linked_app(tmp_path: Path, release_key: tuple[Path, str], target: str) -> Path:
    """A git checkout whose tracked ``helper.py`` is a symlink to ``target``."""
    root = make_app(
        tmp_path / "app",
        MANIFEST.format(trusted=release_key[1]),
        {".env.production": "DATABASE_URL=sqlite:///x\n", "lib/real_helper.py": GOOD},
    )
    os.symlink(target, root / "helper.py")
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "app"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
        )
    return root


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    monkeypatch.chdir(root)
    return invoke(list(args))


def create(root: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> CliResult:
    return cli(root, monkeypatch, "release", "create", "--env", "production", "--key", str(key))


def test_a_link_to_a_released_file_or_directory_is_released_and_runs(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links that stay inside what the release holds are fine, cold and warm."""
    root = make_linked_app(tmp_path, release_key, "lib/real_helper.py")
    os.symlink("lib", root / "lib2")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    created = create(root, release_key[0], monkeypatch)
    assert created.exit_code == 0, created.stderr
    for _ in range(2):  # the second run takes the stat cache's warm path
        done = cli(root, monkeypatch, "run", "job", "--env", "production")
        assert done.exit_code == 0, done.stderr
        assert "the released helper" in done.stdout


@pytest.mark.parametrize("where", ["outside the app", "an ignored directory", "nowhere"])
def test_release_create_refuses_a_link_leading_out_of_the_release(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A link to a file outside the app, to an ignored file or to nothing is not released."""
    outside = tmp_path / "shared" / "helper.py"
    outside.parent.mkdir()
    outside.write_text(GOOD)
    target = {
        "outside the app": str(outside),
        "an ignored directory": "var/helper.py",
        "nowhere": "lib/missing.py",
    }[where]
    root = make_linked_app(tmp_path, release_key, target)
    (root / "var").mkdir()
    (root / "var" / "helper.py").write_text(GOOD)
    created = create(root, release_key[0], monkeypatch)
    assert created.exit_code == 6, created.output
    assert "symlink leads outside what the release contains: helper.py" in created.stderr
    refused = events(root, "release.refused")
    assert refused
    assert "helper.py" in refused[-1].payload["reason"]
    assert events(root, "release.created") == []


def test_a_released_absolute_link_that_leaves_a_moved_app_refuses_the_run(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An absolute link made inside the app leads outside once the app moves: whoever
    writes the old location would run code there, so every run refuses, cold or warm."""
    built = tmp_path / "app"
    root = make_linked_app(tmp_path, release_key, str(built / "lib" / "real_helper.py"))
    assert create(root, release_key[0], monkeypatch).exit_code == 0
    ran = cli(root, monkeypatch, "run", "job", "--env", "production")
    assert ran.exit_code == 0, ran.stderr
    monkeypatch.chdir(tmp_path)
    deployed = tmp_path / "deployed"
    shutil.move(built, deployed)
    (built / "lib").mkdir(parents=True)
    (built / "lib" / "real_helper.py").write_text(EVIL)  # the attacker's, at the old path
    for _ in range(2):
        done = cli(deployed, monkeypatch, "run", "job", "--env", "production")
        assert done.exit_code == 6, done.output
        assert "PLANTED" not in done.stdout
        assert "symlink leads outside what the release contains: helper.py" in done.stderr
    failed = events(deployed, "release.verify_failed")
    assert failed
    assert "helper.py" in failed[-1].payload["error"]
    assert len(events(deployed, "run.started")) == 1  # only the run before the move


def test_the_apps_own_virtualenv_links_are_left_to_the_dependency_check(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside git with its virtualenv in the tree, ``venv/bin/python`` leads to the
    system's interpreter: the dependency check owns it, so it does not refuse the release."""
    import sys

    root = make_app(
        tmp_path / "app",
        MANIFEST.format(trusted=release_key[1]).replace(
            '[app]\nname = "linked"', '[app]\nname = "linked"\npython = "venv/bin/python"'
        ),
        {".env.production": "DATABASE_URL=sqlite:///x\n", "helper.py": GOOD},
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    assert (root / "venv" / "bin" / "python").is_symlink()
    created = create(root, release_key[0], monkeypatch)
    assert created.exit_code == 0, created.output
    done = cli(root, monkeypatch, "run", "job", "--env", "production")
    assert done.exit_code == 0, done.output
    assert "the released helper" in done.stdout
