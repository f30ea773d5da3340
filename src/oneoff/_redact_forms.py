"""The encoded forms of a secret that the redactor searches for, each a literal byte string.

Every form is precomputed when a run starts, so matching stays one Aho-Corasick scan (see
``oneoff._redact``). The forms, for a secret ``s`` (duplicates collapse):

- raw UTF-8; if ``s`` holds ``\\n``, also with ``\\r\\n`` (a pty's output translation);
- base64, standard and URL-safe: ``s`` alone with padding, and the stable core of ``s``
  inside a larger base64 stream at each of the three byte alignments; the standard-alphabet
  ones also wrapped in lines of 64 (PEM, openssl) and 76 (MIME, ``base64.encodebytes``,
  coreutils ``base64``) characters, at every line phase, with ``\\n`` or ``\\r\\n``;
- percent-encoding as ``urllib.parse.quote`` writes it with ``safe=""`` and its default
  ``safe="/"``, as ``quote_plus``, as JavaScript's ``encodeURIComponent`` and
  ``URLSearchParams`` write it, each with upper- and lower-case escapes;
- hex, lower and upper case;
- JSON string escaping as Python (``ensure_ascii`` on and off), JavaScript, Go (``\\u003c
  \\u003e \\u0026``, U+2028/9 escaped) and PHP (``\\/``) write it, ``\\uXXXX`` in either case.

Out of scope (not matched): double or nested encodings, compression, rot13 and other ciphers,
wrapping at widths other than 64 and 76, wrapped URL-safe base64.

A *low-entropy* secret (letters then at most a few digits, or only digits, up to 24
characters: ``postgres``, ``hunter22``, ``123456``) is matched as a whole token in its text
forms: the bytes around it must not be ASCII letters or digits. Matched inside words, it would
mangle ordinary output (``postgresql`` as ``[REDACTED]ql``) and the markers' places would
reveal it anyway; the cost is that such a secret written glued to other letters or digits
shows. Its base64 and hex forms still match anywhere.

Each form comes with ``Form`` flags: whether a neighbouring base64 character carries bits of
the secret (to be swallowed with it), whether it must stand as a whole token, and its
*window*, a stretch without line breaks from which the matcher takes its anchors.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Final, NamedTuple
from urllib.parse import quote, quote_plus

__all__ = ["Form", "forms", "is_low_entropy"]

_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_PCT = re.compile(r"%[0-9A-F]{2}")
_JSON_U = re.compile(r"\\u[0-9a-f]{4}")
_LOW_ENTROPY = re.compile(r"[A-Za-z]+[0-9]{0,4}|[0-9]+")
_LOW_ENTROPY_MAX: Final = 24
#: Line widths base64 encoders wrap at: PEM/openssl 64, MIME/Python/coreutils 76.
WRAP_WIDTHS: Final = (64, 76)
_BREAKS: Final = (b"\n", b"\r\n")
#: JavaScript's encodeURIComponent leaves these unescaped beyond quote()'s own set.
_JS_COMPONENT_SAFE: Final = "!'()*"
_GO_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_GO_ESCAPES.update({"\u2028": "\\u2028", "\u2029": "\\u2029"})


class Form(NamedTuple):
    before: bool  # the base64 character before also carries bits of the secret
    after: bool  # the base64 character after also does
    token: bool  # only a whole token: no ASCII letter or digit may touch it
    window: tuple[int, int]  # a stretch without inserted line breaks, for anchors


def is_low_entropy(secret: str) -> bool:
    """Dictionary-like: a word with a few digits, or a number (see the module docstring)."""
    return len(secret) <= _LOW_ENTROPY_MAX and _LOW_ENTROPY.fullmatch(secret) is not None


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


def _wrapped(text: bytes) -> dict[bytes, tuple[int, int]]:
    """``text`` with line breaks as a wrapping encoder puts them, each with its longest line.

    For each width and each phase (how many characters the first line still takes), one form;
    the same bytes from two widths collapse. The window is the longest line, in the form.
    """
    out: dict[bytes, tuple[int, int]] = {}
    n = len(text)
    if n <= min(WRAP_WIDTHS):  # one break at most: the common, fast case
        for brk in _BREAKS:
            gap = len(brk)
            for first in range(1, n):
                window = (0, first) if 2 * first >= n else (first + gap, n + gap)
                out[text[:first] + brk + text[first:]] = window
        return out
    for width in WRAP_WIDTHS:
        for first in range(1, min(width, n - 1) + 1):
            cuts = [0, *range(first, n, width), n]
            lines = [text[a:b] for a, b in itertools.pairwise(cuts)]
            for brk in _BREAKS:
                form = brk.join(lines)
                if form in out:
                    continue
                longest = max(range(len(lines)), key=lambda i: len(lines[i]))
                start = sum(len(line) for line in lines[:longest]) + longest * len(brk)
                out[form] = (start, start + len(lines[longest]))
    return out


def _json_forms(secret: str) -> set[str]:
    forms = set()
    for ascii_only in (True, False):
        plain = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        go = "".join(_GO_ESCAPES.get(c, c) for c in plain)
        for text in (plain, go):
            for slashed in (text, text.replace("/", "\\/")):
                forms.add(slashed)
                forms.add(_JSON_U.sub(lambda m: "\\u" + m.group()[2:].upper(), slashed))
    return forms


def _url_forms(secret: str) -> set[str]:
    quoted = {
        quote(secret, safe=""),
        quote(secret, safe="/"),
        quote(secret, safe=_JS_COMPONENT_SAFE),
        quote_plus(secret, safe=""),
        quote_plus(secret, safe="*"),  # URLSearchParams / form encoding in browsers
    }
    return quoted | {_PCT.sub(lambda m: m.group().lower(), q) for q in quoted}


def forms(secret: str) -> dict[bytes, Form]:
    """Every searched form of ``secret`` with its flags."""
    raw = secret.encode("utf-8", "surrogateescape")
    token = is_low_entropy(secret)
    found: dict[bytes, Form] = {}

    def add(
        form: bytes,
        before: bool = False,
        after: bool = False,
        *,
        text: bool = False,
        window: tuple[int, int] | None = None,
    ) -> None:
        old = found.get(form)
        is_token = token and text
        if old is None:
            found[form] = Form(before, after, is_token, window or (0, len(form)))
        else:  # same bytes from two encodings: any partial neighbour, a token only if both say
            found[form] = Form(
                old.before or before, old.after or after, old.token and is_token, old.window
            )

    add(raw, text=True)
    if b"\n" in raw:
        add(raw.replace(b"\n", b"\r\n"), text=True)
    for quoted in _url_forms(secret):
        add(quoted.encode(), text=True)
    for escaped in _json_forms(secret):
        add(escaped.encode("utf-8", "surrogateescape"), text=True)
    add(raw.hex().encode())
    add(raw.hex().upper().encode())
    padded = base64.b64encode(raw)
    add(padded)
    add(padded.translate(_URLSAFE))
    for core, before, after in _b64_cores(raw):
        add(core, before, after)
        add(core.translate(_URLSAFE), before, after)
        # The alignment-0 core is the padded form less its last partial character (taken as
        # a neighbour, across a line break too): wrapping the cores covers the padded form.
        for wrapped, window in _wrapped(core).items():
            add(wrapped, before, after, window=window)
    return found
