"""Find one row by its id or a unique prefix of it, as `git` does for commits."""

from __future__ import annotations

from typing import Any

from oneoff.errors import UsageError

__all__ = ["row_by_id_or_prefix"]

_HIGHEST = "\U0010ffff"  # sorts after every character an id can hold (BINARY collation)


def row_by_id_or_prefix(
    db: Any, select: str, ident: str, noun: str, *, mark: str = "?"
) -> tuple[Any, ...]:
    """The row of ``select`` (a query ending before WHERE) whose id is or starts with ``ident``.

    Both lookups use the primary key's index: the exact id first, then a prefix as the
    range of ids between ``ident`` and ``ident`` followed by the highest code point (a
    ``LIKE`` would scan the whole table). Both backends compare ids bytewise (SQLite's
    BINARY, PostgreSQL's COLLATE "C"). Wildcards and backslashes are refused: ids never
    contain them. ``db`` is a DB-API connection with ``execute`` (sqlite3, psycopg),
    ``mark`` its placeholder.
    """
    if not ident or any(c in ident for c in "%_\\"):
        raise UsageError(f"invalid {noun} id {ident!r}")
    row = db.execute(select + f" WHERE id = {mark}", (ident,)).fetchone()
    if row is not None:
        return tuple(row)
    rows = db.execute(
        select + f" WHERE id > {mark} AND id < {mark} ORDER BY id LIMIT 2",
        (ident, ident + _HIGHEST),
    ).fetchall()
    if not rows:
        raise UsageError(f"no {noun} {ident!r}")
    if len(rows) > 1:
        raise UsageError(f"{noun} id prefix {ident!r} is ambiguous; give more characters")
    return tuple(rows[0])
