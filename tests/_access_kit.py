"""Shared pieces of the access tests: real ssh-keygen keys, an app with [access], helpers.

Also a pytest plugin: a test module that sets ``pytest_plugins = ["_access_kit"]`` gets
the ``keys``, ``root`` and ``env`` fixtures below (a module's own fixture of the same name
still wins, as tests/test_auth_sshsig.py's ``keys`` does). Those modules import helpers
from here before pytest sees ``pytest_plugins``, too late to rewrite asserts (there are
none here), so the marker PYTEST_DONT_REWRITE keeps pytest from warning about it.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oneoff._app import App, open_app
from oneoff._identity import Signer
from oneoff._pipeline import RunOutcome, RunRequest, run_task
from oneoff.testing import make_app

# Who is who in the tests; mallory has a key but is in nobody's allowed_signers.
PEOPLE = {"alice": "developers", "bob": "dba", "carol": "dba", "dave": "oncall", "erin": "dba"}
OUTSIDERS = ("mallory",)

Keys = dict[str, Path]

MANIFEST = """
[release]
trusted_keys = ["{trusted}"]
# The tests edit people and policies after releasing, to exercise the access checks
# themselves (in a real app, those edits would also need a new release).
ignore = ["policies/", "people/", "notified"]

[access]
approval_ttl = "{ttl}"
break_glass = {{ command = ["python", "-c", "{notify}"] }}

[environments.development]
config = [{{ dotenv = ".env" }}]

[environments.production]
protected = true
config = [{{ dotenv = ".env.production" }}]

[environments.staging]
protected = true
config = [{{ dotenv = ".env.production" }}]

[tasks.noop]
argv = ["python", "-c", "print('noop ran')"]

[tasks.migrate]
argv = ["python", "-c", "import sys; print('migrated to', sys.argv[1])", "{{target}}"]
risk = "high"
locks = ["database"]
approvals = {{ quorum = 2, group = "dba" }}
params.target = {{ type = "string", pattern = "latest|[0-9]{{4}}", default = "latest" }}

[tasks.hold]
argv = ["python", "hold.py", "{{pidfile}}", "{{seconds}}"]
locks = ["database"]
params.pidfile = {{ type = "string", default = "held.pid" }}
params.seconds = {{ type = "string", default = "30" }}
"""

# The break-glass notification: writes the reason to ./notified (a marker for the tests).
NOTIFY = "import os; open('notified', 'w').write(os.environ['ONEOFF_BREAK_GLASS_REASON'])"

HOLD = """
import os, sys, time

# Hold the database lock until PIDFILE.stop appears (or SECONDS pass).
pidfile, seconds = sys.argv[1], float(sys.argv[2])
with open(pidfile + ".tmp", "w") as fh:
    fh.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
end = time.time() + seconds
while time.time() < end and not os.path.exists(pidfile + ".stop"):
    time.sleep(0.05)
"""

POLICIES = {
    "policies/base.cedar": """
        @id("anyone-in-development")
        permit (principal, action, resource) when { context.environment == "development" };

        @id("developers-run-protected")
        permit (principal in Oneoff::Group::"developers",
                action in [Oneoff::Action::"plan", Oneoff::Action::"run"], resource)
        when { context.protected && resource.risk != "critical" };

        @id("dba-approve-migrate")
        permit (principal in Oneoff::Group::"dba",
                action in [Oneoff::Action::"plan", Oneoff::Action::"run",
                           Oneoff::Action::"approve"],
                resource == Oneoff::Task::"migrate");

        @id("dba-release")
        permit (principal in Oneoff::Group::"dba", action == Oneoff::Action::"release",
                resource);
    """,
    "policies/break-glass.cedar": """
        @id("break-glass-is-for-oncall")
        forbid (principal, action, resource) when { context.break_glass }
        unless { principal in Oneoff::Group::"oncall" };

        @id("oncall-break-glass")
        permit (principal in Oneoff::Group::"oncall", action == Oneoff::Action::"run", resource)
        when { context.break_glass };
    """,
}


def keygen(directory: Path, name: str) -> Path:
    """A real OpenSSH Ed25519 key pair made by ssh-keygen; returns the private key's path."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", path],
        check=True,
    )
    return path


def make_keys(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {name: keygen(directory, name) for name in (*PEOPLE, *OUTSIDERS)}


def signers_text(keys: dict[str, Path], people: dict[str, str] | None = None) -> str:
    lines = []
    for name, groups in (PEOPLE if people is None else people).items():
        kind, blob = Path(f"{keys[name]}.pub").read_text().split()[:2]
        lines.append(f"{name} {kind} {blob} {name}@test groups={groups}\n")
    return "".join(lines)


def make_access_app(
    root: Path,
    keys: dict[str, Path],
    *,
    ttl: str = "1h",
    extra: str = "",
    extra_files: dict[str, str] | None = None,
) -> Path:
    """An app with [access] whose production and staging have a current signed release;
    ``extra``/``extra_files``: more manifest text (tasks) and files, there before releasing."""
    from oneoff._audit.checkpoint import generate_keypair
    from oneoff._release.settings import public_key_line

    release_key = keys["alice"].parent / "release.key"
    if not release_key.exists():
        generate_keypair(release_key, release_key.with_suffix(".pub"))
    trusted = public_key_line(release_key.with_suffix(".pub"))
    files = {
        ".env": "GREETING=hi\n",
        "hold.py": HOLD,
        ".env.production": "DATABASE_URL=postgres://app:prod-pass-999@db/app\n",
        **POLICIES,
        **(extra_files or {}),
    }
    make_app(root, MANIFEST.format(ttl=ttl, trusted=trusted, notify=NOTIFY) + extra, files)
    people = root / "people"
    people.mkdir()
    (people / "allowed_signers").write_text(signers_text(keys))
    for env in ("production", "staging"):
        release(root, env, release_key)
    return root


def release(root: Path, env: str, key: Path, *, by: str = "bob", **kw: Any) -> str:
    """Make a new current signed release of ``env`` as ``by`` (bob, a dba, whom the
    policies let release); returns its id. ``kw``: e.g. ``min_version``."""
    from oneoff._release.lifecycle import create_release

    app = open_app(root)
    try:
        # The people's keys sit beside the release key (make_access_app puts it there).
        who = Signer(key.parent / by, agent=False)
        return create_release(app, env, key_file=str(key), signer=who, **kw).id
    finally:
        app.close()


def signer(keys: dict[str, Path], name: str) -> Signer:
    return Signer(keys[name], agent=False)


def run_as(
    root: Path, keys: dict[str, Path] | None, name: str | None, task: str, env: str, **kw: Any
) -> RunOutcome:
    """Run in-process as ``name`` (signing with their key), capturing the task's output."""
    app = open_app(root)
    try:
        who = signer(keys, name) if keys is not None and name is not None else None
        request = RunRequest(task=task, environment=env, signer=who, **kw)
        return run_task(app, request, stdout=io.BytesIO(), stderr=io.BytesIO())
    finally:
        app.close()


def events(root: Path, kind: str | None = None) -> list[Any]:
    app: App = open_app(root)
    try:
        return [e for e in app.audit.events() if kind is None or e.kind == kind]
    finally:
        app.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Everyone's key pair, made once per test module (ssh-keygen is the slow part)."""
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def root(tmp_path: Path, keys: Keys) -> Path:
    """A fresh app with [access] and current signed production and staging releases."""
    return make_access_app(tmp_path / "app", keys)


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The operator's shell without a signing key: each command names its own ``--key``."""
    return {k: v for k, v in cli_env.items() if k not in ("ONEOFF_SIGNING_KEY", "SSH_AUTH_SOCK")}
