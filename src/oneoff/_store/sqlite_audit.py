"""Audit events and checkpoints in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneoff._audit.log import AuditEvent

__all__ = ["AuditMixin"]

_EVENT_COLUMNS = (
    "seq, ts, kind, actor, environment, task, run_id, release_id, plan_hash, payload,"
    " prev_hash, hash"
)


class AuditMixin:
    db: sqlite3.Connection
    tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def audit_head(self) -> tuple[int, bytes]:
        from oneoff._audit.log import GENESIS

        row = self.db.execute(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def audit_append(self, build: Callable[[int, bytes], AuditEvent]) -> AuditEvent:
        # BEGIN IMMEDIATE takes the write lock before reading the head, so two runners
        # can never both append after the same event.
        with self.tx():
            seq, head = self.audit_head()
            event = build(seq, head)
            self.db.execute(
                f"INSERT INTO audit_events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                _event_row(event),
            )
        return event

    def audit_events(self, *, since: int = 0) -> Iterator[AuditEvent]:
        from oneoff._audit.log import event_from_row

        cursor = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq",  # noqa: S608
            (since,),
        )
        while rows := cursor.fetchmany(4096):
            for row in rows:
                yield event_from_row(tuple(row))


def _event_row(event: AuditEvent) -> tuple[Any, ...]:
    return (
        event.seq, event.ts, event.kind, event.actor, event.environment, event.task,
        event.run_id, event.release_id, event.plan_hash,
        json.dumps(dict(event.payload), sort_keys=True, separators=(",", ":")),
        event.prev_hash, event.hash,
    )  # fmt: skip
