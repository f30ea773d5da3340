"""Canonical JSON (RFC 8785, JCS) for the values oneoff hashes and signs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["canonical_hash", "canonical_json"]

# JSON numbers in signed documents are integers only: JCS serialises floats with the
# ECMAScript algorithm, which is easy to get subtly wrong, and nothing here needs them.
_MAX_SAFE_INT = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Keys are sorted by their UTF-16 code units, no insignificant white space is written,
    strings use the minimal JSON escapes. Floats, non-string keys and lone surrogates are
    refused with ``ValueError`` rather than encoded ambiguously.
    """
    try:
        if _plain(value):
            return _plain_json(value).encode("utf-8")
    except (RecursionError, UnicodeEncodeError):
        pass  # nested deep, or a lone surrogate: the exact path below refuses it in words
    parts: list[str] = []
    try:
        _encode(value, parts)
    except RecursionError:  # only crafted documents nest this deep: refuse like the rest
        raise ValueError("document nests too deeply to encode") from None
    return "".join(parts).encode("utf-8")


# The common case, written by the C encoder with sorted keys: for values made only of
# dicts with string keys, lists, strings, safe integers, booleans and None, its output is
# exactly RFC 8785's, provided no key holds a character beyond U+FFFF (only there do
# code points and UTF-16 code units sort differently) and no string holds a lone
# surrogate (then encoding the result to UTF-8 fails, and the exact path refuses it).
# ``_plain`` checks the value first (a walk without string work); anything else takes the
# exact path, which also words every refusal. tests/test_canonical.py compares the two.
_plain_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False,
    check_circular=False,
).encode  # fmt: skip
_BMP_END = "\U00010000"


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(key) < _BMP_END):
                return False
            if not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(map(_plain, value))
    return False


def canonical_hash(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


# With ensure_ascii=False the encoder writes exactly the JCS escapes: \" \\ \b \f \n \r \t
# and \u00XX (lower-case hex) for the other control characters. One encoder for all:
# json.dumps with a non-default option builds a new one on every call.
_json_str = json.JSONEncoder(ensure_ascii=False).encode


def _encode_str(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("string holds a lone surrogate; not representable in I-JSON") from exc
    return _json_str(text)


def _encode(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:  # the common cases first, without ABC checks
        out.append(_encode_str(value))
    elif kind is dict:
        _encode_object(value, out)
    elif kind is list or kind is tuple:
        _encode_array(value, out)
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError(f"integer {value} is outside the I-JSON safe range")
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise ValueError("floats are not allowed in canonical documents; use integers")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, Mapping):
        _encode_object(value, out)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        _encode_array(value, out)
    else:
        raise ValueError(f"cannot encode {type(value).__name__} canonically")


def _encode_object(value: Mapping[Any, Any], out: list[str]) -> None:
    items = []
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"object key {key!r} is not a string")
        items.append(key)
    items.sort(key=_utf16_key)
    out.append("{")
    for i, key in enumerate(items):
        if i:
            out.append(",")
        out.append(_encode_str(key))
        out.append(":")
        _encode(value[key], out)
    out.append("}")


def _encode_array(value: Sequence[Any], out: list[str]) -> None:
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        _encode(item, out)
    out.append("]")
