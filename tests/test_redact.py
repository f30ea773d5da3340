"""Tests for the streaming secret redactor in oneoff._redact."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from oneoff._redact import Redactor, forms_of
from oneoff._redact_forms import _b64_cores, is_low_entropy
from oneoff._redact_forms import forms as _forms
from oneoff.errors import SecretError

HYPO = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

secret_text = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=6, max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=6, max_size=24),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def stream(redactor: Redactor, pieces: list[bytes]) -> bytes:
    return b"".join(redactor.feed(p) for p in pieces) + redactor.flush()


def markers(names: list[str]) -> list[bytes]:
    return [f"[REDACTED:{n}]".encode() for n in names]


def safe_against_markers(secrets: dict[str, str]) -> bool:
    # A form that could be spelled by a marker plus its neighbours would make the
    # "no form in the output" check meaningless, so such secrets are left out.
    marks = markers(list(secrets))
    for value in secrets.values():
        for form in forms_of(value):
            if b"[" in form or b"]" in form or any(form in m for m in marks):
                return False
    return True


@HYPO
@given(
    values=st.lists(secret_text, min_size=1, max_size=3, unique=True),
    data=st.data(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_every_form_of_every_secret_is_redacted_under_any_chunking(
    values: list[str], data: st.DataObject, cuts: list[int]
) -> None:
    """Planted secrets in any form vanish from the output, replaced by their markers."""
    secrets = {f"S{i}": v for i, v in enumerate(values)}
    assume(safe_against_markers(secrets))
    redactor = Redactor(secrets)
    pieces = []
    for value in values:
        pieces.append(data.draw(st.binary(max_size=40)))
        pieces.append(data.draw(st.sampled_from(forms_of(value))))
    pieces.append(data.draw(st.binary(max_size=40)))
    text = b"".join(pieces)
    out = stream(redactor, chunked(text, cuts))
    for value in values:
        if is_low_entropy(value):
            continue  # a whole word only: the drawn bytes may glue it to a letter or digit
        for form in forms_of(value):
            assert form not in out
    if not all(map(is_low_entropy, values)):
        assert any(m in out for m in markers(list(secrets)))
    assert out == redactor.redact(text)


@HYPO
@given(
    value=secret_text,
    text=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
)
def test_output_without_secrets_passes_through_byte_identical(
    value: str, text: bytes, cuts: list[int]
) -> None:
    """Bytes containing no form of any secret come out unchanged whatever the chunking."""
    assume(not any(form in text for form in forms_of(value)))
    redactor = Redactor({"TOKEN": value})
    assert stream(redactor, chunked(text, cuts)) == text


@HYPO
@given(
    value=secret_text,
    prefix=st.binary(max_size=8),
    suffix=st.binary(min_size=1, max_size=8),
    urlsafe=st.booleans(),
)
def test_base64_of_a_larger_buffer_hides_the_secret_at_every_offset(
    value: str, prefix: bytes, suffix: bytes, urlsafe: bool
) -> None:
    """The secret inside base64 of a larger buffer is redacted, including its partial chars."""
    raw = value.encode()
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(prefix + raw + suffix)
    out = Redactor({"KEY": value}).redact(encoded)
    start_bit, end_bit = 8 * len(prefix), 8 * (len(prefix) + len(raw))
    # Characters holding any bit of the secret are gone; those before it survive.
    first, last = start_bit // 6, -(-end_bit // 6)
    assert b"[REDACTED:KEY]" in out
    assert encoded[first:last] not in out
    # What survives before the marker is part of the untouched prefix. It may be shorter:
    # a periodic secret (e.g. "999998") can also match at a neighbouring alignment, and
    # redacting a character too many is the safe direction.
    head = out.split(b"[REDACTED:KEY]", 1)[0]
    assert encoded[:first].startswith(head)


@pytest.mark.parametrize("offset", range(6))
def test_base64_at_each_offset_keeps_exactly_the_outside_chars(offset: int) -> None:
    """Only base64 characters carrying secret bits are replaced, at every byte offset."""
    raw = b"s3cr3t-Value-XYZ"
    buf = b"\x01\x02\x03\x04\x05"[:offset] + raw + b"\xfe\xfd\xfc"
    encoded = base64.b64encode(buf)
    first, last = 8 * offset // 6, -(-8 * (offset + len(raw)) // 6)
    out = Redactor({"K": raw.decode()}).redact(encoded)
    assert out == encoded[:first] + b"[REDACTED:K]" + encoded[last:]


def test_common_encodings_in_realistic_lines_are_redacted() -> None:
    """URL, JSON, hex and base64 spellings of a secret inside log lines are all redacted."""
    value = 'p@ss word/"ü"+x'
    lines = [
        f"url=https://h/?pw={quote(value, safe='')}&x=1",
        f"form: pw={quote_plus(value)}",
        "lower: " + quote(value, safe="").lower(),
        "json: " + json.dumps({"password": value}),
        "json8: " + json.dumps({"password": value}, ensure_ascii=False),
        "hex: " + value.encode().hex().upper(),
        "b64: " + base64.b64encode(value.encode()).decode(),
        "b64u: " + base64.urlsafe_b64encode(value.encode()).decode(),
    ]
    text = "\n".join(lines)
    out = Redactor({"PW": value}).redact_text(text)
    assert out.count("[REDACTED:PW]") == len(lines)
    for form in forms_of(value):
        assert form.decode("latin-1") not in out


def test_forms_of_lists_each_documented_encoding() -> None:
    """forms_of names raw, hex, padded base64, URL and JSON forms of the secret."""
    value = "a b/c+d\u00e9"
    forms = set(forms_of(value))
    raw = value.encode()
    quoted = quote(value, safe="")
    expected = {
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        quoted.encode(),
        quote_plus(value, safe="").encode(),
        quoted.replace("%2F", "%2f").replace("%2B", "%2b").replace("%C3%A9", "%c3%a9").encode(),
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode(),
    }
    assert expected <= forms
    assert forms_of(value) == sorted(forms, key=lambda f: (-len(f), f))


def test_overlapping_secrets_leave_no_part_visible() -> None:
    """Overlapping matches of two secrets merge into one marker named after the first."""
    redactor = Redactor({"A": "abcd-efgh12", "B": "gh12345678"})
    assert redactor.redact(b"<abcd-efgh12345678>") == b"<[REDACTED:A]>"
    assert redactor.redact(b"xxgh12345678abcd-efgh12") == b"xx[REDACTED:B][REDACTED:A]"


def test_longer_match_wins_over_its_prefix() -> None:
    """When one secret is a prefix of another, the longer one is redacted whole."""
    redactor = Redactor({"SHORT": "prefix-1", "LONG": "prefix-1-and-more"})
    assert redactor.redact(b"=prefix-1-and-more=") == b"=[REDACTED:LONG]="


def test_binary_output_passes_byte_exact_around_redactions() -> None:
    """Non-UTF-8 bytes around a secret survive unchanged."""
    blob = bytes(range(256)) * 3
    out = Redactor({"K": "Zq9-secret"}).redact(blob + b"Zq9-secret" + blob)
    assert out == blob + b"[REDACTED:K]" + blob


def test_too_short_secret_raises_secret_error_naming_the_key() -> None:
    """A secret shorter than min_length is refused with a message naming its key."""
    with pytest.raises(SecretError, match=r"API_KEY.*too short") as info:
        Redactor({"API_KEY": "abc12"})
    assert info.value.exit_code == 9
    assert info.value.hint is not None
    assert "longer" in info.value.hint


def test_empty_secret_is_ignored() -> None:
    """An empty secret value redacts nothing and does not raise."""
    redactor = Redactor({"UNSET": "", "SET": "long-enough"})
    assert redactor.redact(b"a  b long-enough") == b"a  b [REDACTED:SET]"


def test_min_length_below_the_safe_floor_is_rejected() -> None:
    """min_length under four characters is a programming error."""
    with pytest.raises(ValueError, match="min_length"):
        Redactor({"K": "abc"}, min_length=3)


def test_no_secrets_means_identity() -> None:
    """A Redactor without secrets returns each chunk immediately and unchanged."""
    redactor = Redactor({})
    assert redactor.feed(b"abc") == b"abc"
    assert redactor.held_back == 0
    assert redactor.flush() == b""


def test_holdback_stays_bounded_on_a_stream_without_newlines() -> None:
    """Feeding 10 MB without a newline never holds back more than max_form_length - 1 bytes."""
    value = "Bounded-Secret-Value-1234567890"
    redactor = Redactor({"K": value, "B": "x" * 60})
    limit = redactor.max_form_length - 1
    noise = os.urandom(64 * 1024).replace(b"\n", b" ")
    emitted = 0
    for i in range(160):
        chunk = noise if i != 80 else noise[:100] + value.encode() + noise[100:]
        emitted += len(redactor.feed(chunk))
        assert redactor.held_back <= limit
    tail = redactor.flush()
    assert redactor.held_back == 0
    assert emitted + len(tail) == 160 * len(noise) + len(b"[REDACTED:K]")


def test_secret_split_across_every_boundary_is_redacted() -> None:
    """A secret split into two reads at any byte is still redacted."""
    value = b"split-me-secret"
    text = b"before " + value + b" after"
    for cut in range(len(text) + 1):
        redactor = Redactor({"K": value.decode()})
        out = stream(redactor, [text[:cut], text[cut:]])
        assert out == b"before [REDACTED:K] after"


def reference_redact(secrets: dict[str, str], data: bytes) -> bytes:
    """The documented semantics, spelled out naively: a model to check the fast engine against."""
    b64 = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
    word = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    info: dict[bytes, tuple[str, bool, bool, bool]] = {}
    for name in sorted(secrets):
        for form, f in _forms(secrets[name]).items():
            old = info.get(form, (name, False, False, True))
            info[form] = (old[0], old[1] or f.before, old[2] or f.after, old[3] and f.token)

    def whole(form: bytes, pos: int) -> bool:
        end = pos + len(form)
        return not (pos > 0 and data[pos - 1] in word) and not (
            end < len(data) and data[end] in word
        )

    spans = []
    for pos in range(len(data)):
        found = [f for f in info if data.startswith(f, pos) and (not info[f][3] or whole(f, pos))]
        if not found:
            continue
        form = max(found, key=len)
        name, before, after, _ = info[form]
        start, end = pos, pos + len(form)
        if before:  # the partial neighbour, also behind a line break
            gap = re.match(rb"[\r\n]{0,2}", data[max(0, start - 2) : start][::-1])
            at = start - 1 - (gap.end() if gap else 0)
            start = at if at >= 0 and data[at] in b64 else start
        if after:
            gap = re.match(rb"[\r\n]{0,2}", data[end : end + 2])
            at = end + (gap.end() if gap else 0)
            end = at + 1 if at < len(data) and data[at] in b64 else end
        spans.append((start, end, name))
    spans.sort(key=lambda s: (s[0], -s[1], s[2]))
    out, pos = [], 0
    for start, end, name in spans:
        if start < pos:
            pos = max(pos, end)
            continue
        out += [data[pos:start], f"[REDACTED:{name}]".encode()]
        pos = end
    return b"".join([*out, data[pos:]])


@HYPO
@given(
    values=st.lists(
        st.one_of(
            st.text(st.sampled_from('ab01+/=%-_ é\\"'), min_size=6, max_size=14),
            secret_text,
            st.text(st.characters(codec="utf-8"), min_size=19, max_size=40),
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    data=st.data(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_output_matches_a_naive_model_of_the_semantics(
    values: list[str], data: st.DataObject, cuts: list[int]
) -> None:
    """Whole forms, cut forms and overlapping forms come out as the naive model says."""
    secrets = {f"S{i}": v for i, v in enumerate(values)}
    pieces = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        form = data.draw(st.sampled_from(forms_of(data.draw(st.sampled_from(values)))))
        a = data.draw(st.integers(min_value=0, max_value=len(form)))
        pieces.append(data.draw(st.sampled_from([form, form[a:], form[:a]])))
        pieces.append(data.draw(st.sampled_from([b"", b"A", b"z9", b"+", b"\xff", b" x "])))
    text = b"".join(pieces)
    redactor = Redactor(secrets)
    expected = reference_redact(secrets, text)
    assert redactor.redact(text) == expected
    assert stream(redactor, chunked(text, cuts)) == expected


@pytest.mark.parametrize("length", [6, 8, 12, 19, 24, 40])
def test_every_form_at_every_offset_is_found_whatever_the_stride(length: int) -> None:
    """Forms long enough for a strided scan are found at every start, mod any stride."""
    value = "".join(chr(0x21 + (i * 37) % 94) for i in range(length))
    redactor = Redactor({"K": value})
    assert redactor._stride == {6: 1, 8: 2, 12: 3, 19: 4, 24: 6, 40: 6}[length]
    for form in forms_of(value):
        for offset in range(8):
            text = b"." * offset + form + b"."
            assert redactor.redact(text) == b"." * offset + b"[REDACTED:K]."


def test_import_is_light() -> None:
    """Importing the module loads neither the matcher nor numpy; building a Redactor loads it."""
    code = (
        "import sys, oneoff._redact as r\n"
        "assert 'ahocorasick_rs' not in sys.modules and 'numpy' not in sys.modules\n"
        "r.Redactor({'K': 'long-enough'})\n"
        "assert 'ahocorasick_rs' in sys.modules and 'numpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def stream_releasing(redactor: Redactor, pieces: list[bytes], release: list[bool]) -> bytes:
    out = []
    for piece, now in zip(pieces, itertools.cycle(release or [True]), strict=False):
        out.append(redactor.feed(piece))
        if now:
            out.append(redactor.release())
    return b"".join(out) + redactor.flush()


@HYPO
@given(
    values=st.lists(
        st.one_of(
            st.text(st.sampled_from('ab01+/=%-_ é\\"'), min_size=6, max_size=14),
            secret_text,
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    data=st.data(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=16),
    release=st.lists(st.booleans(), max_size=8),
)
def test_releasing_early_changes_nothing_but_latency(
    values: list[str], data: st.DataObject, cuts: list[int], release: list[bool]
) -> None:
    """Output released as soon as it cannot begin a form is the one-pass output."""
    secrets = {f"S{i}": v for i, v in enumerate(values)}
    pieces = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        form = data.draw(st.sampled_from(forms_of(data.draw(st.sampled_from(values)))))
        a = data.draw(st.integers(min_value=0, max_value=len(form)))
        pieces.append(data.draw(st.sampled_from([form, form[a:], form[:a]])))
        pieces.append(data.draw(st.sampled_from([b"", b"A", b"z9", b"+", b"\xff", b" x "])))
    text = b"".join(pieces)
    expected = reference_redact(secrets, text)
    assert stream_releasing(Redactor(secrets), chunked(text, cuts), release) == expected


@HYPO
@given(value=secret_text, prefix=st.binary(max_size=300), data=st.data())
def test_release_keeps_only_what_could_begin_a_form(
    value: str, prefix: bytes, data: st.DataObject
) -> None:
    """After release, the held bytes are a prefix of a form, after at most one base64 byte."""
    redactor = Redactor({"S": value})
    form = data.draw(st.sampled_from(forms_of(value)))
    start = data.draw(st.sampled_from([form[: len(form) // 2], b"", form[:1]]))
    redactor.feed(prefix + start)
    redactor.release()
    held = redactor._tail
    assert len(held) <= redactor.max_form_length
    forms = forms_of(value)
    assert any(f.startswith(held) or f.startswith(held[1:]) for f in forms) or not held
    assert len(held) >= len(start) or any(f.startswith(start[-len(held) :]) for f in forms)


def test_a_prompt_is_released_whole_and_a_secret_start_is_kept() -> None:
    """'Password: ' comes out at once; the first bytes of a secret stay until it completes."""
    redactor = Redactor({"TOKEN": "hunter2-secret"})
    assert redactor.feed(b"Password: ") + redactor.release() == b"Password: "
    assert redactor.held_back == 0
    assert redactor.feed(b"token hunt") + redactor.release() == b"token "
    assert redactor.held_back == 4
    assert redactor.feed(b"er2-secret!") + redactor.release() == b"[REDACTED:TOKEN]!"
    assert redactor.flush() == b""


def test_a_fresh_redactor_shares_the_automaton_not_the_stream() -> None:
    """fresh() gives an independent stream over the same secrets."""
    first = Redactor({"TOKEN": "hunter2-secret"})
    shown = first.feed(b"x" * 100 + b"hunter2")
    second = first.fresh()
    assert second.held_back == 0
    assert second.redact(b"a hunter2-secret b") == b"a [REDACTED:TOKEN] b"
    shown += first.feed(b"-secret") + first.flush()
    assert shown == b"x" * 100 + b"[REDACTED:TOKEN]"


def test_a_low_entropy_secret_is_redacted_only_as_a_whole_word() -> None:
    """'postgres' is redacted where it stands alone, not inside 'postgresql' or 'postgres1x'."""
    redactor = Redactor({"PW": "postgres"})
    assert redactor.redact(b"postgresql://postgres@h pw=postgres.") == (
        b"postgresql://[REDACTED:PW]@h pw=[REDACTED:PW]."
    )
    assert redactor.redact(b"postgres1x") == b"postgres1x"
    assert redactor.redact(b"cG9zdGdyZXM=") == b"[REDACTED:PW]"  # base64 still matches


def test_a_quiet_stream_shows_at_most_three_held_bytes_and_keeps_matching() -> None:
    """After a pause a held end of <= 3 bytes shows; the rest of the secret is still redacted."""
    redactor = Redactor({"TOKEN": "sk_live_0123456789"})
    assert redactor.feed(b"key: sk_") + redactor.release() == b"key: "
    assert redactor.release_quiet() == b"sk_"
    assert redactor.feed(b"live_0123456789 ok") + redactor.flush() == b"[REDACTED:TOKEN] ok"
    redactor = Redactor({"TOKEN": "sk_live_0123456789"})
    assert redactor.feed(b"key: sk_live") + redactor.release() == b"key: "
    assert redactor.release_quiet() == b""  # most of a secret's start: held
    assert redactor.feed(b"_0123456789 ok") + redactor.flush() == b"[REDACTED:TOKEN] ok"


def test_only_a_word_as_people_type_one_is_matched_as_a_whole_word() -> None:
    """A mixed-case token is redacted inside words; a word's stream and one-go results agree."""
    assert not is_low_entropy("AAAAAJ0")
    assert not is_low_entropy("qwErtyUiopAsdfGhjk")
    assert Redactor({"K": "AAAAAJ0"}).redact(b"xAAAAAJ00") == b"x[REDACTED:K]0"
    text = b"\0" * 14 + b"0aaaaaj0" + b"\0" * 15
    redactor = Redactor({"S": "aaaaaj0"})
    assert redactor.feed(text) + redactor.flush() == redactor.redact(text) == text


def test_pause_after_pause_never_shows_more_than_three_bytes_of_a_secret() -> None:
    """Each pause may not show another three bytes: what earlier pauses showed counts."""
    redactor = Redactor({"PW": "postgres"})
    out = redactor.feed(b"x=po") + redactor.release() + redactor.release_quiet()
    out += redactor.feed(b"stg") + redactor.release() + redactor.release_quiet()
    out += redactor.feed(b"res") + redactor.release() + redactor.release_quiet()
    out += redactor.flush()
    assert out == b"x=po[REDACTED:PW]"


def test_base64_wrapped_at_any_width_from_64_is_redacted_at_every_phase() -> None:
    """A secret inside base64 wrapped at 64 or 76 columns is found wherever the lines break."""
    value = "wrapped-secret-\u00e9-value"
    redactor = Redactor({"K": value})
    for width in (64, 76, 100):
        for pad in range(0, width + 3):
            text = base64.b64encode(b"x" * pad + value.encode() + b"tail-bytes").decode()
            lines = "\n".join(text[i : i + width] for i in range(0, len(text), width))
            for crlf in (False, True):
                data = (lines.replace("\n", "\r\n") if crlf else lines).encode()
                out = redactor.redact(b"-----BEGIN-----\n" + data + b"\n-----END-----\n")
                assert b"[REDACTED:K]" in out, (width, pad, crlf)
                joined = out.replace(b"\r", b"").replace(b"\n", b"")
                for core, _, _ in _b64_cores(value.encode()):
                    assert core not in joined, (width, pad, crlf)


@pytest.mark.parametrize(
    "secret",
    ['ab"c\\d\te/fQ9x7Lm', "it's-a-S3cret\\x", "p\u00e4ss\u00f6rd-Zq8x", "line1\nline2-Zq8x"],
    ids=["double-quote", "single-quote", "non-ascii", "newline"],
)
def test_python_repr_of_a_secret_is_redacted_under_any_chunking(secret: str) -> None:
    """print(settings), %r and f"{x!r}" show Python's repr, which escapes differently from
    JSON (a " stays, \\' and \\xNN appear): the str's and the bytes' repr are redacted."""
    redactor = Redactor({"DB_PASSWORD": secret})
    lines = [
        repr({"password": secret}),
        repr(secret.encode()),
        f"connecting with {secret!r}",
    ]
    data = ("\n".join(lines) + "\n").encode()
    for cuts in ([], [7], [3, 11, 19, 40], list(range(1, len(data), 5))):
        out = stream(redactor, chunked(data, cuts)).decode("utf-8", "replace")
        assert out.count("[REDACTED:DB_PASSWORD]") == 3, out
        for piece in (repr(secret)[1:-1], repr(secret.encode())[2:-1]):
            assert piece not in out
