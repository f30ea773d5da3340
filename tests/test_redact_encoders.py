"""Property: secrets as more encoders print them (shell quoting, HTML escaping, base64 wrapped
at any width, base32, hex dumps, indented keys) never show, however the output is cut.

Each encoder is paired with what must never be visible: the encoded secret with the layout
(line breaks, indents, dump columns) taken out of each piece between markers. The bytes
around the secret pass unchanged, and without pauses the streamed result is exactly the
one-shot redaction, whatever the chunking.
"""

from __future__ import annotations

import base64
import html
import re
import shlex
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _hexdumps import dump
from oneoff._redact import Redactor
from oneoff._redact_forms import _b64_cores, is_low_entropy
from test_redact_property import recorded, secrets, steps

_MARKER = re.compile(rb"\[REDACTED:S\]")
_LAYOUT = re.compile(rb"[\r\n \t]")


def _plain(piece: bytes) -> bytes:
    return piece


def _wrap(text: bytes, width: int, newline: bytes = b"\n") -> bytes:
    return newline.join(text[i : i + width] for i in range(0, len(text), width)) + newline


def _b64(
    raw: bytes, width: int, *, pad: int = 0, urlsafe: bool = False, crlf: bool = False
) -> bytes:
    """``raw`` inside base64 (after ``pad`` other bytes), wrapped as ``base64 -w WIDTH`` does."""
    data = bytes(range(200, 200 + pad)) + raw + b"\x00tail"
    text = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return _wrap(text, width, b"\r\n" if crlf else b"\n")


def _unwrapped(piece: bytes) -> bytes:
    return _LAYOUT.sub(b"", piece)


def _indented(raw: bytes, newline: bytes) -> bytes:
    """A multi-line secret with every line after the first indented (as YAML embeds a key)."""
    body = raw.rstrip(b"\r\n")
    return body.replace(b"\n", newline) if b"\n" in body else raw


def _dump(raw: bytes, pad: int, kind: str) -> bytes:
    """``raw`` after ``pad`` other bytes, dumped as xxd, hexdump -C or od -A x -t x1z print."""
    return dump(bytes(range(200, 200 + pad)) + raw + b"\x00tail", kind)


_ROW_FRAME = re.compile(
    rb"(?m)^[0-9a-f]{6,8}(?::|  | )(?:[0-9a-f]{2,4} {1,2})*[0-9a-f]{0,4} *[|>]?"
)


def _dumped(piece: bytes) -> bytes:
    """A dump read back: its hex digits, then its text columns, each run joined."""
    hex_digits = b"".join(re.findall(rb"(?<![0-9a-f])[0-9a-f]{2,4}(?![0-9a-f])", piece))
    text = re.sub(rb"[|<]?\n", b"", _ROW_FRAME.sub(b"", piece))
    return hex_digits + b"\0" + text


def _in_stream(encode: Callable[[bytes], bytes], raw: bytes, pad: int) -> bytes:
    """``raw`` encoded after ``pad`` other bytes and before a few more, as one stream."""
    return encode(bytes(range(200, 200 + pad)) + raw + b"\x00tail")


def _b32_wrapped(raw: bytes, pad: int, width: int, newline: bytes = b"\n") -> bytes:
    return _wrap(_in_stream(base64.b32encode, raw, pad), width, newline)


# name -> (how a program prints the secret's UTF-8 bytes / text, how to read a piece back)
Encoder = tuple[Callable[[bytes, str], bytes], Callable[[bytes], bytes]]
ENCODERS: dict[str, Encoder] = {
    "base64 -w 4": (lambda raw, s: _b64(raw, 4), _unwrapped),
    "base64 -w 7 at offset 1": (lambda raw, s: _b64(raw, 7, pad=1), _unwrapped),
    "base64 -w 40 at offset 2 on a pty": (
        lambda raw, s: _b64(raw, 40, pad=2, crlf=True),
        _unwrapped,
    ),
    "url-safe base64 wrapped at 50": (lambda raw, s: _b64(raw, 50, urlsafe=True), _unwrapped),
    "url-safe base64 wrapped at 19, CRLF": (
        lambda raw, s: _b64(raw, 19, pad=1, urlsafe=True, crlf=True),
        _unwrapped,
    ),
    "xxd -p": (lambda raw, s: _wrap(raw.hex().encode(), 60), _unwrapped),
    "xxd": (lambda raw, s: _dump(raw, 3, "xxd"), _dumped),
    "hexdump -C": (lambda raw, s: _dump(raw, 9, "hexdump -C"), _dumped),
    "od -A x -t x1z": (lambda raw, s: _dump(raw, 14, "od"), _dumped),
    "base32": (lambda raw, s: base64.b32encode(raw), _plain),
    "base32 at offset 3, 76 wide": (lambda raw, s: _b32_wrapped(raw, 3, 76), _unwrapped),
    "base32 at offset 1, 16 wide on a pty": (
        lambda raw, s: _b32_wrapped(raw, 1, 16, b"\r\n"),
        _unwrapped,
    ),
    "base32 at offset 4": (lambda raw, s: _in_stream(base64.b32encode, raw, 4), _plain),
    "shlex.quote": (lambda raw, s: shlex.quote(s).encode(), _plain),
    "html.escape": (lambda raw, s: html.escape(s).encode(), _plain),
    "html.escape quote=False": (lambda raw, s: html.escape(s, quote=False).encode(), _plain),
    "indented by 4": (lambda raw, s: _indented(raw, b"\n    "), _plain),
    "indented by a tab on a pty": (lambda raw, s: _indented(raw, b"\r\n\t"), _plain),
}
# Never a letter, digit or encoder character next to the secret.
context = st.sampled_from([b"", b" ", b"\n", b"x: ", b"\xff", b"<", b"# "])


def b32_cores(raw: bytes) -> list[bytes]:
    """The base32 characters that only ``raw``'s bits make, at each of the 5 byte alignments."""
    out = []
    for k in range(5):
        encoded = base64.b32encode(b"\0" * k + raw + b"\0" * 5)
        out.append(encoded[-(-8 * k // 5) : (8 * k + 8 * len(raw)) // 5])
    return out


def needles(raw: bytes, encoded: bytes) -> list[bytes]:
    """What must not be seen: the encoded secret, and every core of it the encoder printed."""
    cores = [core for core, _, _ in _b64_cores(raw)]
    cores += [core.translate(bytes.maketrans(b"+/", b"-_")) for core in cores]
    cores += b32_cores(raw)
    text = _unwrapped(encoded)
    dumped = [raw.hex().encode(), raw] if _ROW_FRAME.match(encoded) else []
    return [_unwrapped(encoded.strip()), *dumped, *(core for core in cores if core in text)]


def check(
    encoder: str, secret: str, before: bytes, after: bytes, plan: list[tuple[int, int]]
) -> None:
    encode, read_back = ENCODERS[encoder]
    raw = secret.encode()
    encoded = encode(raw, secret)
    if encoded == raw or not raw.strip():
        return  # nothing new to show: the raw form's own tests cover it
    if read_back is _dumped:
        if re.fullmatch(rb"[0-9a-f .:|<>\r\n]*", raw):
            return  # spelled by the dump's own offsets and hex: a test of nothing
        before += b"\n" if before and not before.endswith(b"\n") else b""  # rows start lines
    if is_low_entropy(secret):
        before, after = b" " + before, after + b" "
    redactor = Redactor({"S": secret})
    data = before + encoded + after
    out = recorded(redactor, data, plan)
    hidden = needles(raw, encoded)
    for piece in _MARKER.split(out):
        seen = read_back(piece)
        assert not [needle for needle in hidden if needle in seen], encoder
        assert raw not in piece
    assert _MARKER.search(out)
    assert out.startswith(before)
    assert out.endswith(after)
    # Without pauses, exactly the one-shot result; but a short read (release) that ends a
    # narrow block's first line shows up to 3 characters of a form begun there (README).
    narrow = encoder.startswith(("base64 -w", "url-safe", "base32 at offset 1"))
    if all(action == 0 or (action == 1 and not narrow) for _, action in plan):
        assert out == redactor.redact(data)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=secrets,
    encoder=st.sampled_from(sorted(ENCODERS)),
    before=context,
    after=context,
    plan=steps,
)
def test_no_further_encoder_or_chunking_shows_a_secret(
    secret: str, encoder: str, before: bytes, after: bytes, plan: list[tuple[int, int]]
) -> None:
    """The secret, encoded as each further encoder prints it, never appears between markers."""
    check(encoder, secret, before, after, plan)


def test_shell_and_html_quoting_of_a_quote_is_redacted() -> None:
    """A secret with ' & < > " is hidden as shlex.quote and html.escape print it."""
    secret = "it's <b>&\"x9"
    redactor = Redactor({"S": secret})
    for printed in (shlex.quote(secret), html.escape(secret), html.escape(secret, quote=False)):
        assert printed != secret
        shown = redactor.redact(f"x={printed};".encode())
        assert shown in (b"x=[REDACTED:S];", b"x='[REDACTED:S]';"), printed
