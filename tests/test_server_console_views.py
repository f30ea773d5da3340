"""What the console's pages compute, without a server: output decoding and plan differences."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from oneoff._server.console.views import Change, Decoder, _env_changes


def test_a_character_split_between_two_chunks_is_shown_whole() -> None:
    """ "é" stored as its first byte in one chunk and its second in the next reads as "é"."""
    raw = "café".encode()
    decoder = Decoder()
    shown = decoder.decode([(1, raw[:4])], final=False) + decoder.decode([(1, raw[4:])], final=True)
    assert "".join(text for _, text in shown) == "café"


def test_the_two_streams_are_decoded_apart() -> None:
    """Half a character on stdout is not completed by stderr's bytes."""
    decoder = Decoder()
    shown = decoder.decode([(1, b"\xc3"), (2, b"x")], final=True)
    assert (2, "x") in shown
    assert (1, "\ufffd") in shown


@given(st.text(max_size=200), st.lists(st.integers(min_value=0, max_value=800), max_size=6))
def test_any_split_of_utf8_output_decodes_to_the_same_text(text: str, cuts: list[int]) -> None:
    """However stored output is cut into chunks, the shown text is the printed text."""
    raw = text.encode()
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    decoder = Decoder()
    pieces = [(1, raw[a:b]) for a, b in itertools.pairwise(points)]
    shown = decoder.decode(pieces, final=True)
    assert "".join(t for _, t in shown) == text


def test_env_changes_name_variables_never_their_values() -> None:
    """Changed, added and removed variables are listed by name; fingerprints never shown."""
    before = {"A": "f1", "B": "f2", "C": "f3"}
    after = {"A": "f1", "B": "f9", "D": "f4"}
    changes = list(_env_changes(before, after))
    assert changes == [
        Change("env B", "(one value)", "(another value)"),
        Change("env C", "(set)", "(removed)"),
        Change("env D", "(absent)", "(added)"),
    ]
