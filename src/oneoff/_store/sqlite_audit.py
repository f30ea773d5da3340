"""Audit events and checkpoints in SQLite.

Only ``seq``, ``prev_hash``, ``body`` and ``hash`` of an event are stored; the filtering
columns are VIRTUAL, computed from ``body`` on read, so they cannot disagree with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from oneoff.errors import AuditError

if TYPE_CHECKING:
    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._audit.log import AuditEvent

__all__ = ["AuditMixin"]

_FETCH = 4096
#: Rows of a page of the chain: small enough to be hashed while still in the CPU cache.
_CHAIN_PAGE = 256
_HASH = 32
_CHECKPOINT = "SELECT size, root, timestamp, key_id, signature, frontier FROM audit_checkpoints"


class AuditMixin:
    db: sqlite3.Connection
    tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def audit_head(self) -> tuple[int, bytes]:
        """``(seq, hash)`` of the newest event, ``(0, GENESIS)`` for an empty log."""
        row = self.db.execute(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, b"\x00" * _HASH) if row is None else (int(row[0]), bytes(row[1]))

    def audit_append(self, build: Callable[[int, bytes], AuditEvent]) -> AuditEvent:
        return self.audit_append_all([build])[0]

    def audit_append_all(
        self, builds: Sequence[Callable[[int, bytes], AuditEvent]]
    ) -> list[AuditEvent]:
        # BEGIN IMMEDIATE takes the write lock before reading the head, so two runners
        # can never both append after the same event.
        with self.tx():
            return self._append_in_tx(builds)

    def audit_append_with(
        self, write: Callable[[Any], Sequence[Callable[[int, bytes], AuditEvent]]]
    ) -> list[AuditEvent]:
        with self.tx():  # one transaction: an error in write or the append undoes both
            return self._append_in_tx(write(self))

    def _append_in_tx(
        self, builds: Sequence[Callable[[int, bytes], AuditEvent]]
    ) -> list[AuditEvent]:
        events = []
        if builds:
            seq, head = self.audit_head()
        for build in builds:
            event = build(seq, head)
            self.db.execute(
                "INSERT INTO audit_events (seq, prev_hash, body, hash) VALUES (?, ?, ?, ?)",
                (event.seq, event.prev_hash, event.body, event.hash),
            )
            events.append(event)
            seq, head = event.seq, event.hash
        return events

    def audit_rows(
        self, *, since: int = 0, run_id: str | None = None, kind: str | None = None
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """Raw ``(seq, prev_hash, body, hash)`` rows after ``since``, in order."""
        sql = "SELECT seq, prev_hash, body, hash FROM audit_events WHERE seq > ?"
        args: list[Any] = [since]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        cursor = self.db.execute(sql + " ORDER BY seq", args)
        while rows := cursor.fetchmany(_FETCH):
            yield from rows

    def audit_chain_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every event's ``(prev_hash, body, hash)`` in order, as stored (types unchecked)."""
        for page in self.audit_chain_pages():
            yield from page

    def audit_chain_pages(self) -> Iterator[list[tuple[Any, ...]]]:
        """``audit_chain_rows``, a list of rows at a time (for ``audit verify``'s hot loop)."""
        cursor = self.db.execute("SELECT prev_hash, body, hash FROM audit_events ORDER BY seq")
        while rows := cursor.fetchmany(_CHAIN_PAGE):
            yield rows

    def audit_first_gap(self, counted: int | None = None) -> int | None:
        """The first missing event number, or None when events are numbered 1..n."""
        if counted is None:
            count, low, high = self.db.execute(
                "SELECT count(*), min(seq), max(seq) FROM audit_events"
            ).fetchone()
        else:  # the caller has just read every row: spare the count's scan of the table
            count = counted
            # Two subqueries: SQLite reads one end of the index for a lone min() or max(),
            # but scans the whole table for both in one SELECT.
            low, high = self.db.execute(
                "SELECT (SELECT min(seq) FROM audit_events), (SELECT max(seq) FROM audit_events)"
            ).fetchone()
        if count == 0 or (low == 1 and high == count):
            return None  # n distinct integers from 1 to n: exactly 1..n
        expected = 1
        for (seq,) in self.db.execute("SELECT seq FROM audit_events ORDER BY seq"):
            if seq != expected:
                return expected
            expected += 1
        return expected

    def audit_hash_at(self, seq: int) -> bytes:
        if seq == 0:
            return b"\x00" * _HASH
        row = self.db.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise AuditError(f"audit event {seq} is missing")
        return bytes(row[0])

    def audit_leaf_hashes(self, size: int) -> list[bytes]:
        """The hashes (Merkle leaves) of events 1..size; AuditError if any is missing."""
        rows = self.db.execute(
            "SELECT seq, hash FROM audit_events WHERE seq <= ? ORDER BY seq", (size,)
        ).fetchall()
        if len(rows) != size or (rows and rows[-1][0] != size):
            raise AuditError(f"the audit log does not hold events 1..{size}; run `audit verify`")
        return [r[1] if type(r[1]) is bytes else b"" for r in rows]

    def audit_put_checkpoint(self, cp: Checkpoint, frontier: tuple[bytes, ...]) -> None:
        self.db.execute(
            "INSERT INTO audit_checkpoints (size, root, timestamp, key_id, signature, frontier)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (cp.size, cp.root, cp.timestamp, cp.key_id, cp.signature, b"".join(frontier)),
        )

    def audit_checkpoint_rows(self, *, size: int | None = None) -> list[tuple[Any, ...]]:
        """Raw checkpoint rows ``(size, root, timestamp, key_id, signature, frontier)``."""
        sql = "SELECT size, root, timestamp, key_id, signature, frontier FROM audit_checkpoints"
        if size is None:
            return self.db.execute(sql + " ORDER BY size").fetchall()
        return self.db.execute(sql + " WHERE size = ?", (size,)).fetchall()

    def audit_checkpoint_states(self, key_id: str) -> list[tuple[Any, ...]]:
        """``(size, frontier)`` of every checkpoint row, by size; frontier None for a row that
        is malformed or names another key than ``key_id`` (parse it for the reason)."""
        from oneoff._audit.checkpoint import MAX_TIMESTAMP, SIGNATURE_SIZE

        # The checks of checkpoint_from_row but the frontier's length, made in SQL: a row's
        # other fields are not made into Python objects (audit verify reads every row).
        return self.db.execute(
            "SELECT size, iif(size >= 0 AND typeof(root) = 'blob' AND length(root) = ?"
            " AND typeof(timestamp) = 'integer' AND timestamp BETWEEN 0 AND ?"
            " AND typeof(key_id) = 'text' AND key_id = ? AND typeof(signature) = 'blob'"
            " AND length(signature) = ? AND typeof(frontier) = 'blob', frontier, NULL)"
            " FROM audit_checkpoints ORDER BY size",
            (_HASH, MAX_TIMESTAMP, key_id, SIGNATURE_SIZE),
        ).fetchall()

    def audit_checkpoint_rows_at(self, sizes: Sequence[int]) -> list[tuple[Any, ...]]:
        """The raw rows of the checkpoints of ``sizes`` (those that exist), by size."""
        marks = ", ".join("?" * len(sizes))
        return self.db.execute(
            f"{_CHECKPOINT} WHERE size IN ({marks}) ORDER BY size",
            tuple(sizes),
        ).fetchall()

    def audit_latest_checkpoint(self) -> tuple[Checkpoint, tuple[bytes, ...]] | None:
        row = self.db.execute(
            "SELECT size, root, timestamp, key_id, signature, frontier FROM audit_checkpoints"
            " ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else checkpoint_from_row(row)

    def audit_put_cosignature(
        self, size: int, witness_key_id: str, timestamp: int, signature: bytes
    ) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO audit_cosignatures (size, witness_key_id, timestamp, signature)"
            " VALUES (?, ?, ?, ?)",
            (size, witness_key_id, timestamp, signature),
        )
        return cur.rowcount == 1

    def audit_cosignature_rows(self) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT size, witness_key_id, timestamp, signature FROM audit_cosignatures"
            " ORDER BY size DESC, witness_key_id"
        ).fetchall()


def checkpoint_from_row(row: tuple[Any, ...]) -> tuple[Checkpoint, tuple[bytes, ...]]:
    """A stored checkpoint and its saved frontier; AuditError for a malformed row."""
    from oneoff._audit.checkpoint import Checkpoint

    size, root, timestamp, kid, signature, frontier = row
    cp = Checkpoint(
        size=size,
        root=root if type(root) is bytes else b"",
        timestamp=timestamp,
        key_id=kid,
        signature=signature if type(signature) is bytes else b"",
    )  # Checkpoint validates every field and raises AuditError
    if type(frontier) is not bytes or len(frontier) != _HASH * size.bit_count():
        raise AuditError(f"checkpoint {size}: stored tree state is malformed")
    return cp, tuple(frontier[i : i + _HASH] for i in range(0, len(frontier), _HASH))
