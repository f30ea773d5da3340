"""Streaming redaction of secret values, raw and encoded, from a task's output bytes.

Every secret is searched for in these forms (``forms_of`` lists them): the raw UTF-8 bytes;
base64 (standard and URL-safe) of the secret alone with padding, and the stable core of the
secret embedded in a larger base64 stream at each of the three byte alignments; URL encoding
(``quote`` and ``quote_plus`` with ``safe=""``, percent escapes in upper and lower case); hex in
lower and upper case; JSON string escaping with and without ``ensure_ascii``.

Each maximal run of overlapping matches becomes one ``[REDACTED:NAME]``, named after the longest
match at the run's first byte. The result does not depend on how the stream is chunked. For a
base64 core, the neighbouring base64 character that mixes secret bits with outside bits is
swallowed too, so not even a few bits of the secret stay visible.

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

Held-back bytes: ``feed`` keeps the last ``max_form_length - 1`` bytes (cheap, no search);
``release`` returns all of them but the longest suffix that could still begin a form (a
prefix of some form, plus the base64 character before it), which is what an interactive
prompt needs to show at once. Both give the same output as one pass over the whole stream.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, quote_plus

from oneoff.errors import SecretError

if TYPE_CHECKING:
    from ahocorasick_rs import BytesAhoCorasick

__all__ = ["MIN_SAFE_LENGTH", "Redactor", "forms_of"]

#: Below this even a base64 core is too short to identify a secret, so ``min_length`` may not go
#: lower.
MIN_SAFE_LENGTH: Final = 4

_B64_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_PCT = re.compile(r"%[0-9A-F]{2}")
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
#: Anchors are cut to this many bytes: long enough that ordinary output rarely yields a
#: candidate, short enough to keep the automaton small.
_ANCHOR: Final = 8
#: A stride is only used if every anchor still has this many bytes (fewer candidates to check).
_MIN_ANCHOR: Final = 4
_MAX_STRIDE: Final = 6
#: release() looks suffixes up by their first bytes: shorter ones in a set of short prefixes.
_HEAD: Final = 4
#: Up to this many anchor bytes (about 100-200 secrets) the automaton is a DFA, at most ~15 MB;
#: beyond, the contiguous NFA (about half the speed, a fraction of the memory).
_DFA_MAX_PATTERN_BYTES: Final = 32_768

# (form, name, partial base64 char before, partial base64 char after)
_Entry = tuple[bytes, str, bool, bool]


def _stride(shortest: int) -> int:
    """The largest stride at which a form of ``shortest`` bytes has anchors of _MIN_ANCHOR."""
    for k in range(_MAX_STRIDE, 1, -1):
        if len(range(k - 1, shortest, k)) >= _MIN_ANCHOR:  # len(F[k-1::k]), the shortest phase
            return k
    return 1


def _b64_cores(raw: bytes) -> list[tuple[bytes, bool, bool]]:
    """Stable core of ``raw`` inside a larger base64 stream at offset 0, 1 and 2 (mod 3).

    Returns (core, partial_before, partial_after): whether a neighbouring character also
    carries bits of the secret.
    """
    out = []
    n_bits = 8 * len(raw)
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw + b"\0\0")
        start_bit = 8 * k
        lo = -(-start_bit // 6)
        hi = (start_bit + n_bits) // 6
        out.append((encoded[lo:hi], lo * 6 != start_bit, hi * 6 != start_bit + n_bits))
    return out


def _forms(secret: str) -> dict[bytes, tuple[bool, bool]]:
    """Every searched form of ``secret``, with its base64 partial-neighbour flags."""
    raw = secret.encode()
    forms: dict[bytes, tuple[bool, bool]] = {}

    def add(form: bytes, before: bool = False, after: bool = False) -> None:
        old = forms.get(form, (False, False))
        forms[form] = (old[0] or before, old[1] or after)

    add(raw)
    for core, before, after in _b64_cores(raw):
        add(core, before, after)
        add(core.translate(_URLSAFE), before, after)
    padded = base64.b64encode(raw)
    add(padded)
    add(padded.translate(_URLSAFE))
    for quoted in (quote(secret, safe=""), quote_plus(secret, safe="")):
        add(quoted.encode())
        add(_PCT.sub(lambda m: m.group().lower(), quoted).encode())
    add(raw.hex().encode())
    add(raw.hex().upper().encode())
    add(json.dumps(secret)[1:-1].encode())
    add(json.dumps(secret, ensure_ascii=False)[1:-1].encode())
    return forms


def forms_of(secret: str) -> list[bytes]:
    """Every encoded form of ``secret`` that a Redactor matches, longest first."""
    return sorted(_forms(secret), key=lambda f: (-len(f), f))


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
    apart from noise.

    ``feed`` returns what is safe to show now and holds back at most ``max_form_length - 1``
    bytes; ``flush`` returns the rest at end of stream. Bytes that are not part of a match pass
    through unchanged, whatever their encoding.
    """

    def __init__(self, secrets: Mapping[str, str], *, min_length: int = 6) -> None:
        if min_length < MIN_SAFE_LENGTH:
            raise ValueError(f"min_length must be at least {MIN_SAFE_LENGTH}, not {min_length}")
        # form -> (name, partial base64 char before, partial base64 char after)
        info: dict[bytes, tuple[str, bool, bool]] = {}
        for name in sorted(secrets):
            value = secrets[name]
            if value == "":
                continue
            if len(value) < min_length:
                raise SecretError(
                    f"secret {name} is {len(value)} characters long, too short to redact safely"
                    f" (at least {min_length} are needed)",
                    hint=f"use a longer, random value for {name}",
                )
            for form, (before, after) in _forms(value).items():
                old = info.get(form)
                if old is None:
                    info[form] = (name, before, after)
                else:
                    # Same form from two secrets: the first name in sorted order keeps it.
                    info[form] = (old[0], old[1] or before, old[2] or after)
        self._tail = b""
        self._pending = 0
        self.max_form_length = max(
            (len(f) + before + after for f, (_, before, after) in info.items()), default=0
        )
        self._stride = _stride(min((len(f) for f in info), default=1))
        k = self._stride
        by_anchor: dict[bytes, list[tuple[int, _Entry]]] = {}
        for form, (name, before, after) in info.items():
            for r in range(k):
                anchor = form[r::k][:_ANCHOR]
                by_anchor.setdefault(anchor, []).append((r, (form, name, before, after)))
        # Automaton pattern i -> (phase, form) pairs it anchors.
        self._candidates: list[tuple[tuple[int, _Entry], ...]] = [
            tuple(pairs) for pairs in by_anchor.values()
        ]
        self._matcher = _load_matcher(list(by_anchor)) if by_anchor else None
        # For release(): the forms by their first _HEAD bytes, and every shorter prefix.
        heads: dict[bytes, list[bytes]] = {}
        short: set[bytes] = set()
        for form in info:
            heads.setdefault(form[:_HEAD], []).append(form)
            short.update(form[:i] for i in range(1, min(len(form), _HEAD)))
        self._heads = {head: tuple(forms) for head, forms in heads.items()}
        self._short = frozenset(short)

    def fresh(self) -> Redactor:
        """A redactor for another stream over the same secrets (shares the automaton)."""
        other = object.__new__(Redactor)
        other.__dict__.update(self.__dict__)
        other._tail, other._pending = b"", 0
        return other

    @property
    def held_back(self) -> int:
        """Number of bytes fed but not yet returned."""
        return len(self._tail)

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
        form's partial neighbour). Usually nothing: a prompt shows at once.
        """
        buf = self._tail
        if not buf:
            return b""
        cut = self._hold_from(buf)
        if cut > 0 and buf[cut - 1] in _B64_CHARS:
            cut -= 1
        if cut == 0:
            return b""
        return bytes(self._emit(buf, cut))

    def _hold_from(self, buf: bytes) -> int:
        """Start of the longest suffix of ``buf`` that is a prefix of some form (len if none)."""
        heads_get, short_set = self._heads.get, self._short
        n = len(buf)
        for i in range(max(0, n - self.max_form_length), n):
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
        buf, self._tail = self._tail, b""
        if not buf:
            self._pending = 0
            return b""
        return bytes(self._emit(buf, len(buf)))

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
        """Return ``buf[:cut]`` redacted and keep ``buf[cut:]`` as the tail."""
        spans = self._spans(buf, cut)
        self._tail = buf[cut:]
        group_end = self._pending  # bytes before this already sit under an emitted marker
        if not spans and group_end == 0:
            return memoryview(buf)[:cut]  # the common case: a 64 KiB read, not copied again
        parts: list[bytes] = []
        pos = 0
        for start, end, name in spans:
            if start < group_end:
                group_end = max(group_end, end)
                continue
            pos = max(pos, group_end)
            parts.append(buf[pos:start])
            parts.append(b"[REDACTED:" + name.encode() + b"]")
            pos, group_end = start, end
        pos = max(pos, group_end)
        if pos < cut:
            parts.append(buf[pos:cut])
        self._pending = max(0, pos - cut)
        return b"".join(parts)

    def _spans(self, buf: bytes, cut: int) -> list[tuple[int, int, str]]:
        """Every match whose (extended) start is before ``cut``, sorted by start, longest first.

        At each start only the longest form counts, as its own span; a shorter form at the same
        start is covered by it.
        """
        assert self._matcher is not None
        k = self._stride
        hits = self._matcher.find_matches_as_indexes(buf[::k] if k > 1 else buf, overlapping=True)
        if not hits:
            return []
        candidates = self._candidates
        best: dict[int, _Entry] = {}
        for pattern, at, _ in hits:
            for r, entry in candidates[pattern]:
                start = at * k - r
                # Past cut, even a partial base64 char before the form would start at cut or later.
                if 0 <= start <= cut and buf.startswith(entry[0], start):
                    old = best.get(start)
                    if old is None or len(entry[0]) > len(old[0]):
                        best[start] = entry
        n = len(buf)
        spans: list[tuple[int, int, str]] = []
        for start, (form, name, before, after) in best.items():
            end = start + len(form)
            if before and start > 0 and buf[start - 1] in _B64_CHARS:
                start -= 1
            if after and end < n and buf[end] in _B64_CHARS:
                end += 1
            if start < cut:
                spans.append((start, end, name))
        spans.sort(key=lambda s: (s[0], -s[1], s[2]))
        return spans
