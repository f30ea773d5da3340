"""The embedded SQLite store (WAL, versioned schema, forward migrations)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff._store._schema import MIGRATIONS
from oneoff._store.sqlite_access import AccessMixin
from oneoff._store.sqlite_audit import AuditMixin
from oneoff._store.sqlite_errors import is_a_bug, store_error, translate_errors
from oneoff._store.sqlite_locks import LocksMixin
from oneoff._store.sqlite_output import OutputMixin
from oneoff._store.sqlite_releases import ReleasesMixin
from oneoff._store.sqlite_runs import RunsMixin
from oneoff.errors import StoreError

if TYPE_CHECKING:
    from oneoff._store.interface import Store

__all__ = ["SQLiteStore"]

BUSY_TIMEOUT_MS = 10_000


# One mixin per area keeps each file small; PostgreSQL will mirror the same split.
@translate_errors
class SQLiteStore(RunsMixin, OutputMixin, AuditMixin, ReleasesMixin, AccessMixin, LocksMixin):
    """A store in one SQLite file, safe for several runners on one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._depth = 0  # tx() nesting: inner ones join the outermost
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.db = self._connect(fresh=not path.exists())
            try:
                self._migrate()
            except BaseException:
                self.db.close()
                raise
        except sqlite3.Error as exc:
            raise store_error(path, exc) from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the store ({exc.strerror or exc})") from None

    def _connect(self, *, fresh: bool = False) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a writer
        # takes the write lock up front and never fails half-way on upgrade.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            if fresh:
                os.chmod(self.path, 0o600)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = _journal_mode_wal(db)
            # FULL: a committed run or audit event survives a power cut (~0.2 ms a commit).
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.path}: could not enable WAL journaling")
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: store schema v{version} is newer than this oneoff "
                f"(knows v{len(MIGRATIONS)}); upgrade oneoff"
            )
        if version == len(MIGRATIONS):
            return
        with self.tx():
            # Re-read under the write lock: another runner may have migrated meanwhile.
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
            for number in range(version, len(MIGRATIONS)):
                for statement in _statements(MIGRATIONS[number]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it. Inside another one it
        joins it (a run's row and its audit event commit together, with one fsync)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        if self.db.in_transaction:  # a COMMIT or ROLLBACK that failed left one open
            raise StoreError(f"{self.path}: a failed transaction is still open; not writing")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None
        self._depth = 1
        try:
            yield self.db
        except Exception as exc:
            try:
                self._abandon()
            except sqlite3.Error as failed:
                raise store_error(self.path, failed) from exc
            raise
        except BaseException:  # an interrupt stays what it is
            with contextlib.suppress(sqlite3.Error, StoreError):
                self._abandon()
            raise
        else:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                # SQLite may keep the transaction, and its write lock, after a failed
                # COMMIT (a full disk, an I/O error): end it, or every writer would wait.
                with contextlib.suppress(sqlite3.Error, StoreError):
                    self._abandon()
                if is_a_bug(exc):
                    raise
                raise store_error(self.path, exc) from None
        finally:
            self._depth = 0

    def _abandon(self) -> None:
        """End a transaction that cannot commit: roll it back (SQLite may have already),
        or, when even that fails, drop the connection (its locks go with it) for a new one."""
        if not _still_open(self.db):
            return
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            try:
                self.db = self._connect()
            except BaseException:
                # No usable connection: every later use says so (a StoreError, exit 7)
                # instead of failing on a closed one as if it were a bug.
                self.db = _Lost(self.path)  # type: ignore[assignment]
                raise

    def connect_again(self) -> SQLiteStore:
        """A new connection to the same file; call it from the thread that will use it
        (sqlite3 connections belong to one thread)."""
        return SQLiteStore(self.path)

    def close(self) -> None:
        self.db.close()


class _Lost:
    """Stands in for a connection that failed and could not be replaced."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise StoreError(f"{self._path}: the connection to the store was lost; run again")


def _journal_mode_wal(db: sqlite3.Connection) -> Any:
    """Switch to WAL (kept in the file, so usually already on). While another process is
    switching a new store, SQLite answers "database is locked" at once instead of waiting
    out the busy timeout: retry until that timeout instead."""
    mode = db.execute("PRAGMA journal_mode").fetchone()
    if mode is not None and str(mode[0]).lower() == "wal":
        return mode
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return db.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _still_open(db: sqlite3.Connection) -> bool:
    return db.in_transaction


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on ';' (the schema has no
    # semicolons inside literals or triggers).
    return [s.strip() for s in script.split(";") if s.strip()]


if TYPE_CHECKING:  # mypy proves the SQLite store is a whole Store
    _IS_A_STORE: type[Store] = SQLiteStore
