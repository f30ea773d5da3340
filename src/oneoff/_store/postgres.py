"""The PostgreSQL store, for a team: many runners and servers on one database.

Needs the ``postgres`` extra (psycopg 3 and psycopg_pool); chosen by a store URL
(``postgresql://...``, see ``oneoff._store.select``). Each process keeps one connection
pool per URL; a ``PostgresStore`` holds one connection of it until ``close()``, and
``connect_again()`` takes another one for another thread.

Transactions follow the SQLite store's rules exactly (one contract test suite checks both):
every write transaction first takes one advisory lock, so writers are serialized across
every process and machine as SQLite's ``BEGIN IMMEDIATE`` serializes them on one machine.
That is what keeps check-then-write sequences (a lock's holders, then the lease; the
audit head, then the next event) free of races, and the audit chain from ever forking.
Commits are durable: ``synchronous_commit`` is forced on for oneoff's connections.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from oneoff._store.postgres_access import AccessMixin
from oneoff._store.postgres_audit import GENESIS, HEAD_SQL, AuditMixin
from oneoff._store.postgres_errors import display_url, is_a_bug, store_error, translate_errors
from oneoff._store.postgres_locks import LocksMixin
from oneoff._store.postgres_output import OutputMixin
from oneoff._store.postgres_releases import ReleasesMixin
from oneoff._store.postgres_runs import RunsMixin
from oneoff._store.postgres_schema import MIGRATIONS, WRITE_LOCK, schema_version
from oneoff.errors import StoreError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from oneoff._store.interface import Store

__all__ = ["PostgresStore", "import_driver"]

#: How long a writer waits for the write lock (or any row lock) before giving up.
LOCK_TIMEOUT_MS = 10_000
#: How long opening a connection (or waiting for a free one in the pool) may take.
CONNECT_TIMEOUT_S = 10
POOL_MAX = 10

_pools: dict[str, tuple[ConnectionPool[Any], int]] = {}
_pools_lock = threading.Lock()


def import_driver() -> None:
    """Import psycopg and psycopg_pool, or say how to install them."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StoreError(
            f"a postgresql:// store needs psycopg 3 and psycopg_pool ({exc.msg})",
            hint="pip install 'oneoff[postgres]'",
        ) from None


def _settings() -> dict[str, Any]:
    return {
        "autocommit": True,  # reads stand alone; writes are explicit transactions (tx())
        "application_name": "oneoff",
        "connect_timeout": CONNECT_TIMEOUT_S,
        # Durability is part of the contract, whatever the server's default says.
        "options": "-c synchronous_commit=on",
    }


def check_schema(url: str) -> None:
    """Refuse an unmigrated, older or newer schema with a message saying what to do."""
    import psycopg

    try:
        with psycopg.connect(url, **_settings()) as conn:
            version = schema_version(conn)
    except psycopg.Error as exc:
        raise store_error(url, exc) from None
    where = display_url(url)
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{where}: store schema v{version} is newer than this oneoff "
            f"(knows v{len(MIGRATIONS)}); upgrade oneoff"
        )
    if version < len(MIGRATIONS):
        state = "not set up for oneoff" if version == 0 else f"at schema v{version}"
        raise StoreError(
            f"{where}: the database is {state} (this oneoff needs v{len(MIGRATIONS)})",
            hint="run `oneoff server migrate` (with the same store URL) once",
        )


def _take_pool(url: str) -> ConnectionPool[Any]:
    import logging

    from psycopg_pool import ConnectionPool

    # The pool logs its background reconnection attempts; errors reach the caller as
    # StoreError instead, so keep them off the terminal (Python's last-resort handler).
    quiet = logging.getLogger("psycopg")
    if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
        quiet.addHandler(logging.NullHandler())
    with _pools_lock:
        pool, users = _pools.get(url, (None, 0))
        if pool is None:
            check_schema(url)  # a clear error now, rather than a pool retrying in vain
            pool = ConnectionPool(
                url, kwargs=_settings(), min_size=1, max_size=POOL_MAX, open=True,
                timeout=CONNECT_TIMEOUT_S, name="oneoff",
                # A pooled connection the database dropped meanwhile (it restarted) is
                # checked and replaced before it is handed out.
                check=ConnectionPool.check_connection,
            )  # fmt: skip
        _pools[url] = (pool, users + 1)
        return pool


def _give_pool(url: str) -> None:
    with _pools_lock:
        pool, users = _pools[url]
        if users > 1:
            _pools[url] = (pool, users - 1)
            return
        del _pools[url]
    pool.close()


# One mixin per area, mirroring the SQLite store's split.
@translate_errors
class PostgresStore(RunsMixin, OutputMixin, AuditMixin, ReleasesMixin, AccessMixin, LocksMixin):
    """A store in one PostgreSQL database, safe for many processes on many machines."""

    def __init__(self, url: str) -> None:
        import_driver()
        import psycopg
        from psycopg_pool import PoolTimeout

        self.url = url
        self.path = display_url(url)  # what messages call this store
        self._depth = 0
        self._read_head = False
        self._begun_head: tuple[int, bytes] = (0, GENESIS)
        self._closed = False
        self._pool = _take_pool(url)
        try:
            self.db: psycopg.Connection[tuple[Any, ...]] = self._pool.getconn()
        except psycopg.Error as exc:
            _give_pool(url)
            raise store_error(url, exc) from None
        except PoolTimeout:
            _give_pool(url)
            raise StoreError(
                f"{self.path}: cannot reach the store (no connection within "
                f"{CONNECT_TIMEOUT_S}s; every pooled one busy?)"
            ) from None

    @contextlib.contextmanager
    def tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One write transaction under the store-wide write lock: all of it lands, or none.
        Inside another one it joins it. A database error caught inside it still dooms it
        (PostgreSQL aborts the transaction): its commit then fails instead of dropping
        the writes silently."""
        import psycopg
        from psycopg.pq import TransactionStatus

        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self._recover()
        if self.db.info.transaction_status != TransactionStatus.IDLE:
            raise StoreError(f"{self.path}: a failed transaction is still open; not writing")
        try:
            # One round trip: begin, bound the wait, take the write lock (and read the
            # audit head under it, for tx_reading_head).
            cur = self.db.execute(
                f"BEGIN; SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)};"
                f" SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                + (f"; {HEAD_SQL}" if self._read_head else "")
            )
            if self._read_head:
                while cur.nextset():  # the last statement's result: the head's row
                    pass
                row = cur.fetchone()
                self._begun_head = (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error, StoreError):
                self._abandon()
            raise store_error(self.url, exc) from None
        self._depth = 1
        try:
            yield self.db
        except Exception as exc:
            try:
                self._abandon()
            except psycopg.Error as failed:
                raise store_error(self.url, failed) from exc
            raise
        except BaseException:  # an interrupt stays what it is
            with contextlib.suppress(psycopg.Error, StoreError):
                self._abandon()
            raise
        else:
            self._commit()
        finally:
            self._depth = 0

    @contextlib.contextmanager
    def tx_reading_head(self) -> Iterator[tuple[int, bytes]]:
        """A new ``tx()`` whose first round trip also reads the audit head ``(seq, hash)``
        under the write lock: the group commit's leader needs both, one round trip less per
        batch. Not inside another transaction."""
        if self._depth:
            raise StoreError(f"{self.path}: tx_reading_head inside a transaction")
        self._read_head = True
        try:
            with self.tx():
                self._read_head = False
                yield self._begun_head
        finally:
            self._read_head = False

    def _commit(self) -> None:
        import psycopg
        from psycopg.pq import TransactionStatus

        if self.db.info.transaction_status == TransactionStatus.INERROR:
            with contextlib.suppress(psycopg.Error, StoreError):
                self._abandon()
            raise StoreError(
                f"{self.path}: a statement failed inside the transaction; nothing was written"
            )
        try:
            self.db.execute("COMMIT")
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error, StoreError):
                self._abandon()
            if is_a_bug(exc):
                raise
            raise store_error(self.url, exc) from None

    def _abandon(self) -> None:
        """End a transaction that cannot commit: roll it back, or, when the connection is
        gone, swap it for a fresh one from the pool (the pool discards the broken one)."""
        import psycopg
        from psycopg.pq import TransactionStatus

        status = self.db.info.transaction_status
        if status == TransactionStatus.IDLE:
            return
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                self.db.execute("ROLLBACK")
                return
            except psycopg.Error:
                pass
        broken, self.db = self.db, _Lost(self.path)  # type: ignore[assignment]
        self._pool.putconn(broken)
        try:
            self.db = self._pool.getconn()
        except Exception:
            raise StoreError(
                f"{self.path}: the connection to the store was lost and no new one could be "
                "made; run again"
            ) from None

    def _recover(self) -> None:
        """Swap a connection the database dropped (it restarted, or failed over) for a
        fresh one before the next use, outside any transaction: the store works again once
        the database is back, instead of failing for as long as it stays open (the team
        server's stores stay open for days)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        db = self.db
        if self._closed or self._depth or not (isinstance(db, _Lost) or db.broken or db.closed):
            return
        self.db = _Lost(self.path)  # type: ignore[assignment]
        if not isinstance(db, _Lost):
            with contextlib.suppress(Exception):
                self._pool.putconn(db)  # the pool discards a broken connection
        try:
            self.db = self._pool.getconn()
        except (psycopg.Error, PoolTimeout):
            raise StoreError(f"{self.path}: cannot reach the store (connection lost)") from None

    def connect_again(self) -> PostgresStore:
        """Another connection from the same pool, for another thread."""
        return PostgresStore(self.url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        db, self.db = self.db, _Lost(self.path)  # type: ignore[assignment]
        if not isinstance(db, _Lost):
            self._pool.putconn(db)
        _give_pool(self.url)


class _Lost:
    """Stands in for a connection that was closed, or failed and could not be replaced."""

    def __init__(self, where: str) -> None:
        self._where = where

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise StoreError(f"{self._where}: the connection to the store was lost; run again")


def migrate(url: str) -> tuple[int, int]:
    """Apply every pending migration to the database at ``url``; ``(before, after)``."""
    import_driver()
    import psycopg

    from oneoff._store.postgres_schema import apply_migrations

    try:
        with psycopg.connect(url, **_settings()) as conn:
            return apply_migrations(conn)
    except psycopg.Error as exc:
        raise store_error(url, exc) from None


if TYPE_CHECKING:  # mypy proves the PostgreSQL store is a whole Store
    _IS_A_STORE: type[Store] = PostgresStore
