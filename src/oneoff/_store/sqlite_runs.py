"""Run records in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, cast

from oneoff._store._prefix import row_by_id_or_prefix
from oneoff._store.interface import RunRecord, RunStatus
from oneoff.errors import StoreError

__all__ = ["RunsMixin"]

_COLUMNS = (
    "id", "task", "environment", "params", "principal", "release_id", "plan_hash", "status",
    "exit_code", "started_at", "ended_at", "runner_host", "runner_pid", "runner_token",
    "allow_drift", "request_id", "break_glass", "reason", "output_bytes", "output_digest",
    "output_truncated",
)  # fmt: skip
# Column names are the constants above, never user input.
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM runs"  # noqa: S608


class RunsMixin:
    db: sqlite3.Connection

    def create_run(self, run: RunRecord) -> None:
        row = _to_row(run)
        placeholders = ", ".join("?" for _ in _COLUMNS)
        columns = ", ".join(_COLUMNS)
        self.db.execute(f"INSERT INTO runs ({columns}) VALUES ({placeholders})", row)  # noqa: S608

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
            "UPDATE runs SET status = ?, exit_code = ?, ended_at = ?, output_bytes = ?,"
            " output_digest = ?, output_truncated = ? WHERE id = ? AND status = 'running'",
            (
                status,
                exit_code,
                ended_at,
                output_bytes,
                output_digest,
                int(output_truncated),
                run_id,
            ),
        )

    def get_run(self, run_id: str) -> RunRecord:
        return _from_row(row_by_id_or_prefix(self.db, _SELECT, run_id, "run"))

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
                where.append(f"{column} = ?")
                args.append(value)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        return [_from_row(r) for r in self.db.execute(sql, (*args, limit)).fetchall()]

    def running_runs(self) -> Sequence[RunRecord]:
        rows = self.db.execute(_SELECT + " WHERE status = 'running'").fetchall()
        return [_from_row(r) for r in rows]

    def mark_lost(self, run_id: str, *, ended_at: str) -> bool:
        cur = self.db.execute(
            "UPDATE runs SET status = 'lost', ended_at = ? WHERE id = ? AND status = 'running'",
            (ended_at, run_id),
        )
        return cur.rowcount == 1


def _to_row(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.id, run.task, run.environment, json.dumps(run.params, sort_keys=True),
        run.principal, run.release_id, run.plan_hash, run.status, run.exit_code,
        run.started_at, run.ended_at, run.runner_host, run.runner_pid, run.runner_token,
        int(run.allow_drift), run.request_id, int(run.break_glass), run.reason,
        run.output_bytes, run.output_digest, int(run.output_truncated),
    )  # fmt: skip


def _from_row(row: Sequence[Any]) -> RunRecord:
    try:
        values = dict(zip(_COLUMNS, row, strict=True))
        params = json.loads(values["params"])
        if not isinstance(params, dict):
            raise ValueError("params is not an object")
        return RunRecord(
            id=values["id"],
            task=values["task"],
            environment=values["environment"],
            params={str(k): str(v) for k, v in params.items()},
            principal=values["principal"],
            release_id=values["release_id"],
            plan_hash=values["plan_hash"],
            status=cast(RunStatus, values["status"]),
            exit_code=values["exit_code"],
            started_at=values["started_at"],
            ended_at=values["ended_at"],
            runner_host=values["runner_host"],
            runner_pid=int(values["runner_pid"]),
            runner_token=values["runner_token"],
            allow_drift=bool(values["allow_drift"]),
            request_id=values["request_id"],
            break_glass=bool(values["break_glass"]),
            reason=values["reason"],
            output_bytes=values["output_bytes"],
            output_digest=values["output_digest"],
            output_truncated=bool(values["output_truncated"]),
        )
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise StoreError(f"corrupt run row {row[0]!r}: {exc}") from None
