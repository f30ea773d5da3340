"""The release check on every run's path stays cheap to import."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("dataclasses", "concurrent.futures", "tempfile", "cryptography")

PROBE = f"""
import json, sys
import oneoff._release.check
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_release_check_imports_no_heavy_modules() -> None:
    """Importing the per-run release check pulls in neither dataclasses (inspect, ast, dis),
    concurrent.futures (logging), tempfile (shutil, bz2, lzma, random) nor cryptography:
    those are only needed to hash a cold tree, write a cache or check a signature."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
