"""Streaming redaction of secret values, raw and encoded, from a task's output bytes.

Every secret is searched for in the forms ``oneoff._redact_forms`` lists (raw, base64 plain and
wrapped, percent-encoded, hex and JSON-escaped as common encoders write them); ``forms_of``
returns them. Each maximal run of overlapping matches becomes one ``[REDACTED:NAME]``, named
after the longest match at the run's first byte. The result does not depend on how the stream
is chunked. For a base64 core, the neighbouring base64 character that mixes secret bits with
outside bits is swallowed too (across a line break as well), so not even a few bits of the
secret stay visible. A low-entropy secret's text forms match only as whole tokens.

Matching: one Aho-Corasick automaton (``ahocorasick_rs``, a required dependency, imported when
the first Redactor is built) scans a *strided* copy of each buffer, ``buf[::k]``. A form F that
starts at s has the bytes ``F[r::k]`` in that copy, with ``r = -s mod k``; so for every form and
every phase r the automaton holds an anchor, the first ``_ANCHOR`` bytes of ``F[r::k]``, and
reports every occurrence of every anchor (overlapping ones included). Each anchor hit names
candidate (form, start) pairs, which are confirmed exactly with ``bytes.startswith``, and the
longest form at each start is kept. Every occurrence yields its anchor, so nothing is missed;
the stride only decides how many bytes the automaton walks. k is the largest stride up to
``_MAX_STRIDE`` that still gives every form anchors of ``_MIN_ANCHOR`` bytes (so it drops to 1,
a plain scan, when a form is short). Short anchors keep the automaton small enough to be a
DFA, the fastest kind, for the usual number of secrets; a larger set gets the compact NFA.
Base64 wrapped in lines is joined first and matched the same way (``oneoff._redact_wrap``), and
the rows of a hex dump are read back and the bytes they show matched (``oneoff._redact_dump``).

Held-back bytes: ``feed`` keeps the last ``max_form_length - 1`` bytes (cheap, no search);
``release`` returns all of them but the longest suffix that could still begin a form (a
prefix of some form, plus the base64 character before it), which is what an interactive
prompt needs to show at once. Both give the same output as one pass over the whole stream.
``release_quiet`` (a task that went quiet) also shows that suffix when it is at most
``QUIET_SHOW`` bytes, and keeps it as context: if the rest of a secret follows, the marker
starts right after the bytes already shown. So a secret split by a pause shows at most its
first ``QUIET_SHOW`` bytes, and a longer held suffix waits for more output or the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from oneoff._params import SECRET_MIN_LENGTH
from oneoff._redact_dump import ROW_MAX, dumps, may_start
from oneoff._redact_forms import forms
from oneoff._redact_wrap import NARROW, Block, blocks, join, lead_before, scan, to_buf
from oneoff.errors import SecretError

if TYPE_CHECKING:
    from ahocorasick_rs import BytesAhoCorasick

__all__ = ["MIN_LENGTH", "MIN_SAFE_LENGTH", "QUIET_SHOW", "Redactor", "forms_of"]

#: Below this even a base64 core is too short to identify a secret, so ``min_length`` may not go
#: lower.
MIN_SAFE_LENGTH: Final = 4
#: The shortest secret a run accepts (``Redactor``'s default ``min_length``).
MIN_LENGTH: Final = SECRET_MIN_LENGTH
#: A quiet stream shows a held suffix of at most this many bytes (see ``release_quiet``).
QUIET_SHOW: Final = 3

_B64_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_WORD: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NEWLINE: Final = frozenset(b"\r\n")
_B64_BYTES: Final = bytes(sorted(_B64_CHARS))
#: The start of a dump's row still being written: part of an offset, or an offset and hex
#: (then anything: more hex, the text column).
_ROW_BEGUN: Final = re.compile(rb"[0-9a-fA-F]{1,8}\Z|[0-9a-fA-F]{6,8}:? {1,2}(?:[0-9a-fA-F]|\Z)")
#: Anchors are cut to this many bytes: long enough that ordinary output rarely yields a
#: candidate, short enough to keep the automaton small.
_ANCHOR: Final = 6
#: A stride is only used if every anchor still has this many bytes (fewer candidates to check).
_MIN_ANCHOR: Final = 4
_MAX_STRIDE: Final = 6
#: release() looks suffixes up by their first bytes: shorter ones in a set of short prefixes.
_HEAD: Final = 4
#: Up to this many anchor bytes (about 100-150 secrets) the automaton is a DFA, at most ~25 MB;
#: beyond, the contiguous NFA (about half the speed, a fraction of the memory).
_DFA_MAX_PATTERN_BYTES: Final = 65_536

# (form, name, partial base64 char before, partial base64 char after, whole token only)
_Entry = tuple[bytes, str, bool, bool, bool]


def _stride(shortest: int) -> int:
    """The largest stride at which a form of ``shortest`` bytes has anchors of _MIN_ANCHOR."""
    for k in range(_MAX_STRIDE, 1, -1):
        if len(range(k - 1, shortest, k)) >= _MIN_ANCHOR:  # the shortest phase
            return k
    return 1


def forms_of(secret: str) -> list[bytes]:
    """Every encoded form of ``secret`` that a Redactor matches, longest first."""
    return sorted(forms(secret), key=lambda f: (-len(f), f))


def _load_matcher(patterns: list[bytes]) -> BytesAhoCorasick:
    try:
        import ahocorasick_rs
    except ImportError as exc:  # fail closed: never run a task whose output cannot be redacted
        raise SecretError(
            f"cannot redact secrets: the ahocorasick-rs package is missing ({exc})",
            hint="reinstall oneoff with its dependencies",
        ) from exc
    impl = ahocorasick_rs.Implementation
    big = sum(map(len, patterns)) > _DFA_MAX_PATTERN_BYTES
    return ahocorasick_rs.BytesAhoCorasick(
        patterns,
        matchkind=ahocorasick_rs.MatchKind.Standard,  # the only kind with overlapping matches
        implementation=impl.ContiguousNFA if big else impl.DFA,
    )


class Redactor:
    """Replaces every form of every secret in a byte stream with ``[REDACTED:NAME]``.

    ``secrets`` maps names to values. An empty value is ignored: there is nothing to leak and
    unset secrets are common. A non-empty value shorter than ``min_length`` raises SecretError,
    because matching it would redact innocent output and its short encodings could not be told
    apart from noise; with ``skip_short`` such a value is left out instead (for displays that
    must not fail, never for a run's output).

    ``feed`` returns what is safe to show now and holds back at most ``max_form_length - 1``
    bytes; ``flush`` returns the rest at end of stream. Bytes that are not part of a match pass
    through unchanged, whatever their encoding.
    """

    def __init__(
        self, secrets: Mapping[str, str], *, min_length: int = MIN_LENGTH, skip_short: bool = False
    ) -> None:
        if min_length < MIN_SAFE_LENGTH:
            raise ValueError(f"min_length must be at least {MIN_SAFE_LENGTH}, not {min_length}")
        # form -> (name, before, after, token)
        info: dict[bytes, tuple[str, bool, bool, bool]] = {}
        for name in sorted(secrets):
            value = secrets[name]
            if value == "":
                continue
            if len(value) < min_length:
                if skip_short:
                    continue
                raise SecretError(
                    f"secret {name} is {len(value)} characters long, too short to redact safely"
                    f" (at least {min_length} are needed)",
                    hint=short_secret_hint(name),
                )
            for form, f in forms(value).items():
                old = info.get(form)
                if old is None:
                    info[form] = (name, f.before, f.after, f.token)
                else:
                    # Same form from two secrets: the first name in sorted order keeps it.
                    info[form] = (old[0], old[1] or f.before, old[2] or f.after, old[3] and f.token)
        self._tail = b""
        self._pending = 0  # bytes at the start of the tail already under an emitted marker
        self._shown = 0  # bytes at the start of the tail already shown (release_quiet)
        self._lead = 0  # base64 characters right before the tail (for wrapped lines)
        self._before = -1  # the byte right before the tail (-1: none), for whole-token forms
        # Wrapped in lines, a form takes a line break every NARROW bytes (up to 2 bytes); a
        # partial neighbour may sit behind one too; a token needs the byte after it.
        self._form_max = max(
            (
                len(f) + 2 * (len(f) // NARROW + 1) + 3 * (before + after) + token
                for f, (_, before, after, token) in info.items()
            ),
            default=0,
        )
        # A hex dump shows a byte in up to 5 bytes (hex, separator, text column): a form there
        # runs from its first hex digit to the end of its last row.
        self.max_form_length = max(self._form_max, max(map(len, info), default=0) * 5 + 2 * ROW_MAX)
        self._ctx = b""  # up to ROW_MAX bytes shown right before the tail (a dump row's start)
        self._line = b"\n"  # b"\n" while _ctx begins where the stream does (a line start)
        self._stride = _stride(min(map(len, info), default=1))
        k = self._stride
        by_anchor: dict[bytes, list[tuple[int, _Entry]]] = {}
        span = k * _ANCHOR
        for form, (name, before, after, token) in info.items():
            entry = (form, name, before, after, token)
            for r in range(k):
                anchor = form[r : r + span : k]
                pairs = by_anchor.get(anchor)
                if pairs is None:
                    by_anchor[anchor] = [(r, entry)]
                else:
                    pairs.append((r, entry))
        # Automaton pattern i -> (phase, form) pairs it anchors.
        self._candidates: list[tuple[tuple[int, _Entry], ...]] = [
            tuple(pairs) for pairs in by_anchor.values()
        ]
        self._matcher = _load_matcher(list(by_anchor)) if by_anchor else None
        # For release(): the forms by their first _HEAD bytes, and every shorter prefix.
        heads: dict[bytes, list[bytes]] = {}
        for form in info:
            head = form[:_HEAD]
            group = heads.get(head)
            if group is None:
                heads[head] = [form]
            else:
                group.append(form)
        self._heads = {head: tuple(forms) for head, forms in heads.items()}
        self._short = frozenset(head[:i] for head in heads for i in range(1, len(head)))

    def fresh(self) -> Redactor:
        """A redactor for another stream over the same secrets (shares the automaton)."""
        other = object.__new__(Redactor)
        other.__dict__.update(self.__dict__)
        other._tail, other._pending, other._shown, other._lead = b"", 0, 0, 0
        other._before, other._ctx, other._line = -1, b"", b"\n"
        return other

    @property
    def held_back(self) -> int:
        """Number of bytes fed but not yet shown (as themselves or under a marker)."""
        return len(self._tail) - max(self._pending, self._shown)

    def feed(self, data: bytes) -> bytes:
        """Redact ``data`` as the next piece of the stream; return the bytes safe to emit now."""
        return bytes(self.feed_view(data))

    def feed_view(self, data: bytes) -> bytes | memoryview:
        """Like ``feed``, but when nothing is redacted the result may be a view (no copy)."""
        if self._matcher is None:
            return data
        buf = self._tail + data if self._tail else bytes(data)
        cut = len(buf) - (self.max_form_length - 1)
        if cut <= 0:
            self._tail = buf
            return b""
        return self._emit(buf, cut)

    def release(self) -> bytes:
        """Return the held-back bytes that cannot begin any form, redacted; keep the rest.

        What stays held is the longest suffix that is a prefix of some form (a whole form too:
        its end may take the next base64 character), and one base64 character before it (a
        form's partial neighbour); in wrapped base64, the same over the joined lines; in a hex
        dump, from the hex of the first byte that could begin a form. Usually nothing: a
        prompt shows at once.
        """
        buf = self._tail
        if not buf:
            return b""
        cut = min(_with_neighbour(buf, self._hold_from(buf)), self._dump_hold(buf))
        wrapped = self._last_block(buf)
        if wrapped is not None:  # a form may have begun on an earlier line of the block
            joined = join(buf, wrapped)
            held = _with_neighbour(joined, self._hold_from(joined))
            if held < len(joined):
                cut = min(cut, to_buf(wrapped, held))
        elif buf.endswith(b"\n"):  # a whole line of base64 may be a narrow block's first
            cut = min(cut, self._line_hold(buf))
        if cut == 0:
            return b""
        return bytes(self._emit(buf, cut))

    def _line_hold(self, buf: bytes) -> int:
        """Where the last line of ``buf`` (which ends with it) could begin a form wrapped in
        lines, if it is all base64: the next line may go on with it (len(buf): nowhere).

        Only a start of NARROW characters or more is held: a line that merely ends with a
        character or three that begin some form (most lines do) shows at once.
        """
        end = len(buf) - (2 if buf.endswith(b"\r\n") else 1)
        start = buf.rfind(b"\n", 0, end) + 1
        line = buf[start:end]
        if len(line) < NARROW or line.strip(_B64_BYTES):
            return len(buf)
        held = self._hold_from(line)
        if len(line) - held < NARROW:
            return len(buf)
        return start + _with_neighbour(line, held)

    def release_quiet(self) -> bytes:
        """The stream went quiet: show a held suffix of at most QUIET_SHOW bytes, as context.

        Called after ``release``, so what is held could begin a secret. If it is that short,
        it is shown (a prompt must not wait for an answer it asks for) but kept: should the
        rest of a secret follow, it is still matched, and its marker starts where the shown
        bytes end. A longer held suffix is most of a secret's start: it stays held.
        """
        done = max(self._pending, self._shown)
        # Count what was shown at earlier pauses too: pause after pause must not show a
        # secret QUIET_SHOW bytes at a time.
        if len(self._tail) <= done or len(self._tail) - self._pending > QUIET_SHOW:
            return b""
        self._shown = len(self._tail)
        return self._tail[done:]

    def _last_block(self, buf: bytes) -> Block | None:
        """The wrapped base64 block that reaches the end of ``buf``, if any."""
        found = blocks(buf, self._form_max, self._lead)
        if not found:
            return None
        last = found[-1]
        pos, gap = last.breaks[-1]
        # A line that ends the buffer may be followed by the next one of the block.
        ends = last.end == len(buf) or buf[last.end :] in (b"\n", b"\r\n", b"\r")
        return last if ends or pos + gap == len(buf) else None

    def _hold_from(self, buf: bytes) -> int:
        """Start of the longest suffix of ``buf`` that is a prefix of some form (len if none)."""
        heads_get, short_set = self._heads.get, self._short
        n = len(buf)
        for i in range(max(0, n - self._form_max), n):
            if n - i < _HEAD:
                if buf[i:] in short_set or buf[i:] in self._heads:
                    return i
                continue
            forms = heads_get(buf[i : i + _HEAD])
            if forms is not None:
                suffix = buf[i:]
                if any(form.startswith(suffix) for form in forms):
                    return i
        return n

    def flush(self) -> bytes:
        """End of stream: return everything still held back, redacted."""
        buf = self._tail
        if not buf:
            self._pending = self._shown = self._lead = 0
            return b""
        out = bytes(self._emit(buf, len(buf)))
        self._tail, self._ctx, self._line = b"", b"", b"\n"
        self._pending = self._shown = self._lead = 0
        self._before = -1
        return out

    def redact(self, data: bytes) -> bytes:
        """Redact a complete output in one go (independent of any stream in progress)."""
        one_shot = self.fresh()
        return one_shot.feed(data) + one_shot.flush()

    def redact_text(self, text: str) -> str:
        """Redact a complete text in one go."""
        return self.redact(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def _emit(self, buf: bytes, cut: int) -> bytes | memoryview:
        """Return ``buf[:cut]`` redacted (less what was already shown); keep ``buf[cut:]``."""
        spans = self._spans(buf, cut)
        if cut > 0:
            self._before = buf[cut - 1]
            if cut >= ROW_MAX:
                self._ctx, self._line = buf[cut - ROW_MAX : cut], b""
            else:
                ctx = self._ctx + buf[:cut]
                if len(ctx) > ROW_MAX:
                    ctx, self._line = ctx[-ROW_MAX:], b""
                self._ctx = ctx
        self._tail = buf[cut:]
        self._lead = lead_before(buf, cut, self._lead)
        group_end = self._pending  # bytes before this already sit under an emitted marker
        done = max(group_end, self._shown)  # bytes before this were emitted one way or another
        shown = self._shown
        self._shown = max(0, shown - cut)
        if not spans and done == 0:
            return memoryview(buf)[:cut]  # the common case: a 64 KiB read, not copied again
        parts: list[bytes] = []
        for start, end, name in spans:
            if start < group_end:
                group_end = max(group_end, end)
                continue
            done = max(done, group_end)
            if end <= done:
                continue
            if start > done:
                parts.append(buf[done:start])
                done = start
            # A match that began in bytes already shown: its marker covers the rest of it.
            parts.append(b"[REDACTED:" + name.encode() + b"]")
            group_end = end
        done = max(done, group_end)
        if done < cut:
            parts.append(buf[done:cut])
        self._pending = max(0, group_end - cut)
        return b"".join(parts)

    def _spans(self, buf: bytes, cut: int) -> list[tuple[int, int, str]]:
        """Every match whose (extended) start is before ``cut``, sorted by start, longest first.

        At each start only the longest form counts, as its own span; a shorter form at the same
        start is covered by it. Matches across the line breaks of wrapped base64 count too.
        """
        spans = self._matches(buf, cut, self._before)
        found, dump = scan(buf, self._form_max, self._lead)
        if dump or may_start(self._line + self._ctx + buf[:ROW_MAX]):
            spans += self._dump_spans(buf, cut)
        for block in found:
            if block.start >= cut:
                break
            joined = join(buf, block)
            for start, end, name in self._matches(joined, len(joined)):  # rare: no hurry
                first, last = to_buf(block, start), to_buf(block, end - 1) + 1
                if last - first > end - start and first < cut:  # it crosses a line break
                    spans.append((first, last, name))
        spans.sort(key=lambda s: (s[0], -s[1], s[2]))
        return spans

    def _dump_spans(self, buf: bytes, cut: int) -> list[tuple[int, int, str]]:
        """Matches in the bytes hex dumps show, each from its first hex digit to its row's end.

        Rows are read from the bytes shown before the tail too: the row of a secret's first
        byte may have begun there.
        """
        ctx = len(self._ctx)
        spans = []
        for dump in dumps(self._ctx + buf, final=cut == len(buf)):
            for start, end, name in self._matches(dump.data, len(dump.data)):  # rare: no hurry
                first = dump.at[start] - ctx
                if 0 <= first < cut:
                    spans.append((first, dump.ends[end - 1] - ctx, name))
        return spans

    def _dump_hold(self, buf: bytes) -> int:
        """Where release() must hold ``buf`` from for a hex dump's sake (len(buf): nowhere).

        From the hex of the first byte that could begin a form in the rows that end ``buf``,
        and an unfinished last line that may be a row being written.
        """
        text = self._ctx + buf
        ctx, hold = len(self._ctx), len(buf)
        line = text.rfind(b"\n") + 1
        if (line or self._line) and _ROW_BEGUN.match(text, line):
            hold = max(0, line - ctx)
        if not may_start(self._line + text):
            return hold
        for dump in dumps(text):
            if dump.ends[-1] + 2 >= line:  # its rows reach the last line
                held = self._hold_from(dump.data)
                if held < len(dump.data):
                    hold = min(hold, max(0, dump.at[held] - ctx))
        return hold

    def _matches(self, buf: bytes, cut: int, before: int = -1) -> list[tuple[int, int, str]]:
        """The longest match at each start before ``cut`` (extended over partial neighbours).

        ``before`` is the byte preceding ``buf`` in the stream (-1: none): a whole-token form at
        the very start of a held tail is judged by what was emitted before it, as in one go.
        """
        assert self._matcher is not None
        k = self._stride
        hits = self._matcher.find_matches_as_indexes(buf[::k] if k > 1 else buf, overlapping=True)
        if not hits:
            return []
        candidates = self._candidates
        word = _WORD
        n = len(buf)
        best: dict[int, _Entry] = {}
        for pattern, at, _ in hits:
            for r, entry in candidates[pattern]:
                start = at * k - r
                # Past cut, even a partial base64 char before the form would start at cut or later.
                if 0 <= start <= cut and buf.startswith(entry[0], start):
                    if entry[4]:  # a whole token only
                        end = start + len(entry[0])
                        prev = buf[start - 1] if start > 0 else before
                        if prev in word or (end < n and buf[end] in word):
                            continue
                    old = best.get(start)
                    if old is None or len(entry[0]) > len(old[0]):
                        best[start] = entry
        spans: list[tuple[int, int, str]] = []
        for start, (form, name, before, after, _token) in best.items():
            end = start + len(form)
            if before:
                start = _neighbour_before(buf, start)
            if after:
                end = _neighbour_after(buf, end)
            if start < cut:
                spans.append((start, end, name))
        return spans


def _with_neighbour(buf: bytes, cut: int) -> int:
    """``cut``, less the base64 character before it (a partial neighbour of a form at cut)."""
    return cut - 1 if cut > 0 and buf[cut - 1] in _B64_CHARS else cut


def _neighbour_before(buf: bytes, start: int) -> int:
    """Extend ``start`` over a base64 character before it, also across one line break."""
    i = start - 1
    while i >= 0 and start - i <= 2 and buf[i] in _NEWLINE:
        i -= 1
    return i if i >= 0 and buf[i] in _B64_CHARS else start


def _neighbour_after(buf: bytes, end: int) -> int:
    """Extend ``end`` over a base64 character after it, also across one line break."""
    i, n = end, len(buf)
    while i < n and i - end < 2 and buf[i] in _NEWLINE:
        i += 1
    return i + 1 if i < n and buf[i] in _B64_CHARS else end


def short_secret_hint(name: str) -> str:
    """How to fix a refused short secret, naming both ways out."""
    base = name.split(":", 1)[0]
    return (
        f"use a longer, random value for {base}; if {base} is not a secret at all (a sort or "
        f'cache key matching a secret pattern), list it in its environment: not_secret = ["{base}"]'
    )
