"""The encoded forms of a secret that the redactor searches for, each a literal byte string.

Every form is precomputed when a run starts, so matching stays one Aho-Corasick scan (see
``oneoff._redact``). The forms, for a secret ``s`` (duplicates collapse):

- raw UTF-8; if ``s`` holds ``\\n``, also with ``\\r\\n`` (a pty's output translation), and
  with every line after the first indented by 1 to 16 spaces or 1 or 2 tabs (a key embedded in
  YAML or an indented config dump), its trailing line breaks left out;
- base64, standard and URL-safe: ``s`` alone with padding, and the stable core of ``s``
  inside a larger base64 stream at each of the three byte alignments (wrapped in lines, they
  are found by joining the lines first: see ``oneoff._redact_wrap``);
- base32 (RFC 4648, as ``base64.b32encode`` and coreutils ``base32`` write it): ``s`` alone
  with padding, and its core inside a larger base32 stream at each of the five alignments;
- percent-encoding as ``urllib.parse.quote`` writes it with ``safe=""`` and its default
  ``safe="/"``, as ``quote_plus``, as JavaScript's ``encodeURIComponent`` and
  ``URLSearchParams`` write it, each with upper- and lower-case escapes;
- hex, lower and upper case;
- JSON string escaping as Python (``ensure_ascii`` on and off), JavaScript, Go (``\\u003c
  \\u003e \\u0026``, U+2028/9 escaped) and PHP (``\\/``) write it, ``\\uXXXX`` in either case.
- Python's ``repr`` of ``s`` and of its UTF-8 bytes (``print(settings)``, ``%r``);
- shell quoting as ``shlex.quote`` writes it (``'`` as ``'"'"'``) and HTML escaping as
  ``html.escape`` writes it (``&amp; &lt; &gt; &quot; &#x27;``, and with ``quote=False``).

Out of scope (not matched): double or nested encodings, compression, rot13 and other ciphers,
narrow base64 blocks whose lines are indented or carry other text, base85 and ascii85 (their
forms, with alphabets of nearly all printable characters, slowed the automaton's scan by a
third or more: see the README).

A *low-entropy* secret (a lower-case word, perhaps capitalised, then at most four digits, or
only digits, up to 16 characters: ``postgres``, ``Hunter22``, ``123456``) is matched as a
whole token in its text forms: the bytes around it must not be ASCII letters or digits.
Matched inside words, it would mangle ordinary output (``postgresql`` as ``[REDACTED]ql``)
and the markers' places would reveal it anyway; the cost is that such a secret written glued
to other letters or digits shows. Its base64 and hex forms still match anywhere.

Each form comes with ``Form`` flags: whether a neighbouring base64 character carries bits of
the secret (to be swallowed with it), and whether it must stand as a whole token.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shlex
from collections.abc import Callable
from typing import Final, NamedTuple
from urllib.parse import quote, quote_plus

__all__ = ["Form", "forms", "is_low_entropy"]

_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_PCT = re.compile(r"%[0-9A-F]{2}")
_JSON_U = re.compile(r"\\u[0-9a-f]{4}")
# A word as people type one: lower case, perhaps capitalised. A mixed-case or longer run of
# letters is what random generators print, and must match anywhere.
_LOW_ENTROPY = re.compile(r"[A-Za-z][a-z]*[0-9]{0,4}|[0-9]+")
_LOW_ENTROPY_MAX: Final = 16
#: JavaScript's encodeURIComponent leaves these unescaped beyond quote()'s own set.
_JS_COMPONENT_SAFE: Final = "!'()*"
_INDENTS: Final = (*(b" " * n for n in range(1, 17)), b"\t", b"\t\t")
_GO_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_GO_ESCAPES.update({"\u2028": "\\u2028", "\u2029": "\\u2029"})


class Form(NamedTuple):
    before: bool  # the base64 (or base32) character before also carries bits of the secret
    after: bool  # the base64 character after also does
    token: bool  # only a whole token: no ASCII letter or digit may touch it


def is_low_entropy(secret: str) -> bool:
    """Dictionary-like: a word with a few digits, or a number (see the module docstring)."""
    return len(secret) <= _LOW_ENTROPY_MAX and _LOW_ENTROPY.fullmatch(secret) is not None


def _b64_cores(raw: bytes) -> list[tuple[bytes, bool, bool]]:
    """Stable core of ``raw`` inside a larger base64 stream at offset 0, 1 and 2 (mod 3).

    Returns (core, partial_before, partial_after): whether a neighbouring character also
    carries bits of the secret.
    """
    return _bit_cores(raw, base64.b64encode, 6)


def _bit_cores(
    raw: bytes, encode: Callable[[bytes], bytes], bits: int
) -> list[tuple[bytes, bool, bool]]:
    """The cores of ``raw`` in a stream of ``bits``-bit characters, at every byte alignment."""
    out = []
    n_bits = 8 * len(raw)
    group = bits // math.gcd(bits, 8)  # bytes until characters and bytes align again
    for k in range(group):
        encoded = encode(b"\0" * k + raw + b"\0" * group)
        start_bit = 8 * k
        lo = -(-start_bit // bits)
        hi = (start_bit + n_bits) // bits
        out.append((encoded[lo:hi], lo * bits != start_bit, hi * bits != start_bit + n_bits))
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


def _repr_forms(secret: str, raw: bytes) -> set[str]:
    # What print(settings_dict), logging's %r and f"{x!r}" show: Python's repr of the str
    # (quotes chosen by its content, \\ \n \t \' escaped) and of its UTF-8 bytes (\xNN).
    return {repr(secret)[1:-1], repr(raw)[2:-1]}


def _quoted_forms(secret: str) -> set[str]:
    # shlex.quote wraps an unsafe value in '...' and writes each ' as '"'"'; html.escape
    # writes & < > (and by default " ') as entities. Where nothing changes, the raw form covers it.
    forms = {html.escape(secret), html.escape(secret, quote=False)}
    if "'" in secret:
        forms.add(shlex.quote(secret)[1:-1])
    return forms - {secret}


def _indented_forms(raw: bytes) -> set[bytes]:
    # A multi-line secret (a PEM key) printed inside YAML or an indented dump gets the same
    # indent after each of its line breaks; a break at its very end is followed by whatever
    # comes next, so the form stops before it.
    body = raw.rstrip(b"\r\n")
    if b"\n" not in body:
        return set()
    out = set()
    for indent in _INDENTS:
        for newline in (b"\n", b"\r\n"):
            out.add(body.replace(b"\n", newline + indent))
    return out


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

    def add(form: bytes, before: bool = False, after: bool = False, *, text: bool = False) -> None:
        old = found.get(form)
        is_token = token and text
        if old is None:
            found[form] = Form(before, after, is_token)
        else:  # same bytes from two encodings: any partial neighbour, a token only if both say
            found[form] = Form(old.before or before, old.after or after, old.token and is_token)

    add(raw, text=True)
    if b"\n" in raw:
        add(raw.replace(b"\n", b"\r\n"), text=True)
        for form in _indented_forms(raw):
            add(form, text=True)
    for quoted in _url_forms(secret):
        add(quoted.encode(), text=True)
    for escaped in _json_forms(secret):
        add(escaped.encode("utf-8", "surrogateescape"), text=True)
    for escaped in _repr_forms(secret, raw):
        add(escaped.encode("utf-8", "surrogateescape"), text=True)
    for escaped in _quoted_forms(secret):
        add(escaped.encode("utf-8", "surrogateescape"), text=True)
    add(raw.hex().encode())
    add(raw.hex().upper().encode())
    padded = base64.b64encode(raw)
    add(padded)
    add(padded.translate(_URLSAFE))
    for core, before, after in _b64_cores(raw):
        add(core, before, after)
        add(core.translate(_URLSAFE), before, after)
    add(base64.b32encode(raw))
    for core, before, after in _bit_cores(raw, base64.b32encode, 5):
        add(core, before, after)
    return found
