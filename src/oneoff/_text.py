"""Free text one person writes and another person's terminal shows: refused at input,
escaped at display.

Threat: a denial reason, a param value, a task description, a person's name or a
server's answer that carries an ANSI/OSC escape sequence (ESC, CSI), another C0 or C1
control character, a bidi override (U+202A-202E, U+2066-2069) or a line separator can
make a terminal show something other than what is there: recolour or erase a line,
rewrite the window title or the clipboard (OSC 52), reorder "approve" and "deny" on
screen, or forge a second row of a listing. An approver must see exactly what they
sign. So typed text is refused where it enters (``text_problem``: exit 2 locally, HTTP
400 from the server), and everything printed from a store or a server is escaped
(``oneoff._log.escape``) as a second line of defence for what is already stored or comes
from a server this client does not control.
"""

from __future__ import annotations

from oneoff._log import spell

__all__ = ["OutputEscaper", "check_text", "escape_lines", "text_problem", "unsafe_chars"]

# Unicode categories that never belong in one line of typed text: control characters
# (C0, DEL, C1), format characters (bidi overrides and isolates, zero-width characters),
# line and paragraph separators, and lone surrogates (undecodable bytes).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def unsafe_chars(text: str) -> list[str]:
    """The characters of ``text`` a terminal could act on or reorder, in order, once each."""
    import unicodedata

    if text.isprintable():  # the common case, in C: no category lookups
        return []
    seen: dict[str, None] = {}
    for char in text:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            seen.setdefault(char, None)
    return list(seen)


def text_problem(text: str, what: str, *, max_length: int | None = None) -> str | None:
    """Why ``text`` cannot be ``what`` (one line of typed text), or None when it can."""
    if max_length is not None and len(text) > max_length:
        return f"{what} is {len(text)} characters long; at most {max_length} are allowed"
    bad = unsafe_chars(text)
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:8])
        return (
            f"{what} may not contain control, format or bidi characters ({shown}): "
            "one line of plain text"
        )
    return None


def check_text(text: str, what: str, *, max_length: int | None = None) -> str:
    """``text`` when it is one line of plain text, else a UsageError (exit 2, HTTP 400)."""
    problem = text_problem(text, what, max_length=max_length)
    if problem is not None:
        from oneoff.errors import UsageError

        raise UsageError(problem)
    return text


def escape_lines(text: str) -> str:
    """``text`` with every unsafe character shown as ``\\uXXXX``, keeping newlines (CRLF too)
    and tabs.

    For whole blocks of output (the CLI's own text streams): line breaks stay line breaks,
    and the ``\\uXXXX`` form is also what JSON means by it, so JSON written with
    ``ensure_ascii=False`` still parses to the same value.
    """
    if text.isprintable():
        return text
    import unicodedata

    out = []
    for index, char in enumerate(text):
        crlf = char == "\r" and text[index + 1 : index + 2] == "\n"
        if char in "\n\t" or char.isprintable() or crlf:
            out.append(char)
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)  # a space other than " " (NBSP...): shown as it is
    return "".join(out)


class OutputEscaper:
    """A run's stored output bytes made safe for a terminal, chunk by chunk.

    Control, format and bidi characters (an escape sequence's ESC, a lone CR that would
    overwrite a line, U+202E) become ``\\xNN``/``\\uXXXX``; newlines (CRLF too) and tabs
    stay; bytes that are not UTF-8 become ``\\xNN``. A character split across two chunks
    is decoded whole.
    """

    def __init__(self) -> None:
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._cr = ""  # a CR that ended the last chunk: CRLF or not, the next one tells

    def feed(self, data: bytes, *, final: bool = False) -> bytes:
        text = self._cr + self._decoder.decode(data, final)
        self._cr = ""
        if text.endswith("\r") and not final:
            text, self._cr = text[:-1], "\r"
        if text.isprintable():
            return text.encode("utf-8")
        import unicodedata

        out = []
        for index, char in enumerate(text):
            crlf = char == "\r" and text[index + 1 : index + 2] == "\n"
            if char in "\n\t" or char.isprintable() or crlf:
                out.append(char)
            elif char == "\r":
                out.append("\\r")
            elif "\udc80" <= char <= "\udcff":  # an undecodable byte, kept by surrogateescape
                out.append(f"\\x{ord(char) - 0xDC00:02x}")
            elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
                out.append(spell(char))
            else:
                out.append(char)
        return "".join(out).encode("utf-8")
