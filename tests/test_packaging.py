"""`python -m build` makes a wheel and an sdist that install into a clean venv and run."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from oneoff._version import __version__

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_and_sdist_build_install_and_run(tmp_path: Path) -> None:
    """The sdist holds the sources (and no local state); the wheel built from it installs
    with pip into a fresh virtualenv whose `oneoff --version` and `oneoff tasks` work.
    Offline: no build isolation (hatchling comes from the test venv), no index."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (sdist,) = dist.glob("oneoff-*.tar.gz")
    (wheel,) = dist.glob("oneoff-*.whl")
    assert sdist.name == f"oneoff-{__version__}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/oneoff/cli/__init__.py"} <= names
    assert not [n for n in names if n.startswith((".venv/", ".oneoff/", "dist/"))]
    with zipfile.ZipFile(wheel) as whl:
        members = set(whl.namelist())
    assert "oneoff/py.typed" in members
    assert any(n.endswith("entry_points.txt") for n in members)

    venv = tmp_path / "clean"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=300)  # type: ignore[attr-defined]
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    # The runtime dependencies (compiled wheels) come from the test venv, appended after the
    # clean venv's own site-packages, so `oneoff` itself can only come from the wheel.
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [python, "-c", "import oneoff; print(oneoff.__file__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(site))
    version = subprocess.run(
        [venv / "bin" / "oneoff", "--version"], check=True, capture_output=True, text=True
    )
    assert version.stdout.strip() == f"oneoff {__version__}"
    app = tmp_path / "app"
    app.mkdir()
    (app / "oneoff.toml").write_text('[environments.dev]\n[tasks.hi]\nargv = ["true"]\n')
    tasks = subprocess.run(
        [venv / "bin" / "oneoff", "tasks"], cwd=app, check=True, capture_output=True, text=True
    )
    assert tasks.stdout.startswith("hi")
