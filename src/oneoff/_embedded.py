"""Passwords embedded in non-secret config values: URLs, libpq DSNs, JDBC and ODBC strings.

A value like ``DATABASE_URL`` is not a secret as a whole (its host and database name are
useful to show), but the password in it is. Found, in any number per value:

- ``scheme://user:password@host`` userinfo: the password runs from the ``:`` after the user
  to the last ``@`` before the next whitespace or the next ``scheme://`` (so unencoded ``#``,
  ``?``, ``/`` and ``@`` stay in it, as libraries that split on the last ``@`` read it); if the
  value has an ``@`` later still (a path), the stretch up to the first ``@`` counts too.
- ``password=``, ``passwd=``, ``pwd=`` or libpq's ``sslpassword=`` (any case) at the start or
  after whitespace, ``?``, ``&`` or ``;``: libpq ``key=value`` DSNs (single-quoted values with
  ``\\'`` escapes too), JDBC query parameters, ODBC ``Pwd=...;`` (a ``{...}`` value, which may
  hold ``;``, whole, with ``}}`` for ``}``). An unquoted value ends at whitespace, ``&`` or
  ``;``.

Each password is a secret both as written and percent-decoded.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["embedded_passwords", "password_spans"]

_SCHEME_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:")
_NEXT_URL = re.compile(r"\s|[A-Za-z][A-Za-z0-9+.-]*://")
_KEY_VALUE = re.compile(
    r"(?i)(?:^|(?<=[\s?&;]))(?:password|passwd|pwd|sslpassword)\s*=\s*"
    r"(?:'((?:[^'\\]|\\.)*)'|\{((?:[^}]|\}\})*)\}|([^\s&;']+))"
)
_QUOTED_ESCAPE = re.compile(r"\\(.)")


def password_spans(value: str) -> list[tuple[int, int, str]]:
    """Where passwords sit in ``value``, as written (the widest reading), and their kind.

    The kind is ``url``, ``quoted`` (a libpq single-quoted value) or ``plain``.
    """
    spans = []
    for match in _SCHEME_USER.finditer(value):
        start = match.end()
        stop = _NEXT_URL.search(value, start)
        end = value.rfind("@", start, stop.start() if stop else len(value))
        if end > start:
            spans.append((start, end, "url"))
    for match in _KEY_VALUE.finditer(value):
        group = next(g for g in (1, 2, 3) if match.group(g) is not None)
        if match.end(group) > match.start(group):
            kind = ("quoted", "braced", "plain")[group - 1]
            spans.append((match.start(group), match.end(group), kind))
    return sorted(set(spans))


def embedded_passwords(value: str) -> list[str]:
    """Every password in ``value``: percent-decoded, as written, and quote-unescaped."""
    found: dict[str, None] = {}
    for start, end, kind in password_spans(value):
        written = value[start:end]
        readings = [written]
        if kind == "url" and "@" in written:  # or the password ends at the first '@'
            readings.append(written[: written.index("@")])
        if kind == "quoted":
            readings.append(_QUOTED_ESCAPE.sub(r"\1", written))
        if kind == "braced":  # ODBC: {...} holds ; and = freely, }} is one }
            readings.append(written.replace("}}", "}"))
        for reading in readings:
            for form in (unquote(reading), reading):
                if form:
                    found[form] = None
    return list(found)
