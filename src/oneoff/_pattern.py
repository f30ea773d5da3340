"""A param's ``pattern``: Python's ``re`` syntax, matched by RE2 in time linear in the value.

Threat: a value typed by an operator, or sent by an API caller in a plan document, that
makes a backtracking matcher take exponential time (ReDoS: ``(a+)+$`` against
``aaaa...!``) and so hangs the runner or a team server's worker. RE2 runs an automaton:
its time is linear in the value and its memory bounded, whatever the pattern.

A pattern must be valid for both Python's ``re`` (the dialect a reviewer of
``oneoff.toml`` reads) and RE2, and must not be one of the few spellings the two read
differently, so an existing manifest keeps its meaning or is refused, never silently
changed. What RE2 cannot do in linear time (backreferences, lookahead and lookbehind,
possessive and atomic repetition, conditionals) is a manifest error. The one deliberate
difference: ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII classes, as under Python's
``re.ASCII`` (``\\d{4}`` refuses Arabic-Indic digits, which Python's default accepts and
``int()`` would read).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Final

from oneoff.errors import ManifestError

__all__ = ["MAX_PATTERN_LENGTH", "Pattern", "compile_pattern"]

#: Longer patterns are refused before any parser sees them (RE2 logs to stderr past a
#: few hundred thousand nodes; a param's pattern is a line, not a program).
MAX_PATTERN_LENGTH: Final = 1000
#: RE2's memory budget for one pattern's program and its automaton's cache: a pattern
#: needing more is refused at load (``.{1000}`` a hundred times).
MAX_MEMORY: Final = 1 << 20

_HINT = (
    "rewrite it without backreferences, lookahead or lookbehind, possessive or atomic "
    "repetition and Python-only escapes (https://github.com/google/re2/wiki/Syntax)"
)
# Python reads `{,3}` as "0 to 3 times", RE2 as the literal text "{,3}".
_OPEN_REPEAT = re.compile(r"\{,[0-9]*\}")


class Pattern:
    """A compiled pattern; ``fullmatch`` says whether a whole value matches."""

    __slots__ = ("_regex", "source")

    def __init__(self, source: str, regex: Any) -> None:
        self.source = source
        self._regex = regex

    def fullmatch(self, value: str) -> bool:
        try:
            return self._regex.fullmatch(value) is not None
        except UnicodeEncodeError:  # a lone surrogate is not text: it matches nothing
            return False

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


def compile_pattern(pattern: str, ctx: str) -> Pattern:
    """``pattern`` compiled for full matches, or ManifestError (one line naming ``ctx``)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ManifestError(
            f"{ctx}: pattern does not compile: it is {len(pattern)} characters long; at "
            f"most {MAX_PATTERN_LENGTH} are allowed"
        )
    _check_python(pattern, ctx)
    translated = _to_re2(pattern, ctx)
    import re2

    options = re2.Options()
    options.max_mem = MAX_MEMORY
    options.log_errors = False  # its reasons come back in the exception, not on stderr
    try:
        regex = re2.compile(translated, options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else "unknown error"
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if "too large" in reason:
            raise ManifestError(
                f"{ctx}: pattern does not compile: it needs more than "
                f"{MAX_MEMORY >> 20} MiB once compiled",
                hint="bound repetitions more tightly",
            ) from None
        if "repetition size" in reason:
            raise ManifestError(
                f"{ctx}: pattern does not compile: a repetition count over 1000, nested "
                f"counts multiplied ({reason})",
                hint="bound repetitions more tightly",
            ) from None
        raise ManifestError(
            f"{ctx}: pattern is not supported by oneoff's linear-time matcher (RE2: {reason})",
            hint=_HINT,
        ) from None
    return Pattern(pattern, regex)


def _check_python(pattern: str, ctx: str) -> None:
    """ManifestError unless Python's ``re`` compiles ``pattern`` without a warning."""
    try:
        with warnings.catch_warnings():
            # "Possible nested set" (`[[:alpha:]]`): Python reads a literal `[`, RE2 a class.
            warnings.simplefilter("error")
            re.compile(pattern)
    except re.error as exc:
        raise ManifestError(f"{ctx}: pattern does not compile: {exc}") from None
    except (OverflowError, RecursionError):  # a{99999999999}; hundreds of nested groups
        raise ManifestError(
            f"{ctx}: pattern does not compile: too large or nested too deeply"
        ) from None
    except Warning as exc:
        raise ManifestError(
            f"{ctx}: pattern is ambiguous: {exc}", hint="escape a literal '[' as '\\['"
        ) from None


def _to_re2(pattern: str, ctx: str) -> str:
    """RE2's spelling of a pattern Python compiled: ``\\Z`` is ``\\z``, ``\\uXXXX`` and
    ``\\UXXXXXXXX`` are ``\\x{...}``; spellings the two read differently are refused."""
    out: list[str] = []
    i = 0
    class_start = -1  # where the character class being read opened, if one is
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i + 1]  # Python compiled it: a backslash never ends it
            i += 2
            if escape in "0123456789":
                # Python reads \1 as a backreference and \12 as group 12, RE2 as octal.
                raise ManifestError(
                    f"{ctx}: pattern uses a numeric escape \\{escape}: backreferences are "
                    "not supported, and characters are written \\xNN",
                    hint=_HINT,
                )
            if escape == "Z" and class_start < 0:
                out.append("\\z")
            elif escape in "uU":
                width = 4 if escape == "u" else 8
                out.append("\\x{" + pattern[i : i + width] + "}")
                i += width
            else:
                out.append("\\" + escape)
            continue
        if class_start >= 0:
            # A `]` first in its class (`[]a]`, `[^]a]`) is a member, for both parsers.
            first = class_start + (2 if pattern[class_start + 1] == "^" else 1)
            if char == "]" and i != first:
                class_start = -1
        elif char == "[":
            class_start = i
        elif char == "{" and _OPEN_REPEAT.match(pattern, i):
            raise ManifestError(
                f"{ctx}: pattern uses {{,n}}, which RE2 reads as literal text: write {{0,n}}"
            )
        out.append(char)
        i += 1
    return "".join(out)
