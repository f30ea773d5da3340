"""A run's recorded output in PostgreSQL: compressed chunks, numbered from 1."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["OutputMixin"]

_FETCH = 16  # chunks are up to 64 KiB compressed: a few at a time keeps memory small


class OutputMixin:
    db: psycopg.Connection[tuple[Any, ...]]
    tx: Callable[[], AbstractContextManager[object]]

    def add_output_chunks(self, run_id: str, chunks: Sequence[tuple[int, int, int, bytes]]) -> None:
        with self.tx(), self.db.cursor() as cur:
            cur.executemany(
                "INSERT INTO output_chunks (run_id, seq, stream, size, data)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(run_id, *chunk) for chunk in chunks],
            )

    def output_chunks(self, run_id: str) -> Iterator[tuple[Any, ...]]:
        # Pages by seq: a client-side cursor would hold the whole output in memory.
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT seq, stream, size, data FROM output_chunks WHERE run_id = %s AND seq > %s"
                " ORDER BY seq LIMIT %s",
                (run_id, last, _FETCH),
            ).fetchall()
            yield from rows
            if len(rows) < _FETCH:
                return
            last = rows[-1][0]
