"""Fill notes.word_count in batches, resumably: only rows still NULL are touched."""

from __future__ import annotations

import argparse

from notes.db import connect


def main() -> int:
    parser = argparse.ArgumentParser(prog="notes.backfill")
    parser.add_argument("--since", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--dry-run", choices=["true", "false"], required=True)
    args = parser.parse_args()
    db = connect()
    total = 0
    while True:
        rows = db.execute(
            "SELECT id, body FROM notes WHERE word_count IS NULL AND created_at >= ?"
            " ORDER BY id LIMIT ?",
            (args.since, args.batch_size),
        ).fetchall()
        if not rows:
            break
        if args.dry_run == "true":
            total += len(rows)
            break
        with db:
            db.executemany(
                "UPDATE notes SET word_count = ? WHERE id = ?",
                [(len(b.split()), i) for i, b in rows],
            )
        total += len(rows)
        print(f"backfilled {total} notes so far", flush=True)
    print(("would backfill" if args.dry_run == "true" else "backfilled") + f" {total} notes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
