"""Create a user. The password comes from ONEOFF_PARAM_PASSWORD, never from argv."""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sqlite3

from notes.db import connect


def main() -> int:
    parser = argparse.ArgumentParser(prog="notes.create_user")
    parser.add_argument("--email", required=True)
    parser.add_argument("--admin", choices=["true", "false"], default="false")
    args = parser.parse_args()
    password = os.environ.get("ONEOFF_PARAM_PASSWORD")
    if not password:
        raise SystemExit("ONEOFF_PARAM_PASSWORD is not set")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    db = connect()
    try:
        with db:
            db.execute(
                "INSERT INTO users (email, password_hash, is_admin) VALUES (?, ?, ?)",
                (args.email, f"scrypt${salt.hex()}${digest.hex()}", args.admin == "true"),
            )
    except sqlite3.IntegrityError:
        raise SystemExit(f"user {args.email} already exists") from None
    except sqlite3.OperationalError as exc:
        raise SystemExit(f"{exc} (run the migrate task first)") from None
    print(f"created user {args.email}" + (" (admin)" if args.admin == "true" else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
