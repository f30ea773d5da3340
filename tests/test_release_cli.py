"""Releases end to end: real processes, real Ed25519 keys, a real SQLite store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import pytest

from oneoff._audit.checkpoint import generate_keypair, key_id, load_private_key
from oneoff._canonical import canonical_json
from oneoff._release.document import content_id, signed_message
from oneoff._release.settings import public_key_line
from oneoff.testing import CliResult, make_app, run_cli

MANIFEST = """
[release]
trusted_keys = ["{trusted}"]

[processes]
web = ["python", "-c", "{printenv}"]

[environments.development]
config = [{{ dotenv = ".env" }}]

[environments.production]
protected = true
config = [{{ dotenv = ".env.production" }}]

[tasks.noop]
argv = ["python", "-c", "pass"]

[tasks.printenv]
argv = ["python", "-c", "{printenv}"]
"""
# Values are printed hashed: output redaction would rightly mask the secret ones.
PRINTENV = (
    "import hashlib, json, os; print(json.dumps(dict("
    "(k, hashlib.sha256(v.encode()).hexdigest()) for k, v in os.environ.items())))"
)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """A trusted key pair and an untrusted one, both outside the app."""
    out = tmp_path / "keys"
    out.mkdir(mode=0o700)
    for name in ("trusted", "other"):
        generate_keypair(out / f"{name}.key", out / f"{name}.pub")
    return {name: out / f"{name}.key" for name in ("trusted", "other")}


@pytest.fixture
def rapp(tmp_path: Path, keys: dict[str, Path]) -> Path:
    trusted = public_key_line(keys["trusted"].with_suffix(".pub"))
    return make_app(
        tmp_path / "app",
        MANIFEST.format(trusted=trusted, printenv=PRINTENV),
        {
            "app/models.py": "class Note: pass\n",
            "manage.py": "print('manage')\n",
            ".env": "SECRET_KEY=dev-secret-value-123\nGREETING=hello\n",
            ".env.production": "SECRET_KEY=prod-secret-value-456\n",
        },
    )


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cli_env.items() if k != "ONEOFF_RELEASE_KEY_FILE"}


def cli(app: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(list(args), cwd=app, env=env)


def ok(app: Path, env: dict[str, str], *args: str) -> CliResult:
    result = cli(app, env, *args)
    assert result.exit_code == 0, result.output
    return result


def rows(app: Path) -> list[tuple[str, str, int]]:
    if not (app / ".oneoff" / "state.db").exists():
        return []
    with sqlite3.connect(app / ".oneoff" / "state.db") as db:
        return db.execute("SELECT id, environment, version FROM releases").fetchall()


def test_one_byte_changed_refuses_the_run_naming_the_file(rapp: Path, env: dict[str, str]) -> None:
    """Changing one byte of one file after the release refuses the run (exit 6), naming it."""
    ok(rapp, env, "release", "create", "--env", "development")
    ok(rapp, env, "run", "noop", "--env", "development")
    (rapp / "app" / "models.py").write_text("class Nota: pass\n")
    result = cli(rapp, env, "run", "noop", "--env", "development")
    assert result.exit_code == 6
    assert "1 file differs: app/models.py (modified)" in result.stderr
    assert "runs" not in result.stdout


def test_config_value_changed_refuses_naming_the_key(rapp: Path, env: dict[str, str]) -> None:
    """A changed config value refuses the run and names the key, never the value."""
    ok(rapp, env, "release", "create", "--env", "development")
    (rapp / ".env").write_text("SECRET_KEY=dev-secret-value-124\nGREETING=hello\n")
    result = cli(rapp, env, "plan", "noop", "--env", "development")
    assert result.exit_code == 6
    assert "config: SECRET_KEY (changed)" in result.stderr
    assert "dev-secret-value" not in result.output
    assert "files differ" not in result.stderr  # dotenv files are config, not code


def test_dependency_version_changed_refuses(rapp: Path, env: dict[str, str]) -> None:
    """An installed distribution's version changing in the app's interpreter refuses the run."""
    venv = rapp / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    info = site / "fakedep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedep\nVersion: 1.0\n")
    (info / "RECORD").write_text("fakedep-1.0.dist-info/METADATA,,\n")
    manifest = rapp / "oneoff.toml"
    manifest.write_text('[app]\npython = ".venv/bin/python"\n' + manifest.read_text())
    ok(rapp, env, "release", "create", "--env", "development")
    ok(rapp, env, "run", "noop", "--env", "development")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedep\nVersion: 1.1\n")
    result = cli(rapp, env, "run", "noop", "--env", "development")
    assert result.exit_code == 6
    assert "dependencies: fakedep 1.0 -> 1.1" in result.stderr


def _tamper(app: Path, edit: str) -> None:
    with sqlite3.connect(app / ".oneoff" / "state.db") as db:
        db.execute(edit)


def test_tampered_document_is_refused(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """A stored release whose document was edited no longer matches its id and is refused."""
    ok(rapp, env, "release", "create", "--env", "production", "--key", str(keys["trusted"]))
    _tamper(rapp, "UPDATE releases SET document = replace(document, 'prod', 'PROD')")
    _tamper(
        rapp, "UPDATE releases SET document = replace(document, '\"version\":1', '\"version\":2')"
    )
    result = cli(rapp, env, "release", "verify", "--env", "production")
    assert result.exit_code == 6
    assert "does not match its id" in result.stderr
    listed = ok(rapp, env, "release", "list")
    assert "INVALID" in listed.stdout


def test_rehashed_tampered_release_fails_its_signature(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """An attacker who rewrites document and id consistently still fails the signature."""
    ok(rapp, env, "release", "create", "--env", "production", "--key", str(keys["trusted"]))
    verified = json.loads(
        ok(rapp, env, "release", "verify", "--env", "production", "--json").stdout
    )
    assert verified["verified"] is True
    assert verified["label"].startswith("production v1")
    with sqlite3.connect(rapp / ".oneoff" / "state.db") as db:
        old_id, document = db.execute("SELECT id, document FROM releases").fetchone()
        doc = json.loads(document)
        doc["created_by"] = "os:mallory"
        raw = canonical_json(doc)
        new_id = content_id(raw)
        db.execute(
            "UPDATE releases SET id = ?, document = ?, created_by = ?",
            (new_id, raw.decode(), "os:mallory"),
        )
        db.execute("UPDATE current_releases SET release_id = ?", (new_id,))
    assert new_id != old_id
    result = cli(rapp, env, "release", "verify", "--env", "production")
    assert result.exit_code == 6
    assert "signature does not verify" in result.stderr


def test_signature_by_unknown_key_is_refused(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """A release re-signed by a key the app does not trust is refused, naming that key."""
    ok(rapp, env, "release", "create", "--env", "development", "--key", str(keys["trusted"]))
    other = load_private_key(keys["other"])
    (rid, _env, _v) = rows(rapp)[0]
    with sqlite3.connect(rapp / ".oneoff" / "state.db") as db:
        db.execute(
            "UPDATE releases SET signature = ?, key_id = ?",
            (other.sign(signed_message(rid)), key_id(other.public_key())),
        )
    result = cli(rapp, env, "run", "noop", "--env", "development")
    assert result.exit_code == 6
    assert f"signed by key {key_id(other.public_key())}" in result.stderr
    assert "does not trust" in result.stderr


def test_protected_environment_refuses_unsigned_and_missing_releases(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """Production refuses with no release, will not get an unsigned one, accepts a signed one."""
    result = cli(rapp, env, "plan", "noop", "--env", "production")
    assert result.exit_code == 6
    assert "oneoff release create --env production --key" in result.stderr
    result = cli(rapp, env, "release", "create", "--env", "production")
    assert result.exit_code == 6
    assert "requires a signed release" in result.stderr
    result = cli(rapp, env, "release", "create", "--env", "production", "--key", str(keys["other"]))
    assert result.exit_code == 6
    assert "not trusted" in result.stderr
    signing_env = {**env, "ONEOFF_RELEASE_KEY_FILE": str(keys["trusted"])}
    ok(rapp, signing_env, "release", "create", "--env", "production")
    verified = ok(rapp, env, "release", "verify", "--env", "production")
    assert "verified" in verified.stdout


def test_protected_environment_refuses_a_forged_unsigned_row(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """Stripping the signature from a stored production release makes it unusable."""
    ok(rapp, env, "release", "create", "--env", "production", "--key", str(keys["trusted"]))
    _tamper(rapp, "UPDATE releases SET signature = NULL, key_id = NULL")
    result = cli(rapp, env, "plan", "noop", "--env", "production")
    assert result.exit_code == 6
    assert "is unsigned" in result.stderr


def test_allow_drift_runs_on_development_and_is_recorded(rapp: Path, env: dict[str, str]) -> None:
    """--allow-drift lets a drifted development run proceed, and the run records it."""
    ok(rapp, env, "release", "create", "--env", "development")
    (rapp / "manage.py").write_text("print('changed')\n")
    ok(rapp, env, "run", "noop", "--env", "development", "--allow-drift")
    runs = json.loads(ok(rapp, env, "runs", "--json").stdout)
    assert runs[0]["allow_drift"] is True
    assert runs[0]["release_id"] == rows(rapp)[0][0]


def test_allow_drift_is_refused_on_protected(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """--allow-drift is refused on a protected environment, drift or not."""
    ok(rapp, env, "release", "create", "--env", "production", "--key", str(keys["trusted"]))
    result = cli(rapp, env, "plan", "noop", "--env", "production", "--allow-drift")
    assert result.exit_code == 2
    assert "--allow-drift is not allowed" in result.stderr


def test_exec_and_run_get_identical_environments(rapp: Path, env: dict[str, str]) -> None:
    """`oneoff exec web` and `oneoff run` on the same release see the same variables."""
    ok(rapp, env, "release", "create", "--env", "development")
    web = json.loads(ok(rapp, env, "exec", "web", "--env", "development").stdout)
    task = json.loads(ok(rapp, env, "run", "printenv", "--env", "development", "-q").stdout)
    release_id = rows(rapp)[0][0]
    assert (
        web["ONEOFF_RELEASE"] == task["ONEOFF_RELEASE"] == sha256(release_id.encode()).hexdigest()
    )
    strip = {"ONEOFF_RUN_ID", "ONEOFF_TASK", "ONEOFF_ENVIRONMENT"}
    assert {k: v for k, v in web.items() if k not in strip} == {
        k: v for k, v in task.items() if k not in strip
    }


def test_rollback_restores_the_previous_release(rapp: Path, env: dict[str, str]) -> None:
    """After rollback the previous release is current again and runs use it."""
    ok(rapp, env, "release", "create", "--env", "development")
    (rapp / "manage.py").write_text("print('v2')\n")
    ok(rapp, env, "release", "create", "--env", "development")
    ok(rapp, env, "run", "noop", "--env", "development")
    rolled = ok(rapp, env, "release", "rollback", "--env", "development")
    assert "rolled back from v2" in rolled.stdout
    listed = ok(rapp, env, "release", "list", "--env", "development", "--json").stdout
    current = [r for r in json.loads(listed) if r["current"]]
    assert [r["version"] for r in current] == [1]
    result = cli(rapp, env, "run", "noop", "--env", "development")
    assert result.exit_code == 6  # v1's manage.py is not what is on disk
    assert "manage.py (modified)" in result.stderr


def test_plan_hash_covers_the_release(rapp: Path, env: dict[str, str]) -> None:
    """The same task planned on v1 and v2 gets different plan hashes that name the release."""
    ok(rapp, env, "release", "create", "--env", "development")
    ok(rapp, env, "release", "create", "--env", "development")
    one = json.loads(
        ok(rapp, env, "plan", "noop", "--env", "development", "--release", "v1", "--json").stdout
    )
    two = json.loads(ok(rapp, env, "plan", "noop", "--env", "development", "--json").stdout)
    assert one["document"]["release"] != two["document"]["release"]
    assert one["hash"] != two["hash"]
    diff = ok(rapp, env, "release", "diff", "v1", "v2", "--env", "development")
    assert "files: no change" in diff.stdout


def test_diff_names_files_and_config_keys(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """`release diff` lists the files and config keys that changed between two releases."""
    ok(rapp, env, "release", "create", "--env", "development")
    (rapp / "app" / "models.py").write_text("class Note: id = 1\n")
    (rapp / "app" / "new.py").write_text("")
    (rapp / ".env").write_text("SECRET_KEY=dev-secret-value-999\nGREETING=hello\nNEW=1\n")
    ok(rapp, env, "release", "create", "--env", "development")
    result = json.loads(
        ok(rapp, env, "release", "diff", "v1", "v2", "-e", "development", "--json").stdout
    )
    assert result["files"] == ["app/models.py (modified)", "app/new.py (added)"]
    assert result["config"] == ["NEW (added)", "SECRET_KEY (changed)"]
    assert result["deps"] == []


def test_promote_recreates_the_build_with_the_target_config(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """Promotion to production keeps the build (code, deps) and takes production's config."""
    ok(rapp, env, "release", "create", "--env", "development")
    dev_id = rows(rapp)[0][0]
    result = cli(rapp, env, "release", "promote", dev_id[:10], "--env", "production")
    assert result.exit_code == 6  # production needs a signature
    shown = ok(
        rapp,
        env,
        "release",
        "promote",
        dev_id[:10],
        "--env",
        "production",
        "--key",
        str(keys["trusted"]),
        "--json",
    )
    promoted = json.loads(shown.stdout)
    assert promoted["promoted_from"] == dev_id
    assert promoted["environment"] == "production"
    assert promoted["version"] == 1
    dev = json.loads(ok(rapp, env, "release", "show", dev_id, "--json").stdout)
    assert (promoted["code"], promoted["deps"]) == (dev["code"], dev["deps"])
    assert promoted["config"] != dev["config"]
    ok(rapp, env, "release", "verify", "--env", "production")


def test_private_key_inside_the_app_or_readable_by_others_is_refused(
    rapp: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    """A signing key inside the app tree, or with group/other permissions, is not used."""
    inside = rapp / "release.key"
    inside.write_bytes(keys["trusted"].read_bytes())
    inside.chmod(0o600)
    result = cli(rapp, env, "release", "create", "-e", "development", "--key", str(inside))
    assert result.exit_code == 2
    assert "inside the app" in result.stderr
    keys["trusted"].chmod(0o644)
    result = cli(rapp, env, "release", "create", "-e", "development", "--key", str(keys["trusted"]))
    assert result.exit_code == 2
    assert "readable by group or others" in result.stderr
    assert rows(rapp) == []


def test_keys_generate_writes_a_private_key_and_the_line_to_trust(
    tmp_path: Path, rapp: Path, env: dict[str, str]
) -> None:
    """`keys generate` writes a 0600 private key (never inside the app) and the line to trust."""
    out = tmp_path / "newkeys"
    result = ok(rapp, env, "keys", "generate", "--out", str(out))
    assert (os.stat(out / "release.key").st_mode & 0o777) == 0o600
    assert 'trusted_keys = ["ed25519:' in result.stdout
    refused = cli(rapp, env, "keys", "generate", "--out", str(rapp / "keys"))
    assert refused.exit_code == 2
    assert not (rapp / "keys" / "release.key").exists()


def test_bad_release_table_fails_at_load(rapp: Path, env: dict[str, str]) -> None:
    """A malformed [release] table is a manifest error naming the file, before anything runs."""
    manifest = rapp / "oneoff.toml"
    manifest.write_text(
        manifest.read_text().replace(
            'trusted_keys = ["ed25519:', 'trusted_keys = ["../x", "ed25519:'
        )
    )
    result = cli(rapp, env, "tasks")
    assert result.exit_code == 2
    assert "oneoff.toml: [release] trusted_keys" in result.stderr


def test_links_loops_and_non_utf8_names_are_recorded_and_named(
    rapp: Path, env: dict[str, str]
) -> None:
    """A link is recorded by its target, and a changed one named; so is a changed non-UTF-8
    name, escaped. (Links leading out of the release: tests/test_attacks_release_links.py.)"""
    (rapp / "loop").symlink_to("manage.py")
    (rapp / "models").symlink_to("app")
    odd = os.fsencode(rapp) + b"/caf\xe9.py"
    with open(odd, "wb") as fh:
        fh.write(b"x = 1\n")
    ok(rapp, env, "release", "create", "--env", "development")
    ok(rapp, env, "run", "noop", "--env", "development")
    with open(odd, "wb") as fh:
        fh.write(b"x = 2\n")
    (rapp / "loop").unlink()
    (rapp / "loop").symlink_to("app/models.py")
    result = cli(rapp, env, "run", "noop", "--env", "development")
    assert result.exit_code == 6
    assert "2 files differ: caf\\xe9.py (modified), loop (modified)" in result.stderr


def test_release_actions_and_refusals_are_audited(rapp: Path, env: dict[str, str]) -> None:
    """Creating, refusing, allowing drift and rolling back each leave an audit event."""
    ok(rapp, env, "release", "create", "--env", "development")
    ok(rapp, env, "release", "create", "--env", "development")
    (rapp / "manage.py").write_text("print('drifted')\n")
    assert cli(rapp, env, "run", "noop", "--env", "development").exit_code == 6
    ok(rapp, env, "run", "noop", "--env", "development", "--allow-drift")
    ok(rapp, env, "release", "rollback", "--env", "development")
    with sqlite3.connect(rapp / ".oneoff" / "state.db") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM audit_events ORDER BY seq")]
    assert [k for k in kinds if k.startswith("release.")] == [
        "release.created",
        "release.created",
        "release.verify_failed",
        "release.drift_allowed",
        "release.rolled_back",
    ]


def test_changed_task_catalogue_is_drift(rapp: Path, env: dict[str, str]) -> None:
    """Editing a task in oneoff.toml after the release is drift in code and task catalogue."""
    ok(rapp, env, "release", "create", "--env", "development")
    manifest = rapp / "oneoff.toml"
    manifest.write_text(manifest.read_text().replace('"pass"', '"pass; pass"'))
    result = cli(rapp, env, "run", "noop", "--env", "development")
    assert result.exit_code == 6
    assert "oneoff.toml (modified)" in result.stderr
    assert "task catalogue or process types differ" in result.stderr
