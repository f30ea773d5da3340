"""Property: whatever the secret, the encoder, the chunking and the pauses, no output shows it.

Secrets of 6 to 4096 characters (any Unicode, newlines and control characters included) are
printed by the encoders real programs use, and the result is fed to a Redactor the way the
output recorder does: in chunks cut anywhere, each maybe followed by ``release`` (a short
read) and ``release_quiet`` (a pause). No piece of output between markers may contain the
encoded secret, nor the secret itself.
"""

from __future__ import annotations

import base64
import json
import random
import re
import textwrap
from collections.abc import Callable
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oneoff._redact import Redactor
from oneoff._redact_forms import is_low_entropy

_MARKER = re.compile(rb"\[REDACTED:S\]")


def _go_json(text: str) -> bytes:
    out = json.dumps(text, ensure_ascii=False)[1:-1]
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        out = out.replace(char, escape)
    return out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _pem_body(raw: bytes) -> bytes:
    return "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 64)).encode()


def _pty(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


# name -> how a program prints the secret (its UTF-8 bytes, its text)
ENCODERS: dict[str, Callable[[bytes, str], bytes]] = {
    "raw": lambda raw, s: raw,
    "raw on a pty": lambda raw, s: _pty(raw),
    "base64": lambda raw, s: base64.b64encode(raw),
    "base64 url-safe": lambda raw, s: base64.urlsafe_b64encode(raw),
    "base64.encodebytes": lambda raw, s: base64.encodebytes(raw),
    "encodebytes on a pty": lambda raw, s: _pty(base64.encodebytes(raw)),
    "PEM body (64)": lambda raw, s: _pem_body(raw),
    "quote": lambda raw, s: quote(s).encode(),
    "quote safe=''": lambda raw, s: quote(s, safe="").encode(),
    "quote_plus": lambda raw, s: quote_plus(s).encode(),
    "encodeURIComponent": lambda raw, s: quote(s, safe="!'()*~").encode(),
    "lower-case escapes": lambda raw, s: re.sub(
        r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(s, safe="")
    ).encode(),
    "hex": lambda raw, s: raw.hex().encode(),
    "HEX": lambda raw, s: raw.hex().upper().encode(),
    "json": lambda raw, s: json.dumps(s).encode(),
    "json unicode": lambda raw, s: json.dumps(s, ensure_ascii=False).encode(),
    "json upper-case": lambda raw, s: re.sub(
        r"\\u[0-9a-f]{4}", lambda m: "\\u" + m.group()[2:].upper(), json.dumps(s)
    ).encode(),
    "PHP json": lambda raw, s: json.dumps(s).replace("/", "\\/").encode(),
    "Go json": lambda raw, s: _go_json(s),
}

_chars = st.characters(codec="utf-8")


def _long_secret(seed: int, size: int) -> str:
    # Hypothesis' own text strategy rarely reaches thousands of characters: draw them here.
    rng = random.Random(seed)
    pool = "ab\n\r\t/+=%é€𝄞\"'&<> \\\x00\x7f\u2028"
    return "".join(
        rng.choice(pool)
        if rng.random() < 0.3
        else chr(
            rng.choice(
                [
                    rng.randrange(0x21, 0x7F),
                    rng.randrange(0xA0, 0xD7FF),
                    rng.randrange(0x10000, 0x10FFFF),
                ]
            )
        )
        for _ in range(size)
    )


secrets = st.one_of(
    st.text(_chars, min_size=6, max_size=80),
    st.text(st.sampled_from("ab\n/+=%é€𝄞\"'&<> \\"), min_size=6, max_size=200),
    st.builds(_long_secret, st.integers(0, 2**32), st.integers(min_value=200, max_value=4096)),
)
# Never a letter or digit next to the secret: a low-entropy one only counts as a whole word.
context = st.sampled_from([b"", b" ", b"\n", b"\r\n", b"x=", b'"', b"\xff", b"<", b": "])
# chunk boundaries, and for each: 0 = nothing, 1 = release (short read), 2 = also a pause
steps = st.lists(
    st.tuples(st.integers(min_value=1, max_value=9000), st.integers(min_value=0, max_value=2)),
    max_size=12,
)


def recorded(redactor: Redactor, data: bytes, plan: list[tuple[int, int]]) -> bytes:
    """The bytes an OutputRecorder would show for ``data`` read and paused as planned."""
    out, pos = [], 0
    for size, action in plan:
        out.append(redactor.feed(data[pos : pos + size]))
        pos += size
        if action:
            out.append(redactor.release())
        if action == 2:
            out.append(redactor.release_quiet())
    out.append(redactor.feed(data[pos:]))
    out.append(redactor.flush())
    return b"".join(out)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=secrets,
    encoder=st.sampled_from(sorted(ENCODERS)),
    before=context,
    after=context,
    plan=steps,
)
def test_no_encoder_chunking_or_pause_shows_a_secret(
    secret: str, encoder: str, before: bytes, after: bytes, plan: list[tuple[int, int]]
) -> None:
    """The encoded secret never appears between markers, however it was read."""
    raw = secret.encode()
    encoded = ENCODERS[encoder](raw, secret)
    if is_low_entropy(secret) and before[-1:].isalnum():
        before = b" "
    if is_low_entropy(secret) and after[:1].isalnum():
        after = b" "
    redactor = Redactor({"S": secret})
    out = recorded(redactor, before + encoded + after, plan)
    for piece in _MARKER.split(out):
        assert encoded.strip() not in piece, encoder
        assert raw not in piece
    assert _MARKER.search(out)
