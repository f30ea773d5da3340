"""Audit events and checkpoints in PostgreSQL.

Only ``seq``, ``prev_hash``, ``body`` and ``hash`` of an event are stored; filters by run or
kind decode the body as they read it, so nothing can disagree with what the chain hashes.
Appends take the store-wide write lock (see ``oneoff._store.postgres``) before reading the
head, so appends from any number of processes and machines never fork the chain; the
primary key on ``seq`` would refuse a fork even if they did not. Appends outside a
transaction are group-committed (``oneoff._store.postgres_group``): concurrent ones share
one transaction and one WAL flush.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from oneoff._store.postgres_group import group_for
from oneoff._store.sqlite_audit import checkpoint_from_row
from oneoff.errors import AuditError

if TYPE_CHECKING:
    import psycopg

    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._audit.log import AuditEvent

__all__ = ["AuditMixin"]

_FETCH = 4096
_HASH = 32
GENESIS = b"\x00" * _HASH
HEAD_SQL = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
_CHECKPOINT = "SELECT size, root, timestamp, key_id, signature, frontier FROM audit_checkpoints"


def _matches(body: object, run_id: str | None, kind: str | None) -> bool:
    try:
        data = json.loads(body)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False  # as SQLite's computed columns: NULL for a body that is not JSON
    if not isinstance(data, dict):
        return False
    return (run_id is None or data.get("run_id") == run_id) and (
        kind is None or data.get("kind") == kind
    )


class AuditMixin:
    url: str
    _depth: int
    db: psycopg.Connection[tuple[Any, ...]]
    tx: Callable[[], AbstractContextManager[object]]
    tx_reading_head: Callable[[], AbstractContextManager[tuple[int, bytes]]]

    def audit_head(self) -> tuple[int, bytes]:
        """``(seq, hash)`` of the newest event, ``(0, GENESIS)`` for an empty log."""
        row = self.db.execute(HEAD_SQL).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def audit_append(self, build: Callable[[int, bytes], AuditEvent]) -> AuditEvent:
        return self.audit_append_all([build])[0]

    def audit_append_all(
        self, builds: Sequence[Callable[[int, bytes], AuditEvent]]
    ) -> list[AuditEvent]:
        if not self._depth:
            # Standing alone: share a commit with whatever else is being appended now.
            return group_for(self.url).append_all(self, builds)
        with self.tx():  # joins the caller's transaction: lands (or not) with it
            return self._append_in_tx(builds)

    def audit_append_with(
        self, write: Callable[[Any], Sequence[Callable[[int, bytes], AuditEvent]]]
    ) -> list[AuditEvent]:
        if not self._depth:
            # The writes ride the group commit's transaction, on its leader's connection.
            return group_for(self.url).append_with(self, write)
        with self.tx():
            return self._append_in_tx(write(self))

    def _append_in_tx(
        self, builds: Sequence[Callable[[int, bytes], AuditEvent]]
    ) -> list[AuditEvent]:
        events: list[AuditEvent] = []
        if not builds:
            return events
        seq, head = self.audit_head()
        for build in builds:
            event = build(seq, head)
            self.db.execute(
                "INSERT INTO audit_events (seq, prev_hash, body, hash) VALUES (%s, %s, %s, %s)",
                (event.seq, event.prev_hash, event.body, event.hash),
            )
            events.append(event)
            seq, head = event.seq, event.hash
        return events

    def _pages(self, columns: str, since: int) -> Iterator[tuple[Any, ...]]:
        # Keyset pages: bounded memory, and no long transaction held open while iterating.
        last = since
        while True:
            rows = self.db.execute(
                f"SELECT seq, {columns} FROM audit_events WHERE seq > %s"  # noqa: S608
                " ORDER BY seq LIMIT %s",
                (last, _FETCH),
            ).fetchall()
            yield from rows
            if len(rows) < _FETCH:
                return
            last = rows[-1][0]

    def audit_rows(
        self, *, since: int = 0, run_id: str | None = None, kind: str | None = None
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """Raw ``(seq, prev_hash, body, hash)`` rows after ``since``, in order."""
        for row in self._pages("prev_hash, body, hash", since):
            if (run_id is None and kind is None) or _matches(row[2], run_id, kind):
                yield row

    def audit_chain_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every event's ``(prev_hash, body, hash)`` in order, as stored (types unchecked)."""
        for row in self._pages("prev_hash, body, hash", 0):
            yield row[1:]

    def audit_chain_pages(self) -> Iterator[list[tuple[Any, ...]]]:
        """``audit_chain_rows``, a list of rows at a time (for ``audit verify``'s hot loop)."""
        page: list[tuple[Any, ...]] = []
        for row in self._pages("prev_hash, body, hash", 0):
            page.append(row[1:])
            if len(page) == _FETCH:
                yield page
                page = []
        if page:
            yield page

    def audit_first_gap(self, counted: int | None = None) -> int | None:
        """The first missing event number, or None when events are numbered 1..n."""
        row = self.db.execute("SELECT count(*), min(seq), max(seq) FROM audit_events").fetchone()
        assert row is not None  # an aggregate always returns a row
        count, low, high = row
        if count == 0 or (low == 1 and high == count):
            return None  # n distinct integers from 1 to n: exactly 1..n
        found = self.db.execute(
            "SELECT n FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS n"
            " FROM audit_events) numbered WHERE seq <> n ORDER BY n LIMIT 1"
        ).fetchone()
        return int(count) + 1 if found is None else int(found[0])

    def audit_hash_at(self, seq: int) -> bytes:
        if seq == 0:
            return b"\x00" * _HASH
        row = self.db.execute("SELECT hash FROM audit_events WHERE seq = %s", (seq,)).fetchone()
        if row is None:
            raise AuditError(f"audit event {seq} is missing")
        return bytes(row[0])

    def audit_leaf_hashes(self, size: int) -> list[bytes]:
        """The hashes (Merkle leaves) of events 1..size; AuditError if any is missing."""
        rows = self.db.execute(
            "SELECT seq, hash FROM audit_events WHERE seq <= %s ORDER BY seq", (size,)
        ).fetchall()
        if len(rows) != size or (rows and rows[-1][0] != size):
            raise AuditError(f"the audit log does not hold events 1..{size}; run `audit verify`")
        return [r[1] if type(r[1]) is bytes else b"" for r in rows]

    def audit_put_checkpoint(self, cp: Checkpoint, frontier: tuple[bytes, ...]) -> None:
        self.db.execute(
            "INSERT INTO audit_checkpoints (size, root, timestamp, key_id, signature, frontier)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (cp.size, cp.root, cp.timestamp, cp.key_id, cp.signature, b"".join(frontier)),
        )

    def audit_checkpoint_rows(self, *, size: int | None = None) -> list[tuple[Any, ...]]:
        """Raw checkpoint rows ``(size, root, timestamp, key_id, signature, frontier)``."""
        if size is None:
            return self.db.execute(_CHECKPOINT + " ORDER BY size").fetchall()
        return self.db.execute(_CHECKPOINT + " WHERE size = %s", (size,)).fetchall()

    def audit_checkpoint_states(self, key_id: str) -> list[tuple[Any, ...]]:
        """``(size, frontier)`` of every checkpoint row, by size; frontier None for a row that
        is malformed or names another key than ``key_id`` (parse it for the reason)."""
        from oneoff._audit.checkpoint import MAX_TIMESTAMP, SIGNATURE_SIZE

        # The columns' types are the schema's; their sizes and the key are checked here.
        return self.db.execute(
            "SELECT size, CASE WHEN size >= 0 AND length(root) = %s"
            " AND timestamp BETWEEN 0 AND %s AND key_id = %s AND length(signature) = %s"
            " THEN frontier END FROM audit_checkpoints ORDER BY size",
            (_HASH, MAX_TIMESTAMP, key_id, SIGNATURE_SIZE),
        ).fetchall()

    def audit_checkpoint_rows_at(self, sizes: Sequence[int]) -> list[tuple[Any, ...]]:
        """The raw rows of the checkpoints of ``sizes`` (those that exist), by size."""
        return self.db.execute(
            _CHECKPOINT + " WHERE size = ANY(%s) ORDER BY size", (list(sizes),)
        ).fetchall()

    def audit_latest_checkpoint(self) -> tuple[Checkpoint, tuple[bytes, ...]] | None:
        row = self.db.execute(_CHECKPOINT + " ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else checkpoint_from_row(row)

    def audit_put_cosignature(
        self, size: int, witness_key_id: str, timestamp: int, signature: bytes
    ) -> bool:
        cur = self.db.execute(
            "INSERT INTO audit_cosignatures (size, witness_key_id, timestamp, signature)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (size, witness_key_id, timestamp, signature),
        )
        return cur.rowcount == 1

    def audit_cosignature_rows(self) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT size, witness_key_id, timestamp, signature FROM audit_cosignatures"
            " ORDER BY size DESC, witness_key_id"
        ).fetchall()
