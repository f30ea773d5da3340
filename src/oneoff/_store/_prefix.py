"""Find one row by its id or a unique prefix of it, as `git` does for commits."""

from __future__ import annotations

from typing import Any

from oneoff.errors import UsageError

__all__ = ["row_by_id_or_prefix"]


def row_by_id_or_prefix(
    db: Any, select: str, ident: str, noun: str, *, mark: str = "?"
) -> tuple[Any, ...]:
    """The row of ``select`` (a query ending before WHERE) whose id is or starts with ``ident``.

    LIKE wildcards in ``ident`` are refused rather than escaped: ids never contain them.
    ``db`` is a DB-API connection with ``execute`` (sqlite3, psycopg), ``mark`` its placeholder.
    """
    if not ident or any(c in ident for c in "%_\\"):
        raise UsageError(f"invalid {noun} id {ident!r}")
    rows = db.execute(
        select + f" WHERE id = {mark} OR id LIKE {mark} ORDER BY id LIMIT 2", (ident, ident + "%")
    ).fetchall()
    exact = [r for r in rows if r[0] == ident]
    if exact:
        return tuple(exact[0])
    if not rows:
        raise UsageError(f"no {noun} {ident!r}")
    if len(rows) > 1:
        raise UsageError(f"{noun} id prefix {ident!r} is ambiguous; give more characters")
    return tuple(rows[0])
