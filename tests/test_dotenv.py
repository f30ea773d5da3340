"""The dotenv parser: strict, no interpolation, errors name the line."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._dotenv import format_dotenv, parse_dotenv
from oneoff.errors import ConfigError

keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
values = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40
)


@given(st.dictionaries(keys, values, max_size=8))
def test_format_then_parse_roundtrips(data: dict[str, str]) -> None:
    """Whatever format_dotenv writes, parse_dotenv reads back exactly."""
    assert parse_dotenv(format_dotenv(data)) == data


@given(st.text(max_size=200))
def test_never_crashes(text: str) -> None:
    """Arbitrary text either parses or raises ConfigError, nothing else."""
    with contextlib.suppress(ConfigError):
        parse_dotenv(text)


def test_forms() -> None:
    """Comments, export, quotes and escapes are read as dotenv users expect."""
    text = (
        "# comment\n"
        "export A=1\n"
        "B = two words # trailing comment\n"
        "C='literal $HOME \\n'\n"
        'D="line\\nbreak \\"q\\" $NOT_EXPANDED"\n'
        'E="multi\nline"\n'
        "F=\n"
        "URL=postgres://u:p@h/db#frag\n"
    )
    assert parse_dotenv(text) == {
        "A": "1",
        "B": "two words",
        "C": "literal $HOME \\n",
        "D": 'line\nbreak "q" $NOT_EXPANDED',
        "E": "multi\nline",
        "F": "",
        "URL": "postgres://u:p@h/db#frag",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [("A=1\nnot a line\n", 2), ("A=1\nB='open\n\n", 2), ("A=1\n\n9X=1\n", 3), ('A="x" junk\n', 1)],
)
def test_errors_name_the_line(text: str, line: int) -> None:
    """A malformed line is reported with its file and line number."""
    with pytest.raises(ConfigError, match=rf"\.env:{line}:"):
        parse_dotenv(text, ".env")
