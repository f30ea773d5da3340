"""Apply notes/migrations/*.sql in order, each once, recording them in schema_migrations."""

from __future__ import annotations

import argparse
from pathlib import Path

from notes.db import connect

MIGRATIONS = Path(__file__).parent / "migrations"


def main() -> int:
    parser = argparse.ArgumentParser(prog="notes.migrate")
    parser.add_argument("--to", default="latest")
    parser.add_argument("--reset", action="store_true")
    args = parser.parse_args()
    db = connect()
    if args.reset:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            db.execute(f'DROP TABLE "{table}"')
        db.commit()
        print(f"dropped {len(tables)} tables")
        return 0
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    done = {r[0] for r in db.execute("SELECT id FROM schema_migrations")}
    applied = 0
    for path in sorted(MIGRATIONS.glob("*.sql")):
        number = path.name[:4]
        if args.to != "latest" and number > args.to:
            break
        if number in done:
            continue
        with db:
            db.executescript(
                "BEGIN;"
                + path.read_text()
                + f"; INSERT INTO schema_migrations (id) VALUES ('{number}'); COMMIT;"
            )
        print(f"applied {path.name}")
        applied += 1
    current = db.execute("SELECT max(id) FROM schema_migrations").fetchone()[0]
    print(f"{applied} migration(s) applied; database is at {current or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
