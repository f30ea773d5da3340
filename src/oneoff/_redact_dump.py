"""Hex dumps: read the bytes the rows of ``xxd``, ``hexdump -C`` and ``od -t x1`` show.

A dump cuts a secret into rows of 16 bytes (or as many as ``-c`` asks), each with an offset
before its hex and, for ``xxd``, ``hexdump -C`` and ``od -t x1z``, the bytes again as text
after it; so neither its hex nor its text is a form the automaton could hold. The redactor
decodes each run of consecutive rows instead and matches the bytes they show with the same
automaton (``Redactor._matches``); a match covers the dump from the first hex digit of the
secret to the end of the row holding its last byte, text column included: the text of the
rows it spans would show the secret too (or most of it), and the hex of its neighbours in
those rows is lost with it.

Rows recognised (lower- or upper-case hex, rows of 8 to 32 bytes: up to ``ROW_MAX`` bytes of
text):

- ``xxd`` (any ``-g``, ``-c``): ``00000010: 7137 4c6d ...  q7Lm...``;
- ``hexdump -C`` (util-linux and busybox): ``00000010  71 37 4c 6d ...  |q7Lm...|``;
- ``od -A x -t x1z`` and ``od -t x1`` (octal, hex or decimal offsets): ``0000020 71 37 ...``.

Not recognised: ``hexdump`` without ``-C`` and ``xxd -e`` (bytes swapped in words), ``od -An``
(no offsets), rows squeezed as ``*``; ``xxd -p`` is plain hex in lines, joined as wrapped
base64 is (``oneoff._redact_wrap``).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = ["DUMP_ROW", "ROW_MAX", "Dump", "dumps", "may_start"]

#: A row's start: an offset, then four groups of hex (rows of 8 bytes or more).
DUMP_ROW: Final = rb"[0-9a-fA-F]{6,8}:? {1,2}(?:[0-9a-fA-F]{2}(?:[0-9a-fA-F]{2})? {1,2}){4}"
#: The longest row recognised, in bytes (``xxd -c 32`` writes 124).
ROW_MAX: Final = 160
_HEX = rb"[0-9a-fA-F]{2}"
_ROW_BODY = (
    rb"(?m)^(?:"
    rb"[0-9a-fA-F]{8}: (?P<xxd>%(h)s(?: ?%(h)s)*) {2,}[^\r\n]*"
    rb"|[0-9a-fA-F]{8}  (?P<hexdump>%(h)s(?: {1,2}%(h)s)*) +\|[^\r\n]*\|"
    rb"|(?:[0-9a-f]{6,8}|[0-7]{7}|[0-9]{7})(?P<od>(?: %(h)s)+)(?: +>[^\r\n]*<)?"
    rb")" % {b"h": _HEX}
)
#: A row ends with its line; at the end of the output the last one may lack the line break.
_ROW = re.compile(_ROW_BODY + rb"(?=\r?\n)")
_LAST_ROW = re.compile(_ROW_BODY + rb"(?=\r?\n|\r?\Z)")
_START = re.compile(rb"\n" + DUMP_ROW)


class Dump(NamedTuple):
    data: bytes  # the bytes the rows show, in order
    at: tuple[int, ...]  # for each byte: where its first hex digit is
    ends: tuple[int, ...]  # for each byte: where its row ends (after its text column)


def may_start(text: bytes) -> bool:
    """Whether a row may begin after a line break in ``text`` (a caller that holds the
    stream's start puts a line break first)."""
    return _START.search(text) is not None


def dumps(text: bytes, *, final: bool = False) -> list[Dump]:
    """Each run of consecutive rows of one kind in ``text``, decoded; a last line without its
    line break is a row only if ``final`` (the output ends there), else it may still grow."""
    out: list[Dump] = []
    data, at, ends = bytearray(), list[int](), list[int]()
    kind, prev_end = "", -1
    for row in (_LAST_ROW if final else _ROW).finditer(text):
        name = row.lastgroup or ""
        if data and (name != kind or text[prev_end : row.start()] not in (b"\n", b"\r\n")):
            out.append(Dump(bytes(data), tuple(at), tuple(ends)))
            data, at, ends = bytearray(), [], []
        kind, prev_end = name, row.end()
        start, end = row.span(name)
        hex_text = text[start:end]
        data += bytes.fromhex(hex_text.decode("ascii"))
        i = 0
        while i < len(hex_text):
            if hex_text[i] == 32:  # a space between groups
                i += 1
                continue
            at.append(start + i)
            ends.append(row.end())
            i += 2
    if data:
        out.append(Dump(bytes(data), tuple(at), tuple(ends)))
    return out
