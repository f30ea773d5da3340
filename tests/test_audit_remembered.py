"""The remembered checkpoint: a log that was verified here before cannot be deleted, cut
back or rewritten and re-signed without `oneoff audit verify` failing (exit 8)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from oneoff.testing import CliResult, run_cli


def cli(app: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(list(args), cwd=app, env=env)


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The operator's environment, with a state directory of this test's own."""
    return {**cli_env, "XDG_STATE_HOME": str(tmp_path / "state-home")}


@pytest.fixture
def seen(app: Path, env: dict[str, str]) -> Path:
    """The app after three runs, its log verified once by this account (so remembered)."""
    for name in ("a", "b", "c"):
        result = cli(app, env, "run", "hello", "--env", "development", "-p", f"name={name}")
        assert result.exit_code == 0, result.stderr
    verified = cli(app, env, "audit", "verify")
    assert verified.exit_code == 0, verified.stderr
    return app


def never_saw_it(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Another account, one that never verified the log."""
    return {**env, "XDG_STATE_HOME": str(tmp_path / "other-account")}


def refused(app: Path, env: dict[str, str], needle: str) -> None:
    result = cli(app, env, "audit", "verify")
    assert result.exit_code == 8, result.output
    assert needle in result.stderr
    assert result.stderr.startswith("oneoff: error: ")
    assert "Traceback" not in result.stderr


def test_the_newest_verified_checkpoint_is_kept_privately(seen: Path, env: dict[str, str]) -> None:
    """Verify remembers the newest checkpoint in the user's state dir: 0700, 0600, JSON."""
    directory = Path(env["XDG_STATE_HOME"]) / "oneoff" / "checkpoints"
    files = [p for p in directory.iterdir() if p.suffix == ".json"]
    assert len(files) == 1
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    kept = json.loads(files[0].read_text())
    assert kept["checkpoint"]["size"] == 6
    assert kept["store"] == "sqlite:" + os.path.realpath(seen / ".oneoff" / "state.db")


def test_a_growing_log_extends_what_was_remembered(seen: Path, env: dict[str, str]) -> None:
    """New runs extend the log: verify passes, says so, and remembers the newer checkpoint."""
    assert cli(seen, env, "run", "hello", "--env", "development").exit_code == 0
    result = cli(seen, env, "audit", "verify", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["remembered"] == 6
    again = cli(seen, env, "audit", "verify")
    assert "extends the checkpoint of 8 events verified here before" in again.stdout


def test_a_deleted_store_is_caught(seen: Path, env: dict[str, str], tmp_path: Path) -> None:
    """Deleting the store (the key kept) leaves a fresh log that passes on its own, but not
    for whoever verified the old one."""
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (seen / ".oneoff" / name).unlink(missing_ok=True)
    assert cli(seen, env, "run", "hello", "--env", "development").exit_code == 0
    assert cli(seen, never_saw_it(env, tmp_path), "audit", "verify").exit_code == 0
    refused(seen, env, "is shorter than when you verified it")


def test_a_store_recreated_with_a_new_key_is_caught(
    seen: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """Deleting the whole state directory (store and audit key) is caught: the key changed."""
    shutil.rmtree(seen / ".oneoff")
    assert cli(seen, env, "run", "hello", "--env", "development").exit_code == 0
    assert cli(seen, never_saw_it(env, tmp_path), "audit", "verify").exit_code == 0
    refused(seen, env, "the audit key of this store changed")


def test_a_log_cut_back_with_its_checkpoints_is_caught(
    seen: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """Cutting the newest events and their checkpoints off passes on its own, not here."""
    db = sqlite3.connect(seen / ".oneoff" / "state.db", isolation_level=None)
    db.execute("DELETE FROM audit_events WHERE seq > 2")
    db.execute("DELETE FROM audit_checkpoints WHERE size > 2")
    db.close()
    assert cli(seen, never_saw_it(env, tmp_path), "audit", "verify").exit_code == 0
    refused(seen, env, "2 signed events now, 6 then")


def test_an_old_event_rewritten_and_resigned_is_caught(
    seen: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """Rewriting event 1, re-chaining and re-signing every checkpoint with the audit key
    passes on its own; the remembered checkpoint's consistency proof fails."""
    from oneoff._audit.keys import AuditKey
    from oneoff._audit.log import AuditLog, chain_hash
    from oneoff._store.sqlite import SQLiteStore

    store = SQLiteStore(seen / ".oneoff" / "state.db")
    db = store.db
    body = db.execute("SELECT body FROM audit_events WHERE seq = 1").fetchone()[0]
    db.execute("UPDATE audit_events SET body = ? WHERE seq = 1", (body.replace(b"os:", b"xx:"),))
    prev = b"\x00" * 32
    for seq, data in db.execute("SELECT seq, body FROM audit_events ORDER BY seq").fetchall():
        digest = chain_hash(prev, data)
        db.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
        )
        prev = digest
    db.execute("DELETE FROM audit_checkpoints")
    log = AuditLog(store, AuditKey(seen / ".oneoff"))
    log.checkpoint()  # re-signed with the real key
    store.close()
    assert cli(seen, never_saw_it(env, tmp_path), "audit", "verify").exit_code == 0
    refused(seen, env, "does not extend the checkpoint of 6 events")


def test_a_signed_checkpoint_is_remembered_and_checked_too(seen: Path, env: dict[str, str]) -> None:
    """`audit checkpoint` refuses to sign over a cut-back log this account saw longer."""
    db = sqlite3.connect(seen / ".oneoff" / "state.db", isolation_level=None)
    db.execute("DELETE FROM audit_events WHERE seq > 4")
    db.execute("DELETE FROM audit_checkpoints WHERE size > 4")
    db.close()
    result = cli(seen, env, "audit", "checkpoint")
    assert result.exit_code == 8
    assert "is shorter than when you verified it" in result.stderr


def test_forget_accepts_a_reset_you_meant(seen: Path, env: dict[str, str]) -> None:
    """After `audit forget`, a store reset on purpose verifies again, and is remembered anew."""
    (seen / ".oneoff" / "state.db").unlink()
    refused(seen, env, "is shorter")
    forgot = cli(seen, env, "audit", "forget")
    assert forgot.exit_code == 0
    assert "forgot the checkpoint remembered for sqlite:" in forgot.stderr
    assert cli(seen, env, "audit", "verify").exit_code == 0
    assert "no checkpoint remembered" in cli(seen, env, "audit", "forget").stdout


def test_a_damaged_memory_fails_closed(seen: Path, env: dict[str, str]) -> None:
    """A remembered checkpoint that cannot be read is an error, not a reason to skip it."""
    directory = Path(env["XDG_STATE_HOME"]) / "oneoff" / "checkpoints"
    (file,) = [p for p in directory.iterdir() if p.suffix == ".json"]
    file.write_text("{not json")
    refused(seen, env, "cannot read the checkpoint remembered for sqlite:")


def test_a_rewound_copy_of_the_log_is_caught_by_its_key(
    seen: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """A copy of the app and its state elsewhere is another store, but the same audit key:
    cut back, it is still held to what was verified under that key."""
    copy = tmp_path / "copy"
    shutil.copytree(seen, copy)
    db = sqlite3.connect(copy / ".oneoff" / "state.db", isolation_level=None)
    db.execute("DELETE FROM audit_events WHERE seq > 2")
    db.execute("DELETE FROM audit_checkpoints WHERE size > 2")
    db.close()
    refused(copy, env, "the audit log of a copy of this log (sqlite:")


@pytest.mark.postgres
def test_a_dropped_and_recreated_postgresql_store_is_caught(
    app: Path, env: dict[str, str], pg_server: object
) -> None:
    """The same holds for a PostgreSQL store: dropping and recreating the database is caught."""
    import psycopg

    from oneoff._store.postgres import migrate

    url = pg_server.database()  # type: ignore[attr-defined]
    migrate(url)
    pg = {**env, "ONEOFF_STORE_URL": url}
    assert cli(app, pg, "run", "hello", "--env", "development").exit_code == 0
    assert cli(app, pg, "audit", "verify").exit_code == 0
    name = url.split("/")[3].split("?")[0]
    admin = pg_server.url()  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(url)
    assert cli(app, pg, "run", "hello", "--env", "development").exit_code == 0
    refused(app, pg, "does not extend the checkpoint of 2 events you verified at")
