"""What is the PostgreSQL store's own: explicit migrations, its URL, its connection."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from oneoff._store.interface import RunRecord
from oneoff._store.postgres_schema import MIGRATIONS
from oneoff.errors import StoreError
from oneoff.testing import run_cli

pytestmark = pytest.mark.postgres


def record(run_id: str) -> RunRecord:
    return RunRecord(
        id=run_id, task="t", environment="dev", params={}, principal="os:me",
        plan_hash="sha256:x", status="running", started_at="2026-01-01T00:00:00.000Z",
        runner_host="h", runner_pid=1, runner_token="1",
    )  # fmt: skip


def test_an_unmigrated_database_is_refused_until_server_migrate(
    pg_server: object, app: Path, cli_env: dict[str, str]
) -> None:
    """A new database is not set up behind the operator's back: commands refuse (exit 7)
    until `oneoff server migrate`; then runs, their audit log and verify use PostgreSQL."""
    url = pg_server.database()  # type: ignore[attr-defined]
    env = {**cli_env, "ONEOFF_STORE_URL": url}
    refused = run_cli(["runs"], cwd=app, env=env)
    assert refused.exit_code == 7, refused.stderr
    assert "not set up for oneoff" in refused.stderr
    assert "oneoff server migrate" in refused.stderr
    migrated = run_cli(["server", "migrate"], cwd=app, env=env)
    assert migrated.exit_code == 0, migrated.stderr
    assert f"migrated from v0 to v{len(MIGRATIONS)}" in migrated.stdout
    again = run_cli(["server", "migrate"], cwd=app, env=env)
    assert f"already at v{len(MIGRATIONS)}" in again.stdout
    ran = run_cli(["run", "hello", "--env", "development"], cwd=app, env=env)
    assert ran.exit_code == 0, ran.stderr
    listed = run_cli(["runs", "--json"], cwd=app, env=env)
    assert '"task": "hello"' in listed.stdout
    verified = run_cli(["audit", "verify"], cwd=app, env=env)
    assert verified.exit_code == 0, verified.stderr
    assert not (app / ".oneoff" / "state.db").exists()  # nothing went to SQLite


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    """A database migrated by a newer oneoff is refused rather than misread."""
    import psycopg

    from oneoff._store.postgres import PostgresStore, migrate

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE oneoff_schema SET version = version + 1")
    with pytest.raises(StoreError, match="newer than this oneoff"):
        PostgresStore(pg_url)
    with pytest.raises(StoreError, match="newer than this oneoff"):
        migrate(pg_url)


def test_the_store_url_password_is_never_shown(app: Path, cli_env: dict[str, str]) -> None:
    """A store that cannot be reached is exit 7 naming it without its password."""
    url = "postgresql://alice:hunter2-s3cret@/oneoff?host=/nonexistent-socket-dir"
    result = run_cli(["runs"], cwd=app, env={**cli_env, "ONEOFF_STORE_URL": url})
    assert result.exit_code == 7, result.stderr
    assert "cannot reach the store" in result.stderr
    assert "postgresql://alice@/oneoff?host=/nonexistent-socket-dir" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    verbose = run_cli(["-v", "runs"], cwd=app, env={**cli_env, "ONEOFF_STORE_URL": url})
    assert "hunter2" not in verbose.stderr + verbose.stdout


def test_a_store_url_that_is_not_postgresql_is_bad_input(
    app: Path, cli_env: dict[str, str]
) -> None:
    """Only postgresql:// URLs select a store; anything else is refused, not guessed at."""
    result = run_cli(["runs"], cwd=app, env={**cli_env, "ONEOFF_STORE_URL": "mysql://x/y"})
    assert result.exit_code == 2
    assert "must be a postgresql:// URL" in result.stderr
    manifest = app / "oneoff.toml"
    manifest.write_text(manifest.read_text() + '\n[store]\nurl = "sqlite:///x"\n')
    result = run_cli(["runs"], cwd=app, env=cli_env)
    assert result.exit_code == 2
    assert "[store] url must be a postgresql:// URL" in result.stderr


def test_a_missing_driver_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg the PostgreSQL store names the extra to install."""
    from oneoff._store.postgres import import_driver

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match="needs psycopg 3") as raised:
        import_driver()
    assert raised.value.hint == "pip install 'oneoff[postgres]'"


def test_the_cli_path_does_not_import_the_driver(cli_env: dict[str, str]) -> None:
    """psycopg stays off the CLI's import path unless a PostgreSQL store is used."""
    import subprocess

    code = "import sys, oneoff.cli; oneoff.cli.main(['--version']); print('psycopg' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    )
    assert out.stdout.strip().endswith("False")


def test_a_database_error_caught_inside_a_transaction_still_dooms_it(pg_url: str) -> None:
    """PostgreSQL aborts a transaction on a failed statement: commit says so, instead of
    silently dropping the writes made before it."""
    import psycopg

    from oneoff._store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:

        def swallow_a_failure() -> None:
            with store.tx():
                store.create_run(record("r1"))
                with contextlib.suppress(psycopg.errors.DivisionByZero):
                    store.db.execute("SELECT 1/0")

        with pytest.raises(StoreError, match="nothing was written"):
            swallow_a_failure()
        assert store.list_runs() == []
        with store.tx():
            store.create_run(record("r2"))
        assert [r.id for r in store.list_runs()] == ["r2"]
    finally:
        store.close()


def test_a_lost_connection_is_a_store_error_and_the_next_one_works(pg_url: str) -> None:
    """A connection the server dropped is exit 7 once; the store then takes a fresh one."""
    import psycopg

    from oneoff._store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        pid = store.db.info.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        def write() -> None:
            with store.tx():
                store.create_run(record("r1"))

        with pytest.raises(StoreError, match=r"cannot reach the store|terminat"):
            write()
        write()
        assert store.get_run("r1").id == "r1"
    finally:
        store.close()


def test_writers_wait_for_each_other_up_to_the_lock_timeout(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer held up past lock_timeout by another is a clear error, and leaves nothing open."""
    import oneoff._store.postgres as backend
    from oneoff._store.postgres import PostgresStore

    monkeypatch.setattr(backend, "LOCK_TIMEOUT_MS", 100)
    holder, waiter = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        with holder.tx():
            holder.create_run(record("r1"))
            with pytest.raises(StoreError, match="stayed locked by another runner"), waiter.tx():
                pass
        with waiter.tx():  # free again
            waiter.create_run(record("r2"))
        assert {r.id for r in waiter.list_runs()} == {"r1", "r2"}
    finally:
        holder.close()
        waiter.close()


def test_server_migrate_reads_the_url_from_the_manifest_or_says_there_is_none(
    pg_server: object, app: Path, cli_env: dict[str, str]
) -> None:
    """`server migrate` takes [store] url from the app; without any URL it is bad input."""
    env = {k: v for k, v in cli_env.items() if k != "ONEOFF_STORE_URL"}
    none = run_cli(["server", "migrate"], cwd=app, env=env)
    assert none.exit_code == 2
    assert "no PostgreSQL store to migrate" in none.stderr
    url = pg_server.database()  # type: ignore[attr-defined]
    manifest = app / "oneoff.toml"
    manifest.write_text(manifest.read_text() + f'\n[store]\nurl = "{url}"\n')
    migrated = run_cli(["server", "migrate"], cwd=app, env=env)
    assert migrated.exit_code == 0, migrated.stderr
    assert f"migrated from v0 to v{len(MIGRATIONS)}" in migrated.stdout
    assert run_cli(["run", "hello", "--env", "development"], cwd=app, env=env).exit_code == 0
    assert not (app / ".oneoff" / "state.db").exists()
