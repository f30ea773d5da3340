"""Canonical JSON (RFC 8785) used for plan hashes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._canonical import canonical_hash, canonical_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_roundtrips_through_json(value: object) -> None:
    """Canonical JSON parses back to the same value."""
    assert json.loads(canonical_json(value)) == value


@given(st.dictionaries(st.text(), st.integers(0, 9), max_size=8))
def test_key_order_does_not_matter(value: dict[str, int]) -> None:
    """Two dicts with the same items in another order hash the same."""
    reordered = dict(reversed(list(value.items())))
    assert canonical_hash(reordered) == canonical_hash(value)


def test_known_vectors() -> None:
    """Output matches RFC 8785 rules: no spaces, UTF-16 key order, minimal escapes."""
    assert canonical_json({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert canonical_json('\u20ac\n\x01"') == '"\u20ac\\n\\u0001\\""'.encode()
    # U+10000 sorts before U+E000 by UTF-16 code units, after it by code points.
    assert canonical_json({"\ue000": 1, "\U00010000": 2}) == '{"\U00010000":2,"\ue000":1}'.encode()


@pytest.mark.parametrize("bad", [1.5, 2**60, {1: "x"}, "\ud800", b"bytes"])
def test_refuses_ambiguous_values(bad: object) -> None:
    """Floats, huge ints, non-string keys, lone surrogates and bytes are refused."""
    with pytest.raises(ValueError, match=r"float|integer|key|surrogate|cannot encode"):
        canonical_json(bad)


def test_a_document_nested_too_deeply_is_refused_as_bad_input() -> None:
    import pytest

    from oneoff._canonical import canonical_json

    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nests too deeply"):
        canonical_json(deep)


# Any JSON-like value, including what the fast path must hand to the exact one: keys and
# strings beyond the BMP or with lone surrogates, floats, huge integers, tuples, subclasses.
_texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=6)
_any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**54), 2**54)
    | st.floats(allow_nan=True)
    | _texts
    | st.sampled_from(["\ud800", "a\udfff", "\U0001f600", "\ue000", "\x7f", "\u2028"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(
            _texts | st.sampled_from(["\U00010000", "\ue000", "\ud800", "é", ""]),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


def _exact(value: object) -> bytes | str:
    """The exact (slow) path alone: its bytes, or the refusal it words."""
    from oneoff._canonical import _encode

    parts: list[str] = []
    try:
        _encode(value, parts)
    except ValueError as exc:
        return f"refused: {exc}"
    return "".join(parts).encode("utf-8")


@given(_any_values)
def test_the_fast_path_writes_exactly_what_the_exact_path_writes(value: object) -> None:
    """For any value, canonical_json's bytes (or refusal) are the exact encoder's."""
    try:
        got: bytes | str = canonical_json(value)
    except ValueError as exc:
        got = f"refused: {exc}"
    assert got == _exact(value)


def test_the_fast_path_keeps_utf16_key_order_and_refusals() -> None:
    """Keys beyond the BMP, lone surrogates in keys or values, and numbers the fast path
    does not take are still ordered or refused as RFC 8785 says."""
    assert canonical_json({"\ue000": 1, "\U00010000": 2, "a": 3}) == (
        '{"a":3,"\U00010000":2,"\ue000":1}'.encode()
    )
    for bad in ({"k": "\ud800"}, {"\udc00": 1}, [1.0], {"n": 2**53}):
        with pytest.raises(ValueError, match=r"surrogate|float|integer"):
            canonical_json(bad)
    assert (
        canonical_json({"n": 2**53 - 1, "t": (1, True)}) == b'{"n":9007199254740991,"t":[1,true]}'
    )
