"""Named resource leases (locks) in SQLite: taken all at once, renewed, released."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from oneoff._store.interface import LockRecord

__all__ = ["LocksMixin"]

_COLUMNS = "name, run_id, holder, runner_host, runner_pid, acquired_at, expires_at"


class LocksMixin:
    db: sqlite3.Connection

    def lock_holders(self, names: Sequence[str] | None = None) -> Sequence[LockRecord]:
        sql = f"SELECT {_COLUMNS} FROM locks"  # noqa: S608
        args: tuple[str, ...] = ()
        if names is not None:
            sql += f" WHERE name IN ({', '.join('?' for _ in names)})"
            args = tuple(names)
        rows = self.db.execute(sql + " ORDER BY name", args).fetchall()
        return [LockRecord(*r) for r in rows]

    def take_locks(self, locks: Sequence[LockRecord]) -> None:
        """Insert lease rows; call inside tx() after checking ``lock_holders`` is empty."""
        self.db.executemany(
            f"INSERT INTO locks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",  # noqa: S608
            [
                (
                    x.name,
                    x.run_id,
                    x.holder,
                    x.runner_host,
                    x.runner_pid,
                    x.acquired_at,
                    x.expires_at,
                )
                for x in locks
            ],
        )

    def renew_locks(self, run_id: str, expires_at: str) -> int:
        """Extend this run's leases; the count renewed (0: the leases were taken away)."""
        cur = self.db.execute(
            "UPDATE locks SET expires_at = ? WHERE run_id = ?", (expires_at, run_id)
        )
        return cur.rowcount

    def drop_locks(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """Release a run's leases (all, or only ``names``)."""
        if names is None:
            cur = self.db.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
        else:
            marks = ", ".join("?" for _ in names)
            cur = self.db.execute(
                f"DELETE FROM locks WHERE run_id = ? AND name IN ({marks})",  # noqa: S608
                (run_id, *names),
            )
        return cur.rowcount
