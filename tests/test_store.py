"""The SQLite store: versioned schema, fail-closed on corruption, safe under concurrency.

What every backend must do is in tests/test_store_contract.py; this file holds what is
SQLite's own (its file, WAL, damage to pages, busy timeouts)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from oneoff._store._schema import MIGRATIONS
from oneoff._store.interface import RunRecord
from oneoff._store.postgres import PostgresStore
from oneoff._store.sqlite import SQLiteStore
from oneoff.errors import StoreError, UsageError
from oneoff.testing import run_cli


def record(run_id: str, **kw: object) -> RunRecord:
    base: dict[str, object] = {
        "id": run_id, "task": "t", "environment": "dev", "params": {"a": "1"},
        "principal": "os:me", "plan_hash": "sha256:x", "status": "running",
        "started_at": "2026-01-01T00:00:00.000Z", "runner_host": "h", "runner_pid": 1,
        "runner_token": "1",
    }  # fmt: skip
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_fresh_store_is_migrated_private_and_wal(tmp_path: Path) -> None:
    """A new store has the latest schema, WAL journaling and owner-only permissions."""
    path = tmp_path / "s" / "state.db"
    store = SQLiteStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.stat().st_mode & 0o077 == 0
    store.close()


def test_a_store_before_the_audit_indexes_is_upgraded_and_uses_them(tmp_path: Path) -> None:
    """A store written before the audit indexes (schema v3) opens, gains them, keeps its
    events, and `export --run` / `--kind` read through them instead of every event."""
    from oneoff._audit.log import AuditLog

    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(";".join(MIGRATIONS[:3]) + "; PRAGMA user_version = 3;")
    old.close()
    store = SQLiteStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 4
    log = AuditLog(store)
    for n in range(5):
        log.append("run.started", actor="os:me", run_id=f"r{n}")
    log.append("run.break_glass", actor="os:me", run_id="r3")
    assert [e.seq for e in log.events(run_id="r3")] == [4, 6]
    assert [e.seq for e in log.events(kind="run.break_glass")] == [6]
    for column in ("run_id", "kind"):
        plan = store.db.execute(
            "EXPLAIN QUERY PLAN SELECT seq, prev_hash, body, hash FROM audit_events "
            f"WHERE seq > ? AND {column} = ? ORDER BY seq",  # the query audit_rows makes
            (0, "x"),
        ).fetchall()
        assert f"USING INDEX audit_events_{column}" in str(plan), plan
    store.close()


def test_run_ids_resolve_through_the_index(tmp_path: Path) -> None:
    """An exact run id and a prefix are both found through the primary key's index (a LIKE
    scanned the whole table); a prefix is case-sensitive, as ids are."""
    store = SQLiteStore(tmp_path / "state.db")
    with store.tx():
        store.create_run(record("rabc123"))
        store.create_run(record("rabc1234"))
    assert store.get_run("rabc123").id == "rabc123"  # exact, though also a prefix
    assert store.get_run("rabc1234").id == "rabc1234"
    with pytest.raises(UsageError, match="no run"):
        store.get_run("RABC")
    for sql in ("WHERE id = ?", "WHERE id > ? AND id < ? ORDER BY id LIMIT 2"):
        plan = store.db.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM runs {sql}", ("r",) * sql.count("?")
        ).fetchall()
        assert "USING INDEX sqlite_autoindex_runs_1" in str(plan), plan
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer oneoff is refused rather than misread."""
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this oneoff"):
        SQLiteStore(path)


def test_corrupt_store_is_a_clear_error(tmp_path: Path, app: Path, cli_env: dict[str, str]) -> None:
    """A store file full of garbage gives exit 7 and a message, not a traceback."""
    state = app / ".oneoff"
    state.mkdir()
    (state / "state.db").write_bytes(b"this is not a database" * 100)
    result = run_cli(["runs"], cwd=app, env=cli_env)
    assert result.exit_code == 7
    assert "corrupt" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_run_row_is_a_store_error(tmp_path: Path) -> None:
    """A run row whose params are not JSON is reported, not trusted."""
    store = SQLiteStore(tmp_path / "state.db")
    with store.tx():
        store.create_run(record("r1"))
    store.db.execute("UPDATE runs SET params = '{oops' WHERE id = 'r1'")
    with pytest.raises(StoreError, match="corrupt run row"):
        store.get_run("r1")


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_first_use_migrates_once(tmp_path: Path, round_: int) -> None:
    """Several processes opening a new store at once all succeed on one schema (one of
    them switching it to WAL made the others' switch fail at once, 1 time in ~30)."""
    path = tmp_path / "state.db"
    code = (
        "import sys; from pathlib import Path; from oneoff._store.sqlite import SQLiteStore;"
        f"SQLiteStore(Path({str(path)!r})).close()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(8)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 8
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


BACKENDS = [SQLiteStore, PostgresStore]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_provides_every_store_method_with_its_signature(backend: type) -> None:
    """The Store protocol is the whole contract: code outside oneoff._store sees only it."""
    import inspect

    from oneoff._store import interface

    areas = [c for c in interface.Store.__mro__ if c.__dict__.get("_is_protocol")]
    methods = {
        name: member
        for area in areas
        for name, member in vars(area).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    assert {"tx", "connect_again", "close", "create_run", "audit_append",
            "add_release", "take_locks", "add_output_chunks"} <= methods.keys()  # fmt: skip
    for name, declared in methods.items():
        provided = getattr(backend, name, None)
        assert callable(provided), f"{backend.__name__} lacks {name}"
        want, got = (
            [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]
            for f in (declared, provided)
        )
        assert got == want, f"{backend.__name__}.{name}: {got} != {want}"


def corrupt_table_root(db_path: Path, table: str) -> None:
    """Overwrite the b-tree header of ``table``'s root page: the file still opens, and only
    a query that reads that table finds the damage."""
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    db.close()
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 8)


@pytest.mark.parametrize(
    ("table", "argv"), [("runs", ["runs"]), ("audit_events", ["audit", "verify"])]
)
def test_damage_found_by_a_later_query_is_a_clear_error(
    app: Path, cli_env: dict[str, str], table: str, argv: list[str]
) -> None:
    assert run_cli(["run", "hello", "--env", "development"], cwd=app, env=cli_env).exit_code == 0
    corrupt_table_root(app / ".oneoff" / "state.db", table)
    result = run_cli(argv, cwd=app, env=cli_env)
    assert result.exit_code == 7, result.stderr
    assert "store unreadable (database disk image is malformed); is it corrupt?" in result.stderr
    assert "Traceback" not in result.stderr


def test_damage_found_while_iterating_is_a_store_error(tmp_path: Path) -> None:
    from oneoff._audit.log import AuditLog

    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    log = AuditLog(store)
    for i in range(200):  # several pages of events
        log.append("x", actor=f"os:{i}" * 20)
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.close()
    with open(path, "r+b") as f:  # a page near the end: found only while reading rows
        f.seek((pages - 1) * page_size)
        f.write(b"\xff" * 8)
    store = SQLiteStore(path)
    rows = store.audit_rows()
    with pytest.raises(StoreError, match="is it corrupt"):
        for _row in rows:
            pass
    store.close()


def test_a_store_locked_past_the_busy_timeout_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import oneoff._store.sqlite as backend

    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another runner, writing for a long time
    monkeypatch.setattr(backend, "BUSY_TIMEOUT_MS", 50)
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="stayed locked by another runner"), store.tx():
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with store.tx():  # free again: the failed attempt left nothing open
        store.create_run(record("r1"))
    store.close()


class FlakyWalSwitch:
    """A connection whose switch to WAL is refused ``refusals`` times with ``error``."""

    def __init__(self, refusals: int, error: str) -> None:
        self.refusals, self.error, self.calls = refusals, error, 0

    def execute(self, sql: str) -> sqlite3.Cursor:
        if sql == "PRAGMA journal_mode":
            return sqlite3.connect(":memory:").execute("SELECT 'delete'")
        self.calls += 1
        if self.calls <= self.refusals:
            raise sqlite3.OperationalError(self.error)
        return sqlite3.connect(":memory:").execute("SELECT 'wal'")


def test_a_refused_switch_to_wal_is_retried_only_while_locked() -> None:
    from oneoff._store.sqlite import _journal_mode_wal

    flaky = FlakyWalSwitch(3, "database is locked")
    assert _journal_mode_wal(flaky) == ("wal",)  # type: ignore[arg-type]
    assert flaky.calls == 4
    broken = FlakyWalSwitch(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _journal_mode_wal(broken)  # type: ignore[arg-type]
    assert broken.calls == 1


def test_a_switch_to_wal_locked_past_the_busy_timeout_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import oneoff._store.sqlite as backend

    monkeypatch.setattr(backend, "BUSY_TIMEOUT_MS", 30)
    stuck = FlakyWalSwitch(10**9, "database is locked")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        backend._journal_mode_wal(stuck)  # type: ignore[arg-type]
    assert 2 <= stuck.calls < 100


def test_misusing_a_connection_is_a_bug_not_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.get_run("r1")


def test_a_failed_commit_ends_its_transaction_and_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)

    def orphan_output() -> None:
        with store.tx():
            # Checked only at COMMIT, which fails and (SQLite's way) keeps the transaction.
            store.db.execute("PRAGMA defer_foreign_keys = ON")
            store.add_output_chunks("no-such-run", [(1, 1, 1, b"x")])

    with pytest.raises(StoreError, match="refused the write"):
        orphan_output()
    assert not store.db.in_transaction
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")  # the write lock is free again
    other.execute("ROLLBACK")
    other.close()
    with store.tx():
        store.create_run(record("r1"))
    assert list(store.output_chunks("no-such-run")) == []
    store.close()


def test_a_store_directory_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the store"):
        SQLiteStore(blocker / "state.db")


def test_a_connection_that_cannot_be_rolled_back_or_replaced_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    real = store.db

    class RollbackFails:
        in_transaction = True

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "ROLLBACK":
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

        def close(self) -> None:
            real.close()

    def cannot_reopen(**_kw: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    store.db = RollbackFails()  # type: ignore[assignment]
    monkeypatch.setattr(store, "_connect", cannot_reopen)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        store._abandon()
    # Every later use is a StoreError (exit 7), not a closed-connection traceback.
    with pytest.raises(StoreError, match="connection to the store was lost"):
        store.get_run("r1")
    with pytest.raises(StoreError, match="connection to the store was lost"), store.tx():
        pass
    store.close()
