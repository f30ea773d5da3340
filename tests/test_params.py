"""Typed params: validation, and injection attempts refused with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._params import parse_param_spec, validate_param
from oneoff.errors import ManifestError, ParamError


def spec(**raw: object):  # type: ignore[no-untyped-def]
    return parse_param_spec("t", "p", dict(raw), "oneoff.toml")


INJECTIONS = [
    "; rm -rf ~",
    "$(id)",
    "`id`",
    "a\nb",
    "a\x00b",
    "x | sh",
    "a && b",
    "${HOME}",
    "a\rb",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_string_without_pattern_refuses_shell_syntax(value: str) -> None:
    """A free-form string param refuses shell metacharacters, newlines and NUL."""
    with pytest.raises(ParamError, match="param 'p'"):
        validate_param(spec(type="string"), value, app_root=None)


@pytest.mark.parametrize("value", INJECTIONS)
def test_pattern_is_anchored(value: str) -> None:
    """A pattern must match the whole value, so a valid prefix does not smuggle a suffix."""
    with pytest.raises(ParamError):
        validate_param(spec(type="string", pattern="[a-z]+"), "abc" + value, app_root=None)


def test_control_characters_refused_even_when_pattern_allows() -> None:
    """A newline is refused even if the declared pattern would accept it."""
    with pytest.raises(ParamError, match="newline"):
        validate_param(spec(type="string", pattern="[\\s\\S]*"), "a\nb", app_root=None)


@pytest.mark.parametrize(
    ("raw", "good", "bad"),
    [
        (
            {"type": "int", "min": 1, "max": 10},
            ["1", "10", "+5"],
            ["0", "11", "1.5", "0x1", " 1", "1e3"],
        ),
        ({"type": "bool"}, ["true", "No", "1"], ["maybe", ""]),
        ({"type": "choice", "choices": ["a", "b"]}, ["a", "b"], ["c", "A"]),
        ({"type": "date"}, ["2024-02-29"], ["2023-02-29", "2024-1-1", "yesterday"]),
        ({"type": "string", "max_length": 3}, ["abc"], ["abcd"]),
    ],
)
def test_types(raw: dict[str, object], good: list[str], bad: list[str]) -> None:
    """Each type accepts what it should and refuses the rest."""
    s = spec(**raw)
    for value in good:
        validate_param(s, value, app_root=None)
    for value in bad:
        with pytest.raises(ParamError):
            validate_param(s, value, app_root=None)


def test_path_must_stay_inside_the_app(tmp_path: Path) -> None:
    """Absolute paths, .. escapes and symlinks out of the app are refused."""
    (tmp_path / "data").mkdir()
    (tmp_path / "escape").symlink_to("/etc")
    s = spec(type="path")
    assert validate_param(s, "data/../data/x.csv", app_root=tmp_path) == "data/x.csv"
    for value in ["/etc/passwd", "../x", "data/../../x", "escape/passwd", "-rf"]:
        with pytest.raises(ParamError):
            validate_param(s, value, app_root=tmp_path)


def test_secret_errors_never_echo_the_value() -> None:
    """A secret that fails validation is not shown in the error."""
    with pytest.raises(ParamError) as info:
        validate_param(spec(type="secret", min_length=10), "short-pw", app_root=None)
    assert "short-pw" not in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "float"},
        {"type": "int", "min": "1"},
        {"type": "choice"},
        {"type": "secret", "default": "x"},
        {"type": "string", "pattern": "("},
        {"type": "string", "bogus": 1},
        {"type": "int", "default": 99, "max": 10},
        {"type": "string", "deliver": "stdin"},
    ],
)
def test_bad_declarations(raw: dict[str, object]) -> None:
    """Invalid param declarations are manifest errors."""
    with pytest.raises(ManifestError):
        spec(**raw)


@given(st.integers(-(10**12), 10**12))
def test_int_normalises(number: int) -> None:
    """Any in-range integer round-trips to its canonical decimal form."""
    assert validate_param(spec(type="int"), str(number), app_root=None) == str(number)
