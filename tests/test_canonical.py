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
