"""examples/team/try.sh, the README's Team walk-through, works on one machine end to end
and leaves no server, PostgreSQL or temporary directory behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _pgserver import find_bindir

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "team" / "try.sh"


@pytest.mark.skipif(find_bindir() is None, reason="PostgreSQL is not installed")
@pytest.mark.timeout(600)
def test_the_team_walkthrough_runs_an_approved_request_and_cleans_up() -> None:
    """alice's migrate request, approved by bob and carol, runs (exit 0) through the server;
    the audit log verifies, bob gets a console login link, and nothing is left running."""
    env = dict(os.environ, ONEOFF=str(Path(sys.executable).parent / "oneoff"))
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=540, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    work = re.search(r"/tmp/oneoff-team-\w+", out)
    assert work is not None, out
    assert "oneoff: bob approved q" in out, out
    assert "oneoff: carol approved q" in out, out
    assert "migrate on production: succeeded, exit 0" in out, out
    assert re.search(r"^OK: \d+ events, hash chain intact", out, re.M), out
    assert re.search(r"^http://127\.0\.0\.1:\d+/console/login#\S+", out, re.M), out
    assert not Path(work.group(0)).exists()
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert work.group(0) not in procs.stdout
