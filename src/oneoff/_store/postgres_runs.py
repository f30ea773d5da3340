"""Run records in PostgreSQL (the same rows as the SQLite store's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._store._prefix import row_by_id_or_prefix
from oneoff._store.interface import RunRecord, RunStatus
from oneoff._store.sqlite_runs import _COLUMNS, _from_row, _to_row

if TYPE_CHECKING:
    import psycopg

__all__ = ["RunsMixin"]

_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM runs"  # noqa: S608 - constant column names


class RunsMixin:
    db: psycopg.Connection[tuple[Any, ...]]

    def create_run(self, run: RunRecord) -> None:
        placeholders = ", ".join("%s" for _ in _COLUMNS)
        columns = ", ".join(_COLUMNS)
        self.db.execute(f"INSERT INTO runs ({columns}) VALUES ({placeholders})", _to_row(run))  # noqa: S608

    def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        exit_code: int | None,
        ended_at: str,
        output_bytes: int | None = None,
        output_digest: str | None = None,
        output_truncated: bool = False,
    ) -> None:
        self.db.execute(
            "UPDATE runs SET status = %s, exit_code = %s, ended_at = %s, output_bytes = %s,"
            " output_digest = %s, output_truncated = %s WHERE id = %s AND status = 'running'",
            (status, exit_code, ended_at, output_bytes, output_digest, int(output_truncated),
             run_id),
        )  # fmt: skip

    def get_run(self, run_id: str) -> RunRecord:
        return _from_row(row_by_id_or_prefix(self.db, _SELECT, run_id, "run", mark="%s"))

    def list_runs(
        self,
        *,
        limit: int = 20,
        task: str | None = None,
        environment: str | None = None,
        status: str | None = None,
    ) -> Sequence[RunRecord]:
        where, args = [], []
        for column, value in (("task", task), ("environment", environment), ("status", status)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC, id DESC LIMIT %s"
        return [_from_row(r) for r in self.db.execute(sql, (*args, limit)).fetchall()]

    def running_runs(self) -> Sequence[RunRecord]:
        rows = self.db.execute(_SELECT + " WHERE status = 'running'").fetchall()
        return [_from_row(r) for r in rows]

    def mark_lost(self, run_id: str, *, ended_at: str) -> bool:
        cur = self.db.execute(
            "UPDATE runs SET status = 'lost', ended_at = %s WHERE id = %s AND status = 'running'",
            (ended_at, run_id),
        )
        return cur.rowcount == 1
