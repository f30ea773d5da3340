"""A param's pattern: Python's syntax and meaning, matched by RE2 in linear time; what RE2
cannot match in linear time, or what the two would read differently, is a manifest error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._params import parse_param_spec, validate_param
from oneoff._pattern import compile_pattern
from oneoff.errors import ManifestError, ParamError
from oneoff.testing import invoke, make_app

MANIFEST = """
[environments.development]
config = [{{ dotenv = ".env" }}]

[tasks.find]
argv = ["python", "-c", "import sys; print('found', sys.argv[1])", "{{word}}"]
params.word = {{ type = "string", pattern = '{pattern}' }}
"""


def matches(pattern: str, value: str) -> bool:
    return compile_pattern(pattern, "ctx").fullmatch(value)


UNSUPPORTED = {
    "backreference": r"(a)\1",
    "named-backreference": r"(?P<x>a)(?P=x)",
    "lookahead": r"(?=a)a",
    "negative-lookahead": r"(?!b)a",
    "lookbehind": r"a(?<=a)",
    "negative-lookbehind": r"a(?<!b)",
    "possessive": r"a++",
    "atomic-group": r"(?>a+)",
    "conditional": r"(a)?(?(1)b|c)",
    "verbose-flag": r"(?x) a",
}


@pytest.mark.parametrize("pattern", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_a_pattern_re2_cannot_match_in_linear_time_is_a_manifest_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    """Backreferences, lookaround, possessive and atomic repetition and conditionals (all
    Python's `re` accepts) are refused when the manifest loads: exit 2, one line naming
    the task and param and why, a hint pointing at the rewrite; never a traceback, never a
    fall-back to a backtracking matcher."""
    monkeypatch.chdir(make_app(tmp_path / "app", MANIFEST.format(pattern=pattern)))
    monkeypatch.setenv("ONEOFF_LOG_FORMAT", "text")
    result = invoke(["tasks"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("oneoff: error: ")
    assert "task 'find' param 'word'" in lines[0]
    assert "pattern" in lines[0]
    assert re.search(r"numeric escape|linear-time matcher", lines[0]), lines[0]
    assert lines[1].startswith("  hint: rewrite it without backreferences")
    assert "Traceback" not in result.output


AMBIGUOUS = {
    # Python: 0 to 3 times; RE2: the text "{,3}".
    "open-repeat": (r"a{,3}", "{0,n}"),
    # Python: a set of '[', ':', 'a', ... then ']'; RE2: any letter.
    "posix-class": (r"[[:alpha:]]+", "ambiguous"),
    # Python: group 12 if there is one; RE2: octal 012, a newline.
    "numeric-escape": ("(a)" * 12 + r"\12", "numeric escape"),
}


@pytest.mark.parametrize(("pattern", "words"), AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_a_pattern_the_two_dialects_read_differently_is_refused(pattern: str, words: str) -> None:
    """A spelling Python's `re` and RE2 both accept but read differently is refused rather
    than silently changing what an existing manifest accepts."""
    with pytest.raises(ManifestError, match=re.escape(words)):
        compile_pattern(pattern, "ctx")


BOMBS = {
    "repetition-of-repetition": (r"(?:a{1000}){1000}", "repetition size"),
    "nested-counts": (r"((a{100}){100}){100}", "repetition size"),
    "count-over-1000": (r"a{1001}", "repetition size"),
    "program-over-budget": (r".{1000}" * 100, "more than 1 MiB"),
    "too-long": ("a" * 1001, "at most 1000"),
}


@pytest.mark.parametrize(("pattern", "words"), BOMBS.values(), ids=BOMBS.keys())
def test_a_pattern_size_bomb_is_refused_cleanly(
    tmp_path: Path, cli_env: dict[str, str], pattern: str, words: str
) -> None:
    """A pattern whose compiled program would be huge (repetition counts multiplied,
    a hundred `.{1000}`) or long is refused by the real CLI with one line on stderr
    (fd 2: nothing logged by RE2 itself), within RE2's bounded memory."""
    root = make_app(tmp_path / "app", MANIFEST.format(pattern=pattern))
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", "tasks"],
        cwd=root, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) in (1, 2), lines
    assert lines[0].startswith("oneoff: error: "), lines
    assert "param 'word'" in lines[0], lines[0]
    assert words in lines[0], lines[0]
    assert all(line.startswith("  hint: ") for line in lines[1:]), lines


def test_python_spellings_re2_lacks_keep_their_meaning() -> None:
    """`\\Z` (RE2 spells it `\\z`) and `\\uXXXX`/`\\UXXXXXXXX` (RE2: `\\x{...}`) are
    accepted and mean what they mean in Python; `(?P<name>...)` and a `]` first in a class
    need no translation."""
    assert matches(r"[a-z]+\Z", "abc")
    assert not matches(r"[a-z]+\Z", "abc1")
    assert matches(r"caf\u00e9", "café")
    assert matches(r"\U0001F600?ok", "\U0001f600ok")
    assert matches(r"(?P<year>[0-9]{4})-[0-9]{2}", "2026-12")
    assert matches(r"[]a]+", "]a]")
    assert matches(r"[^]a]+", "bc")
    assert not matches(r"[^]a]+", "b]")
    assert matches(r"\[[a-z]\]", "[x]")
    assert matches(r"(?i)caf\u00e9", "CAF\u00c9")  # (?i) folds non-ASCII, as Python does


def test_perl_classes_are_ascii() -> None:
    """`\\d`, `\\w` and `\\s` are ASCII classes, as under Python's `re.ASCII`: `\\d{4}`
    refuses Arabic-Indic digits (Python's default `re` accepted them, and `int()` reads
    them), `\\w` refuses accented letters; `\\p`-style classes are not Python and are
    refused."""
    assert matches(r"\d{4}", "2026")
    assert not matches(r"\d{4}", "\u0662\u0660\u0662\u0666")
    assert re.fullmatch(r"\d{4}", "\u0662\u0660\u0662\u0666")  # what the old matcher did
    assert not matches(r"\w+", "café")
    assert matches(r"[\w\u00e0-\u00ff]+", "café")
    with pytest.raises(ManifestError, match="bad escape"):
        compile_pattern(r"\pL+", "ctx")


def test_a_value_with_a_lone_surrogate_matches_nothing() -> None:
    """A value that is not text (a lone surrogate, which RE2 cannot encode) fails its
    pattern with the usual ParamError, never a UnicodeEncodeError traceback."""
    spec = parse_param_spec("t", "pw", {"type": "secret", "pattern": ".+"}, "oneoff.toml")
    with pytest.raises(ParamError, match="does not match pattern"):
        validate_param(spec, "abcdefgh\udcff", app_root=None)


def test_a_crafted_value_against_nested_repetition_is_refused() -> None:
    """`(a+)+$` against 255 `a`s and a `!` (2^255 paths for a backtracking matcher) is a
    plain mismatch, and a matching value still matches."""
    spec = parse_param_spec("t", "p", {"type": "string", "pattern": "(a+)+$"}, "oneoff.toml")
    with pytest.raises(ParamError, match="does not match pattern"):
        validate_param(spec, "a" * 255 + "!", app_root=None)
    assert validate_param(spec, "a" * 256, app_root=None) == "a" * 256


# A small grammar of the patterns manifests use: literals, classes, `.`, alternation,
# groups, anchors and greedy or lazy, bounded or unbounded repetition.
ATOMS = st.sampled_from(
    ["a", "b", "-", r"\.", ".", "[ab]", "[^a]", "[a-c0-9]", "[-a]", r"\d", r"\w", r"\s",
     r"\D", r"\W", r"\S", r"[\d.]", r"\b", "(?:)", "\u00e9"]
)  # fmt: skip
QUANTIFIERS = st.sampled_from(["*", "+", "?", "*?", "+?", "??", "{2}", "{0,2}", "{1,}", "{1,3}?"])


def _patterns() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.lists(inner, min_size=2, max_size=3).map("".join),
            st.lists(inner, min_size=2, max_size=3).map("|".join),
            inner.map(lambda p: f"(?:{p})"),
            inner.map(lambda p: f"({p})"),
            st.tuples(inner, QUANTIFIERS).map(lambda t: f"(?:{t[0]}){t[1]}"),
        )

    return st.recursive(ATOMS, extend, max_leaves=8)


# \v is left out: RE2's \s lacks it, a control character no string param may contain.
# No non-ASCII capital: under (?i) RE2 folds `É` to `é` as Python's default does, and
# Python's re.ASCII does not.
VALUES = st.text(alphabet="abAB-.c0 1\t\n\u00e9\u0663_!", max_size=10)
FLAGS = st.sampled_from(["", "(?i)", "(?s)", "(?m)", "(?is)"])


@settings(max_examples=400, deadline=None)
@given(
    _patterns(),
    VALUES,
    FLAGS,
    st.sampled_from(["", "^", r"\A"]),
    st.sampled_from(["", r"\Z", "$"]),
)
def test_re2_full_matches_agree_with_python(
    pattern: str, value: str, flags: str, start: str, end: str
) -> None:
    """For patterns from a small grammar (with inline flags and anchors) and any value,
    RE2's full match is Python's `re.fullmatch` under `re.ASCII`: existing manifests keep
    their meaning."""
    if end == "$" and value.endswith("\n"):
        value = value[:-1]  # Python's `$` also matches before a final newline; RE2's not
    pattern = flags + start + pattern + end
    expected = re.fullmatch(pattern, value, re.ASCII) is not None
    assert matches(pattern, value) == expected, (pattern, value)


def test_the_cli_imports_re2_only_for_a_pattern(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`oneoff --help` and a manifest without patterns never import RE2 (the CLI's import
    path stays lazy); a manifest with a pattern does."""

    def imported(root: Path, *args: str) -> bool:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "oneoff", *args],
            cwd=root, env=cli_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return any(line.rstrip().endswith(" re2") for line in done.stderr.splitlines())

    unpatterned = MANIFEST.format(pattern="x").replace(", pattern = 'x'", "")
    plain = make_app(tmp_path / "plain", unpatterned)
    patterned = make_app(tmp_path / "patterned", MANIFEST.format(pattern="[a-z]+"))
    assert not imported(plain, "--help")
    assert not imported(plain, "tasks")
    assert imported(patterned, "tasks")
