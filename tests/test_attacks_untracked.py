"""Attacks: importable files that are not part of the release must not run in a verified run.

The attacker can write into the app tree (a group-writable checkout, a git-ignored
directory on a shared bastion) but cannot change what the release contains. Every
variant here must refuse the run (exit 6) before the task starts, name the file, and
leave a ``release.verify_failed`` audit event.
"""

from __future__ import annotations

import py_compile
import subprocess
from pathlib import Path
from typing import Any

import pytest

from _access_kit import events, release
from oneoff.testing import CliResult, invoke, make_app

MANIFEST = """
[release]
trusted_keys = ["{trusted}"]

[environments.production]
config = [{{ dotenv = ".env.production" }}]

[tasks.job]
argv = ["python", "-c", "import json, job; print(json.dumps('released json'))"]
"""
EVIL = "print('PLANTED code ran')\n"


def released_app(tmp_path: Path, release_key: tuple[Path, str], *, git: bool) -> Path:
    """A production app with a signed current release, optionally a git checkout."""
    root = make_app(
        tmp_path / "app",
        MANIFEST.format(trusted=release_key[1]),
        {
            ".env.production": "DATABASE_URL=sqlite:///x\n",
            "job.py": "print('the released job')\n",
            ".gitignore": "local_*.py\n",
        },
    )
    if git:
        for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "app"]):
            subprocess.run(
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
            )
    release(root, "production", release_key[0])
    return root


def run_job(root: Path, monkeypatch: pytest.MonkeyPatch) -> CliResult:
    monkeypatch.chdir(root)
    return invoke(["run", "job", "--env", "production"])


def assert_refused(root: Path, done: CliResult, planted: str, ran_before: int = 0) -> None:
    assert done.exit_code == 6, done.stderr
    assert planted in done.stderr
    assert "PLANTED" not in done.stdout
    failed: list[Any] = events(root, "release.verify_failed")
    assert failed, "no release.verify_failed event"
    assert planted in failed[-1].payload["error"]
    assert failed[-1].payload["drift"] is True
    assert len(events(root, "run.started")) == ran_before


def plant_pyc(path: Path) -> None:
    """A sourceless ``.pyc`` at ``path``, compiled from code that announces itself."""
    source = path.parent / "planted_source.txt"
    source.write_text(EVIL)
    py_compile.compile(str(source), cfile=str(path), doraise=True)
    source.unlink()


def test_the_unplanted_app_runs(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the released app itself, with __pycache__ and a non-identifier directory, runs."""
    root = released_app(tmp_path, release_key, git=True)
    (root / "__pycache__").mkdir()
    plant_pyc(root / "__pycache__" / "json.cpython-311.pyc")
    (root / ".tox").mkdir()
    (root / ".tox" / "json.py").write_text(EVIL)
    done = run_job(root, monkeypatch)
    assert done.exit_code == 0, done.stderr
    assert "released json" in done.stdout


def test_standalone_pyc_shadowing_a_module_is_refused(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sourceless ``json.pyc`` in the app root (outside ``__pycache__``) refuses the run."""
    root = released_app(tmp_path, release_key, git=False)
    plant_pyc(root / "json.pyc")
    assert_refused(root, run_job(root, monkeypatch), "json.pyc")


def test_standalone_pyc_in_a_package_is_refused_in_git_mode(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sourceless ``.pyc`` in a subdirectory of a git checkout refuses the run."""
    root = released_app(tmp_path, release_key, git=True)
    (root / "lib").mkdir()
    plant_pyc(root / "lib" / "helpers.pyc")
    assert_refused(root, run_job(root, monkeypatch), "lib/helpers.pyc")


def test_untracked_module_shadowing_the_stdlib_is_refused(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untracked ``json.py`` in a git checkout's root refuses the run."""
    root = released_app(tmp_path, release_key, git=True)
    (root / "json.py").write_text(EVIL)
    assert_refused(root, run_job(root, monkeypatch), "json.py")


def test_git_ignored_module_is_refused(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git-ignored importable module (``local_settings.py``) refuses the run."""
    root = released_app(tmp_path, release_key, git=True)
    (root / "local_settings.py").write_text(EVIL)
    assert_refused(root, run_job(root, monkeypatch), "local_settings.py")


def test_untracked_extension_module_is_refused(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untracked extension module (``.so``), which wins over ``.py``, refuses the run."""
    root = released_app(tmp_path, release_key, git=True)
    (root / "job.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert_refused(root, run_job(root, monkeypatch), "job.cpython-311-x86_64-linux-gnu.so")


def test_release_verify_names_the_untracked_module(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``oneoff release verify`` reports the planted module too, warm cache or not."""
    root = released_app(tmp_path, release_key, git=True)
    monkeypatch.chdir(root)
    assert invoke(["release", "verify", "--env", "production"]).exit_code == 0
    (root / "json.py").write_text(EVIL)
    for extra in ([], ["--no-cache"]):
        done = invoke(["release", "verify", "--env", "production", *extra])
        assert done.exit_code == 6, done.stderr
        assert "json.py" in done.stderr


def venv_app(tmp_path: Path, release_key: tuple[Path, str]) -> tuple[Path, Path]:
    """A released app whose tasks run in a virtualenv of their own; returns it and its
    ``site-packages``."""
    import venv

    venv.EnvBuilder(with_pip=False).create(tmp_path / "venv")
    (site,) = (tmp_path / "venv" / "lib").glob("python*/site-packages")
    manifest = '[app]\npython = "../venv/bin/python"\n' + MANIFEST.format(trusted=release_key[1])
    root = make_app(
        tmp_path / "app",
        manifest,
        {".env.production": "DATABASE_URL=sqlite:///x\n", "job.py": "print('the released job')\n"},
    )
    release(root, "production", release_key[0])
    return root, site


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("planted.pth", "import sys; print('PLANTED code ran')\n"),
        ("sitecustomize.py", EVIL),
        ("extra_module.py", EVIL),
    ],
)
def test_file_of_no_distribution_in_site_packages_is_refused(
    tmp_path: Path,
    release_key: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: str,
) -> None:
    """A ``.pth``, ``sitecustomize.py`` or module put into the virtualenv's site-packages
    after the release, belonging to no distribution, refuses the run."""
    root, site = venv_app(tmp_path, release_key)
    (site / name).write_text(content)
    assert_refused(root, run_job(root, monkeypatch), name)


def test_changed_file_of_no_distribution_is_refused(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``.pth`` that was there at release time (as virtualenv's own) is bound to the
    release: the same name with other content refuses the run, the original runs."""
    import venv

    venv.EnvBuilder(with_pip=False).create(tmp_path / "venv")
    (site,) = (tmp_path / "venv" / "lib").glob("python*/site-packages")
    (site / "_virtualenv.pth").write_text("import sys\n")
    manifest = '[app]\npython = "../venv/bin/python"\n' + MANIFEST.format(trusted=release_key[1])
    root = make_app(
        tmp_path / "app",
        manifest,
        {".env.production": "DATABASE_URL=sqlite:///x\n", "job.py": "print('the released job')\n"},
    )
    release(root, "production", release_key[0])
    assert run_job(root, monkeypatch).exit_code == 0
    (site / "_virtualenv.pth").write_text("import sys; print('PLANTED code ran')\n")
    assert_refused(root, run_job(root, monkeypatch), "_virtualenv.pth", ran_before=1)


def test_planted_pth_does_not_run_inside_the_release_check(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that refuses a planted ``.pth`` does not execute it while listing the
    virtualenv's distributions (the app's interpreter is asked with ``-S``)."""
    root, site = venv_app(tmp_path, release_key)
    marker = tmp_path / "pth-ran"
    (site / "planted.pth").write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n")
    assert_refused(root, run_job(root, monkeypatch), "planted.pth")
    assert not marker.exists()


ENTRY_MANIFEST = """
[release]
trusted_keys = ["{trusted}"]

[environments.production]
config = [{{ dotenv = ".env.production" }}]

[tasks.script]
argv = ["python", "my-tools/run.py"]

[tasks.here]
argv = ["python", "-c", "import json; print(json.dumps('released json'))"]
cwd = "my-tools"
"""


@pytest.mark.parametrize("task", ["script", "here"])
def test_untracked_module_in_a_tasks_non_identifier_entry_directory_is_refused(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    """``my-tools/`` is no identifier, but it is ``sys.path[0]`` of a task that runs
    ``my-tools/run.py`` or works there: an untracked ``json.py`` in it refuses the run."""
    root = make_app(
        tmp_path / "app",
        ENTRY_MANIFEST.format(trusted=release_key[1]),
        {
            ".env.production": "DATABASE_URL=sqlite:///x\n",
            "my-tools/run.py": "import json; print(json.dumps('released json'))\n",
        },
    )
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "app"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
        )
    release(root, "production", release_key[0])
    monkeypatch.chdir(root)
    ran = invoke(["run", task, "--env", "production"])
    assert ran.exit_code == 0, ran.stderr
    assert "released json" in ran.stdout
    (root / "my-tools" / "json.py").write_text(EVIL)
    assert_refused(root, invoke(["run", task, "--env", "production"]), "my-tools/json.py", 1)


SELF_LOADING = """
import os

def load_dotenv(path=".env"):  # what python-dotenv's does, for the test
    if os.path.exists(path):
        for line in open(path):
            key, _, value = line.strip().partition("=")
            os.environ.setdefault(key, value)

load_dotenv()
print("flag:", os.environ.get("FEATURE_FLAG", "released"))
"""


def test_an_unreleased_dotenv_the_apps_code_loads_refuses_the_run(
    tmp_path: Path, release_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git-ignored ``.env`` that the environment does not declare, but that the app's own
    code loads, would add config nobody released: the verified run refuses, naming the line."""
    root = make_app(
        tmp_path / "app",
        MANIFEST.format(trusted=release_key[1]).replace(
            "import json, job; print(json.dumps('released json'))", "import settings"
        ),
        {".env.production": "DATABASE_URL=sqlite:///x\n", "settings.py": SELF_LOADING,
         ".gitignore": ".env\n"},
    )  # fmt: skip
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "app"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
        )
    release(root, "production", release_key[0])
    ran = run_job(root, monkeypatch)
    assert ran.exit_code == 0, ran.stderr
    assert "flag: released" in ran.stdout
    (root / ".env").write_text("FEATURE_FLAG=PLANTED\n")
    done = run_job(root, monkeypatch)
    assert done.exit_code == 6, done.stderr
    assert ".env is not part of the release, and settings.py:4 loads it" in done.stderr
    assert "PLANTED" not in done.stdout
    assert len(events(root, "run.started")) == 1
