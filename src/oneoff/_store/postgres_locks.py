"""Named resource leases (locks) in PostgreSQL: taken all at once, renewed, released."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._store.interface import LockRecord

if TYPE_CHECKING:
    import psycopg

__all__ = ["LocksMixin"]

_COLUMNS = "name, run_id, holder, runner_host, runner_pid, acquired_at, expires_at"


class LocksMixin:
    db: psycopg.Connection[tuple[Any, ...]]

    def lock_holders(self, names: Sequence[str] | None = None) -> Sequence[LockRecord]:
        sql = f"SELECT {_COLUMNS} FROM locks"  # noqa: S608
        args: tuple[Any, ...] = ()
        if names is not None:
            sql += " WHERE name = ANY(%s)"
            args = (list(names),)
        rows = self.db.execute(sql + " ORDER BY name", args).fetchall()
        return [LockRecord(*r) for r in rows]

    def take_locks(self, locks: Sequence[LockRecord]) -> None:
        """Insert lease rows; call inside tx() after checking ``lock_holders`` is empty."""
        with self.db.cursor() as cur:
            cur.executemany(
                f"INSERT INTO locks ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
                [
                    (x.name, x.run_id, x.holder, x.runner_host, x.runner_pid, x.acquired_at,
                     x.expires_at)
                    for x in locks
                ],
            )  # fmt: skip

    def renew_locks(self, run_id: str, expires_at: str) -> int:
        """Extend this run's leases; the count renewed (0: the leases were taken away)."""
        cur = self.db.execute(
            "UPDATE locks SET expires_at = %s WHERE run_id = %s", (expires_at, run_id)
        )
        return cur.rowcount

    def drop_locks(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """Release a run's leases (all, or only ``names``)."""
        if names is None:
            cur = self.db.execute("DELETE FROM locks WHERE run_id = %s", (run_id,))
        else:
            cur = self.db.execute(
                "DELETE FROM locks WHERE run_id = %s AND name = ANY(%s)", (run_id, list(names))
            )
        return cur.rowcount
