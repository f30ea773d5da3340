"""SQLite's exceptions as ``StoreError``: whatever fails in the backend reaches callers as
the one error type every backend raises, with the store's path and a plain reason, never
as a traceback (a page found corrupt only by a later query, a lock held past the busy
timeout, a full disk)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from oneoff.errors import StoreError

__all__ = ["is_a_bug", "store_error", "translate_errors"]

_T = TypeVar("_T")
_GENERATOR = 0x20  # CO_GENERATOR (inspect.CO_GENERATOR, without importing inspect)


def store_error(path: object, exc: sqlite3.Error) -> StoreError:
    """The StoreError for ``exc``, saying what an operator can do about it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = str(exc) or name or type(exc).__name__
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(f"{path}: the store stayed locked by another runner ({text})")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StoreError(f"{path}: store unreadable ({text}); is it corrupt?")
    if name.startswith("SQLITE_CONSTRAINT"):
        return StoreError(f"{path}: the store refused the write ({text})")
    return StoreError(f"{path}: store error ({text})")


def is_a_bug(exc: sqlite3.Error) -> bool:
    """Misuse of the connection (closed, wrong thread, bad bindings): a traceback, not a
    store error an operator could fix."""
    return isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError))


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    if method.__code__.co_flags & _GENERATOR:

        @functools.wraps(method)
        def rows(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                if is_a_bug(exc):
                    raise
                raise store_error(self.path, exc) from None

        return rows

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if is_a_bug(exc):
                raise
            raise store_error(self.path, exc) from None

    return call


def translate_errors(cls: type[_T]) -> type[_T]:
    """Class decorator: every public method the class's bases (its mixins) define raises
    StoreError for a sqlite3 error (an iterator, while it is being iterated), except for
    ``is_a_bug``. Methods the class defines itself handle their own errors."""
    for mixin in cls.__bases__:
        for name, member in vars(mixin).items():
            if name.startswith("_") or name in vars(cls):
                continue
            if callable(member) and hasattr(member, "__code__"):
                setattr(cls, name, _wrap(member))
    return cls
