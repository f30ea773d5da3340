"""The database connection, configured only by DATABASE_URL (twelve-factor III)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit


def connect() -> sqlite3.Connection:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise SystemExit(
            f"unsupported database scheme {parts.scheme!r} (this example speaks sqlite)"
        )
    # SQLAlchemy's convention: sqlite:///relative.db (three slashes), sqlite:////abs.db (four).
    path = Path(parts.path[1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys = ON")
    return db
