"""Base64 wrapped in lines: find the blocks in a buffer and join their lines for matching.

Encoders wrap base64 at 64 (PEM, openssl) or 76 (MIME, Python's ``base64.encodebytes``,
coreutils ``base64``) characters a line, or at any width asked (``base64 -w 40``), so a
secret's base64 (or its base32, or its hex as ``xxd -p`` prints it) may be cut by ``\\n`` or
``\\r\\n`` anywhere. Rather than one form per line phase (hundreds per secret, which made the
automaton several times slower), the redactor joins the lines of each wrapped block and
matches the joined text with the same automaton; only matches that cross a line break are
new. A line break belongs to a block when the base64 characters (standard or URL-safe)
before it are at least ``MIN_WIDTH``, or at least ``NARROW`` while the whole line after it is
base64 too (a narrow block; its first line may follow a label, its last may be shorter and
end in padding); ``lead`` counts the ones just before the buffer (already shown: a stream is
matched piece by piece). Ordinary text costs one regular expression per buffer, anchored on
line breaks, that looks for a whole line of base64 or a line of MIN_WIDTH; only a buffer with
one gets a closer look, and only from shortly before it on. Narrow lines that are indented,
or that carry other text after their base64, are not joined.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from oneoff._redact_dump import DUMP_ROW

__all__ = [
    "MIN_WIDTH",
    "NARROW",
    "Block",
    "blocks",
    "join",
    "lead_before",
    "scan",
    "to_buf",
]

MIN_WIDTH: Final = 64
#: The narrowest line a block may have (``base64 -w 4``); a form in such a block takes a line
#: break every NARROW characters at most.
NARROW: Final = 4
_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
#: Base64 as "A", line ends and padding as themselves, anything else ".".
_TABLE: Final = bytes(
    ord("A") if c in _ALPHABET else c if c in b"\r\n=" else ord(".") for c in range(256)
)
#: The quick look: a carriage return as "A" too.
_QUICK: Final = _TABLE.replace(b"\r", b"A")
_LINE: Final = b"A" * MIN_WIDTH + b"\n"
_DUMP_AFTER = re.compile(rb"\n(?=%s)" % DUMP_ROW)
_NOT_B64 = re.compile(rb"[^A]")
#: The quick look, on the bytes as they are (a translation first would cost a pass more):
#: a line break that a line of base64 (then padding) follows up to its end or the buffer's,
#: or a hex dump's row (an offset, then hex: ``oneoff._redact_dump``), or that MIN_WIDTH
#: base64 characters come before. Starting with the line break, the search skips from one to
#: the next; a log line fails within its first word.
_QUICK_BREAK = re.compile(
    rb"\n(?:(?=[A-Za-z0-9+/_\-\r]++(?:=++\r?)?(?:\n|\Z)|(?P<dump>%s))|(?<=%s{%d}\n))"
    % (DUMP_ROW, rb"[A-Za-z0-9+/_\-\r]", MIN_WIDTH)
)
#: A narrow break, closely: the whole next line base64 (its CR is no base64 here).
_NARROW_BREAK = re.compile(rb"\n(?=A++=*(?:\r?\n|\r?\Z))")


class Block(NamedTuple):
    start: int  # the first base64 byte of the block (at most ``limit`` before its first break)
    end: int  # after its last base64 byte
    breaks: tuple[tuple[int, int], ...]  # (offset, length) of each line break, in order


def _first_line(t: bytes, lead: int) -> int | None:
    """The break ending a first line that began ``lead`` base64 characters before ``t``."""
    if not lead:
        return None
    first = _NOT_B64.search(t, 0, MIN_WIDTH)
    if first is None or lead + first.start() < MIN_WIDTH or t[first.start()] not in b"\r\n":
        return None
    return first.start()


def _breaks(t: bytes, lead: int) -> list[tuple[int, int]]:
    found: dict[int, int] = {}
    for needle, gap in ((_LINE, 1), (_LINE[:-1] + b"\r\n", 2)):
        i = t.find(needle)
        while i >= 0:
            found[i + MIN_WIDTH] = gap
            i = t.find(needle, i + 1)
    at = _first_line(t, lead)
    if at is not None:
        found.setdefault(at, 2 if t.startswith(b"\r\n", at) else 1)
    for match in _NARROW_BREAK.finditer(t):
        pos, gap = match.start(), 1
        if pos and t[pos - 1] == 13:  # \r\n
            pos, gap = pos - 1, 2
        run = pos - 1 - max(t.rfind(c, 0, pos) for c in (b".", b"\n", b"\r", b"="))
        if run + (lead if run == pos else 0) >= NARROW:
            found.setdefault(pos, gap)
    # A CRLF whose LF has not arrived yet: a break all the same (the LF will join it).
    if t.endswith(_LINE[:-1] + b"\r"):
        found.setdefault(len(t) - 1, 1)
    return sorted(found.items())


def _first_breaks(buf: bytes, lead: int) -> tuple[int, bool]:
    """Where ``buf`` may first hold a narrow block's line break (-1: nowhere; a superset of
    the breaks, each checked closely), and whether a hex dump's row may follow a line break."""
    dump = False
    match = _QUICK_BREAK.search(buf)
    while match is not None:
        pos = match.start()
        if match.group("dump") is not None:
            dump = True
        else:
            head = buf[max(0, pos - NARROW) : pos].translate(_QUICK)  # the line before's end
            if head.count(b"A") == len(head) and (len(head) == NARROW or lead + pos >= NARROW):
                return pos, dump or _DUMP_AFTER.search(buf, pos) is not None
        match = _QUICK_BREAK.search(buf, pos + 1)
    return -1, dump


def blocks(buf: bytes, limit: int, lead: int = 0) -> list[Block]:
    """The wrapped base64 blocks of ``buf``, each reaching at most ``limit`` bytes past its
    outermost breaks (no form is longer); ``lead``: base64 characters right before ``buf``."""
    return scan(buf, limit, lead)[0]


def scan(buf: bytes, limit: int, lead: int = 0) -> tuple[list[Block], bool]:
    """``blocks(buf, limit, lead)``, and whether a hex dump's row may follow a line break."""
    start = 0
    hint, dump = _first_breaks(buf, lead)
    if _first_line(buf[:MIN_WIDTH].translate(_TABLE), lead) is None and not buf.endswith(b"\r"):
        if hint < 0:
            return [], dump
        # No break comes before the first one found (a wide block's lines are whole base64
        # lines too), and a block starts at most limit bytes before its first break: the close
        # look need not read what comes before that.
        start = max(0, hint - limit)
        if start:
            buf, lead = buf[start:], 0
    t = buf.translate(_TABLE)
    breaks = _breaks(t, lead)
    out: list[Block] = []
    i = 0
    while i < len(breaks):
        group = [breaks[i]]
        i += 1
        while i < len(breaks):
            pos, gap = group[-1]
            nxt = breaks[i][0]
            if nxt <= pos + gap or t.count(b"A", pos + gap, nxt) != nxt - pos - gap:
                break
            group.append(breaks[i])
            i += 1
        first, (last, gap) = group[0][0], group[-1]
        lo = max(0, first - limit)
        before = max(t.rfind(c, lo, first) for c in (b".", b"\n", b"\r", b"="))
        after = _NOT_B64.search(t, last + gap, min(len(t), last + gap + limit))
        end = after.start() if after else min(len(t), last + gap + limit)
        shifted = tuple((pos + start, gap) for pos, gap in group)
        out.append(Block(max(before + 1, lo) + start, end + start, shifted))
    return out, dump


def join(buf: bytes, block: Block) -> bytes:
    """The block's base64 without its line breaks."""
    pieces, prev = [], block.start
    for pos, gap in block.breaks:
        pieces.append(buf[prev:pos])
        prev = pos + gap
    pieces.append(buf[prev : block.end])
    return b"".join(pieces)


def to_buf(block: Block, x: int) -> int:
    """Offset in the buffer of offset ``x`` of the joined block."""
    pos = block.start + x
    for at, gap in block.breaks:
        if pos < at:
            break
        pos += gap
    return pos


def lead_before(buf: bytes, cut: int, lead: int) -> int:
    """How many base64 characters end at ``cut`` (up to MIN_WIDTH), ``lead`` those before buf."""
    lo = max(0, cut - MIN_WIDTH)
    t = buf[lo:cut].translate(_TABLE)
    other = max(t.rfind(b"."), t.rfind(b"\r"), t.rfind(b"\n"), t.rfind(b"="))
    if other >= 0:
        return len(t) - other - 1
    return min(MIN_WIDTH, len(t) + (lead if lo == 0 else 0))
