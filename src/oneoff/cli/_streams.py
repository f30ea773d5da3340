"""The CLI's own text output, escaped on its way out: the last line of terminal defence.

Every value a command prints from a store, a manifest, a people file or a server is
escaped where it is printed (``terminal_safe``); this wrapper around ``sys.stdout`` and
``sys.stderr`` catches what such a call site misses: any control, format or bidi character
in text oneoff writes becomes ``\\uXXXX`` (newlines and tabs stay). A task's own output is
bytes written to the streams' binary buffers (``.buffer``, or the terminal's file
descriptor for an interactive task) and does not pass through here.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, cast

from oneoff._text import escape_lines

__all__ = ["escaping_streams"]


class _Escaping:
    """A text stream whose ``write`` escapes unsafe characters; everything else delegates."""

    def __init__(self, inner: IO[str]) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(escape_lines(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def escaping_streams() -> Iterator[None]:
    """Wrap ``sys.stdout``/``sys.stderr`` for the block; put back exactly what was there."""
    saved = sys.stdout, sys.stderr
    if sys.stdout is not None:
        sys.stdout = cast(IO[str], _Escaping(sys.stdout))
    if sys.stderr is not None:
        sys.stderr = cast(IO[str], _Escaping(sys.stderr))
    try:
        yield
    finally:
        # Whatever the command swapped in meanwhile was swapped back by its own code.
        current: tuple[object, object] = (sys.stdout, sys.stderr)
        if isinstance(current[0], _Escaping):
            sys.stdout = saved[0]
        if isinstance(current[1], _Escaping):
            sys.stderr = saved[1]
