"""Release rows and each environment's current release, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._store.interface import ReleaseRecord
from oneoff._store.sqlite_releases import _from_row
from oneoff.errors import StoreError, UsageError

if TYPE_CHECKING:
    import psycopg

__all__ = ["ReleasesMixin"]

_SELECT = (
    "SELECT id, environment, version, document, signature, key_id, created_at, created_by"
    " FROM releases"
)


class ReleasesMixin:
    db: psycopg.Connection[tuple[Any, ...]]

    def next_release_version(self, environment: str) -> int:
        row = self.db.execute(
            "SELECT MAX(version) FROM releases WHERE environment = %s", (environment,)
        ).fetchone()
        return int((row[0] if row else 0) or 0) + 1

    def add_release(self, record: ReleaseRecord) -> None:
        # ON CONFLICT DO NOTHING: a duplicate must not abort the caller's transaction
        # before it is reported.
        cur = self.db.execute(
            "INSERT INTO releases (id, environment, version, document, signature, key_id,"
            " created_at, created_by, code_entries)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (record.id, record.environment, record.version, record.document, record.signature,
             record.key_id, record.created_at, record.created_by, record.code_entries),
        )  # fmt: skip
        if cur.rowcount != 1:
            raise StoreError(
                f"cannot store release {record.id[:12]}: its id or version "
                f"{record.environment} v{record.version} is taken"
            )

    def release_code_entries(self, release_id: str) -> str | None:
        row = self.db.execute(
            "SELECT code_entries FROM releases WHERE id = %s", (release_id,)
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
            _SELECT + " WHERE id >= %s AND id < %s ORDER BY id LIMIT 2", (prefix, prefix + "g")
        ).fetchall()
        if not rows:
            raise UsageError(f"no release {ref!r}")
        if len(rows) > 1 and rows[0][0] != prefix:
            raise UsageError(f"release id prefix {ref!r} is ambiguous; give more characters")
        return _from_row(rows[0])

    def release_by_version(self, environment: str, version: int) -> ReleaseRecord | None:
        row = self.db.execute(
            _SELECT + " WHERE environment = %s AND version = %s", (environment, version)
        ).fetchone()
        return None if row is None else _from_row(row)

    def list_releases(self, environment: str | None = None) -> Sequence[ReleaseRecord]:
        if environment is None:
            rows = self.db.execute(_SELECT + " ORDER BY environment, version DESC").fetchall()
        else:
            rows = self.db.execute(
                _SELECT + " WHERE environment = %s ORDER BY version DESC", (environment,)
            ).fetchall()
        return [_from_row(r) for r in rows]

    def current_release_id(self, environment: str) -> str | None:
        row = self.db.execute(
            "SELECT release_id FROM current_releases WHERE environment = %s", (environment,)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_current_release(self, environment: str, release_id: str, *, updated_at: str) -> None:
        self.db.execute(
            "INSERT INTO current_releases (environment, release_id, updated_at)"
            " VALUES (%s, %s, %s) ON CONFLICT (environment) DO UPDATE SET"
            " release_id = excluded.release_id, updated_at = excluded.updated_at",
            (environment, release_id, updated_at),
        )
