"""Attack: a hostile sandboxed task goes for oneoff's own state in the app's ``.oneoff/``.

There lie the audit signing key (whoever holds it can re-sign a rewritten history) and the
store (every run's output, approvals, the audit log). The sandbox hides it behind an empty
tmpfs, even when the app directory itself is writable, so the task can neither read the
key nor change the store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oneoff.testing import make_app, run_cli

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/bwrap"), reason="bubblewrap is not installed (.ci/run installs it)"
)

TASKS = """
[environments.local]

[environments.boxed]
executor = { kind = "sandbox" }

[environments.open]
executor = { kind = "sandbox", writable = ["."] }

[tasks.raid]
argv = ["python", "raid.py"]

[tasks.noop]
argv = ["python", "-c", "pass"]
"""

RAID = """
import json, os
found = {}
try:
    found["listing"] = sorted(os.listdir(".oneoff"))
    found["key"] = open(".oneoff/audit.key").read()
except OSError as exc:
    found["read"] = type(exc).__name__
try:
    with open(".oneoff/state.db", "r+b") as db:
        db.write(b"corrupted by the task")
    found["wrote"] = True
except OSError as exc:
    found["write"] = type(exc).__name__
print(json.dumps(found))
"""


@pytest.mark.parametrize("env", ["boxed", "open"])
def test_a_sandboxed_task_cannot_read_the_audit_key_or_change_the_store(
    tmp_path: Path, cli_env: dict[str, str], env: str
) -> None:
    """The task sees an empty .oneoff/: no key to steal, no store to corrupt."""
    app = make_app(tmp_path / "app", TASKS, {"raid.py": RAID})
    first = run_cli(["run", "noop", "--env", "local"], cwd=app, env=cli_env)  # signs with the key
    assert first.exit_code == 0, first.output
    key = (app / ".oneoff" / "audit.key").read_text()
    done = run_cli(["run", "raid", "--env", env], cwd=app, env=cli_env)
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout.strip().splitlines()[0])
    assert found.get("listing", []) == []
    assert "key" not in found
    assert "BEGIN PRIVATE KEY" not in done.stdout
    assert (app / ".oneoff" / "audit.key").read_text() == key
    verified = run_cli(["audit", "verify"], cwd=app, env=cli_env)
    assert verified.exit_code == 0, verified.output
    runs = json.loads(run_cli(["runs", "--json"], cwd=app, env=cli_env).stdout)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
