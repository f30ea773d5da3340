"""Release rows and each environment's current release, in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from oneoff._store.interface import ReleaseRecord
from oneoff.errors import StoreError, UsageError

__all__ = ["ReleasesMixin"]

_SELECT = (
    "SELECT id, environment, version, document, signature, key_id, created_at, created_by"
    " FROM releases"
)


class ReleasesMixin:
    db: sqlite3.Connection

    def next_release_version(self, environment: str) -> int:
        row = self.db.execute(
            "SELECT MAX(version) FROM releases WHERE environment = ?", (environment,)
        ).fetchone()
        return int(row[0] or 0) + 1

    def add_release(self, record: ReleaseRecord) -> None:
        try:
            self.db.execute(
                "INSERT INTO releases (id, environment, version, document, signature, key_id,"
                " created_at, created_by, code_entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.environment,
                    record.version,
                    record.document,
                    record.signature,
                    record.key_id,
                    record.created_at,
                    record.created_by,
                    record.code_entries,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot store release {record.id[:12]}: {exc}") from None

    def release_code_entries(self, release_id: str) -> str | None:
        row = self.db.execute(
            "SELECT code_entries FROM releases WHERE id = ?", (release_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        if not isinstance(row[0], str):
            raise StoreError(f"code entries of release {release_id[:12]} are malformed")
        return row[0]

    def get_release(self, ref: str) -> ReleaseRecord:
        prefix = ref if ref.startswith("rel_") else "rel_" + ref
        if len(prefix) < 6 or any(c not in "0123456789abcdef" for c in prefix[4:]):
            raise UsageError(f"invalid release id {ref!r} (want rel_<hex>, a prefix, or vN)")
        rows = self.db.execute(
            _SELECT + " WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", (prefix, prefix + "g")
        ).fetchall()
        if not rows:
            raise UsageError(f"no release {ref!r}")
        if len(rows) > 1 and rows[0][0] != prefix:
            raise UsageError(f"release id prefix {ref!r} is ambiguous; give more characters")
        return _from_row(rows[0])

    def release_by_version(self, environment: str, version: int) -> ReleaseRecord | None:
        row = self.db.execute(
            _SELECT + " WHERE environment = ? AND version = ?", (environment, version)
        ).fetchone()
        return None if row is None else _from_row(row)

    def list_releases(self, environment: str | None = None) -> Sequence[ReleaseRecord]:
        if environment is None:
            rows = self.db.execute(_SELECT + " ORDER BY environment, version DESC").fetchall()
        else:
            rows = self.db.execute(
                _SELECT + " WHERE environment = ? ORDER BY version DESC", (environment,)
            ).fetchall()
        return [_from_row(r) for r in rows]

    def current_release_id(self, environment: str) -> str | None:
        row = self.db.execute(
            "SELECT release_id FROM current_releases WHERE environment = ?", (environment,)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_current_release(self, environment: str, release_id: str, *, updated_at: str) -> None:
        self.db.execute(
            "INSERT INTO current_releases (environment, release_id, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (environment) DO UPDATE SET release_id = excluded.release_id,"
            " updated_at = excluded.updated_at",
            (environment, release_id, updated_at),
        )


def _from_row(row: tuple[Any, ...]) -> ReleaseRecord:
    # Types are checked here; whether the content is genuine is the document module's job.
    rid, env, version, document, signature, key_id, created_at, created_by = row
    if not all(isinstance(v, str) for v in (rid, env, document, created_at, created_by)):
        raise StoreError(f"release row {str(rid)[:12]!r} is malformed")
    if type(version) is not int or (signature is not None and not isinstance(signature, bytes)):
        raise StoreError(f"release row {rid[:12]!r} is malformed")
    if key_id is not None and not isinstance(key_id, str):
        raise StoreError(f"release row {rid[:12]!r} is malformed")
    return ReleaseRecord(rid, env, version, document, signature, key_id, created_at, created_by)
