"""Which store an app uses: SQLite in its state directory, or PostgreSQL by URL.

The URL comes from ``ONEOFF_STORE_URL``, else from ``[store] url`` in the manifest; without
either, the embedded SQLite store. Prefer the variable (or libpq's ``~/.pgpass``) for a
password: the manifest is committed with the app. The password is never shown: messages
name the store by ``display_url``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff.errors import ManifestError, UsageError

if TYPE_CHECKING:
    from oneoff._store.interface import Store

__all__ = ["ENV_VAR", "SCHEMES", "open_store", "store_url", "validate_store_table"]

ENV_VAR = "ONEOFF_STORE_URL"
SCHEMES = ("postgresql://", "postgres://")


def validate_store_table(where: str, table: object) -> None:
    """Check ``[store]``: a table with at most a ``url`` naming a PostgreSQL database."""
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: [store] must be a table")
    from oneoff._keys import check_keys

    check_keys(table, {"url"}, f"{where}: [store]")
    url = table.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(SCHEMES)):
        raise ManifestError(f"{where}: [store] url must be a postgresql:// URL")


def store_url(section: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL URL to use, or None for the embedded SQLite store."""
    env = os.environ if environ is None else environ
    url = env.get(ENV_VAR, "").strip() or section.get("url")
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise UsageError(f"{ENV_VAR} must be a postgresql:// URL (or unset for SQLite)")
    return url


def open_store(url: str | None, state_dir: Path) -> Store:
    """Open the store ``url`` names (None: SQLite in ``state_dir``)."""
    if url is None:
        from oneoff._store.sqlite import SQLiteStore

        return SQLiteStore(state_dir / "state.db")
    from oneoff._store.postgres import PostgresStore

    return PostgresStore(url)
