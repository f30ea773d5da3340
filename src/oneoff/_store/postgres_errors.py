"""psycopg's exceptions as ``StoreError``, and a store URL that is safe to show.

Whatever fails in the PostgreSQL backend (the server unreachable, a lock waited on past
``lock_timeout``, a refused write, a damaged page) reaches callers as the one error type
every backend raises, naming the store by its URL *without* its password, never as a
traceback. The password is also scrubbed from the server's own message, in case a driver
ever echoes the connection string back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from oneoff.errors import StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["display_url", "is_a_bug", "secrets_of", "store_error", "translate_errors"]

_T = TypeVar("_T")
_GENERATOR = 0x20  # CO_GENERATOR, as in sqlite_errors
# SQLSTATEs of "someone else holds it": lock_timeout, statement_timeout, deadlock,
# serialization failure.
_BUSY = {"55P03", "57014", "40P01", "40001"}


def display_url(url: str, *, user: bool = True) -> str:
    """The store URL as it may be shown and logged: scheme, user, host, port and database,
    never the password (in the netloc or as a ``password=`` parameter). Without ``user``,
    it names the database whoever connects to it (a log's identity)."""
    try:
        parts = urlsplit(url)
        name = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://(unparsable URL)"
    query = dict(parse_qsl(parts.query))
    name = (name or query.get("user", "")) if user else ""
    where = (name + "@" if name else "") + host + port
    shown = f"{parts.scheme if user else 'postgresql'}://{where}{parts.path}"
    if not host and query.get("host"):  # a Unix socket directory
        shown += f"?host={query['host']}"
    return shown


def secrets_of(url: str) -> list[str]:
    """The password(s) in ``url``, to scrub from any message."""
    found = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if k == "password" and v]
    except ValueError:
        pass
    return found


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def store_error(url: str, exc: psycopg.Error) -> StoreError:
    """The StoreError for ``exc``, saying what an operator can do about it."""
    import psycopg

    where = display_url(url)
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) if diag else None) or str(exc).strip()
    text = _scrub(text.splitlines()[0] if text else type(exc).__name__, secrets_of(url))
    state = getattr(exc, "sqlstate", None) or ""
    if state in _BUSY:
        return StoreError(f"{where}: the store stayed locked by another runner ({text})")
    if isinstance(exc, psycopg.IntegrityError):
        return StoreError(f"{where}: the store refused the write ({text})")
    if state.startswith("XX") or isinstance(exc, psycopg.DataError):
        return StoreError(f"{where}: store unreadable ({text}); is it corrupt?")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and not state:
        return StoreError(f"{where}: cannot reach the store ({text})")
    return StoreError(f"{where}: store error ({text})")


def is_a_bug(exc: psycopg.Error) -> bool:
    """SQL this code got wrong (a syntax error, a bad parameter count): a traceback, not a
    store error an operator could fix."""
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    return state == "42601" or (isinstance(exc, psycopg.ProgrammingError) and not state)


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    import psycopg

    if method.__code__.co_flags & _GENERATOR:

        @functools.wraps(method)
        def rows(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            self._recover()  # a connection the database dropped is replaced first
            try:
                yield from method(self, *args, **kwargs)
            except psycopg.Error as exc:
                if is_a_bug(exc):
                    raise
                raise store_error(self.url, exc) from None

        return rows

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._recover()
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            if is_a_bug(exc):
                raise
            raise store_error(self.url, exc) from None

    return call


def translate_errors(cls: type[_T]) -> type[_T]:
    """Class decorator: every public method of the class's mixins raises StoreError for a
    psycopg error (an iterator, while it is iterated), except for ``is_a_bug``."""
    for mixin in cls.__bases__:
        for name, member in vars(mixin).items():
            if name.startswith("_") or name in vars(cls):
                continue
            if callable(member) and hasattr(member, "__code__"):
                setattr(cls, name, _wrap(member))
    return cls
