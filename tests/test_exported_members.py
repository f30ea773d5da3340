"""The public API is exactly what __all__ says, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import oneoff


def test_all_names_resolve() -> None:
    """Every name in oneoff.__all__ can be imported."""
    for name in oneoff.__all__:
        assert getattr(oneoff, name) is not None, name


def test_public_names_are_listed() -> None:
    """No public name exists at the top level without being in __all__."""
    public = {n for n in dir(oneoff) if not n.startswith("_")} - {"annotations", "import_module"}
    public -= {"TYPE_CHECKING", "Any"}
    public -= {"errors", "testing", "cli"}  # public submodules, imported as such
    assert public <= set(oneoff.__all__)


def test_import_does_not_load_heavy_modules() -> None:
    """`import oneoff` and the CLI's --help load neither cryptography, cedarpy nor sqlite3."""
    code = (
        "import sys, oneoff, oneoff.cli; oneoff.cli.main(['--help']);"
        "heavy = [m for m in ('cryptography', 'cedarpy', 'sqlite3', 'tomllib')"
        " if m in sys.modules];"
        "print('HEAVY:' + ','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "HEAVY:"
