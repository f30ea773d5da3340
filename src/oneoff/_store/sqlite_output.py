"""A run's recorded output in SQLite: compressed chunks, numbered from 1."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["OutputMixin"]

_FETCH = 16  # chunks are up to 64 KiB compressed: a few at a time keeps memory small


class OutputMixin:
    db: sqlite3.Connection
    tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def add_output_chunks(self, run_id: str, chunks: Sequence[tuple[int, int, int, bytes]]) -> None:
        with self.tx():
            self.db.executemany(
                "INSERT INTO output_chunks (run_id, seq, stream, size, data) VALUES (?,?,?,?,?)",
                [(run_id, *chunk) for chunk in chunks],
            )

    def output_chunks(self, run_id: str) -> Iterator[tuple[Any, ...]]:
        cursor = self.db.execute(
            "SELECT seq, stream, size, data FROM output_chunks WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        while rows := cursor.fetchmany(_FETCH):
            yield from rows
