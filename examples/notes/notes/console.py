"""Console bootstrap: `python -i -m notes.console` leaves you at a prompt with `db` connected."""

from notes.db import connect

db = connect()
print("notes console: `db` is a sqlite3 connection to $DATABASE_URL")
