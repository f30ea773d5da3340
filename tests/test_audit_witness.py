"""Witnesses: independent keys co-sign verified checkpoints, and `audit verify --witness`
requires their co-signatures, so a history rewritten and re-signed with the audit key no
longer carries them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from oneoff.testing import CliResult, run_cli


def cli(app: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(list(args), cwd=app, env=env)


@pytest.fixture
def witnessed(app: Path, cli_env: dict[str, str], tmp_path: Path) -> tuple[Path, Path, Path]:
    """The app after two runs, co-signed by one witness; (app, witness key, its public key)."""
    from oneoff._audit.checkpoint import generate_keypair

    key, pub = tmp_path / "w.key", tmp_path / "w.pub"
    generate_keypair(key, pub)
    for name in ("a", "b"):
        assert cli(app, cli_env, "run", "hello", "--env", "development", "-p", f"name={name}")\
            .exit_code == 0  # fmt: skip
    witness_env = {**cli_env, "XDG_STATE_HOME": str(tmp_path / "witness-account")}
    result = cli(app, witness_env, "audit", "witness", "--key", str(key))
    assert result.exit_code == 0, result.stderr
    assert "co-signed checkpoint 4 as witness" in result.stdout
    return app, key, pub


def test_a_witnessed_log_verifies_with_its_witness(
    witnessed: tuple[Path, Path, Path], cli_env: dict[str, str]
) -> None:
    """verify --witness reports how far each witness vouches; co-signing twice adds nothing."""
    app, key, pub = witnessed
    result = cli(app, cli_env, "audit", "verify", "--witness", str(pub), "--json")
    assert result.exit_code == 0, result.stderr
    assert list(json.loads(result.stdout)["witnessed"].values()) == [4]
    again = cli(app, cli_env, "audit", "witness", "--key", str(key))
    assert "already co-signed checkpoint 4" in again.stdout


def test_a_witness_that_never_cosigned_is_missing(
    witnessed: tuple[Path, Path, Path], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A named witness without a co-signature fails verify (exit 8)."""
    from oneoff._audit.checkpoint import generate_keypair

    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    app = witnessed[0]
    result = cli(app, cli_env, "audit", "verify", "--witness", str(tmp_path / "other.pub"))
    assert result.exit_code == 8
    assert "has no co-signature in this store" in result.stderr


def test_a_rewritten_and_resigned_history_loses_its_witness(
    witnessed: tuple[Path, Path, Path], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Rewriting an event and re-signing every checkpoint with the audit key passes plain
    verify for an account that never saw the log, but not verify --witness."""
    from oneoff._audit.keys import AuditKey
    from oneoff._audit.log import AuditLog, chain_hash
    from oneoff._store.sqlite import SQLiteStore

    app, _key, pub = witnessed
    store = SQLiteStore(app / ".oneoff" / "state.db")
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
    AuditLog(store, AuditKey(app / ".oneoff")).checkpoint()
    store.close()
    fresh = {**cli_env, "XDG_STATE_HOME": str(tmp_path / "fresh")}
    assert cli(app, fresh, "audit", "verify").exit_code == 0
    result = cli(app, fresh, "audit", "verify", "--witness", str(pub))
    assert result.exit_code == 8
    assert "none of its 1 co-signatures matches" in result.stderr


def test_deleted_cosignatures_are_missed(
    witnessed: tuple[Path, Path, Path], cli_env: dict[str, str]
) -> None:
    """Deleting a witness's co-signatures leaves verify --witness failing, not passing."""
    app, _key, pub = witnessed
    db = sqlite3.connect(app / ".oneoff" / "state.db", isolation_level=None)
    db.execute("DELETE FROM audit_cosignatures")
    db.close()
    result = cli(app, cli_env, "audit", "verify", "--witness", str(pub))
    assert result.exit_code == 8


def test_a_witness_refuses_to_cosign_with_the_logs_own_key(
    app: Path, cli_env: dict[str, str]
) -> None:
    """The log's own audit key is no witness."""
    assert cli(app, cli_env, "run", "hello", "--env", "development").exit_code == 0
    result = cli(app, cli_env, "audit", "witness", "--key", str(app / ".oneoff" / "audit.key"))
    assert result.exit_code == 8
    assert "a witness co-signs with its own" in result.stderr
