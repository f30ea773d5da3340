"""A Procfile line's $VAR expansion checked against the plan document's fingerprints: every
expansion oneoff makes is accepted, anything else is refused, and the search is bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._plan import fingerprint
from oneoff._procfile import expand_vars
from oneoff._server.expanded_argv import MAX_HASHED, expansion_matches

KEY = b"k" * 32


def fingerprints(env: dict[str, str], key: bytes = KEY) -> dict[str, str]:
    return {name: fingerprint(key, name, value) for name, value in env.items()}


def check(template: str, value: str, env: dict[str, str]) -> bool:
    return expansion_matches(template, value, fingerprints(env), KEY)


@pytest.mark.parametrize(
    ("template", "env", "value"),
    [
        ("--database=$DB", {"DB": "main"}, "--database=main"),
        ("${DB}", {"DB": "a b"}, "a b"),
        ("${MODE:-safe}", {}, "safe"),
        ("${MODE:-safe}", {"MODE": ""}, "safe"),
        ("${MODE:-safe}", {"MODE": "fast"}, "fast"),
        ("${MODE-safe}", {"MODE": ""}, ""),
        ("${MODE-safe}", {}, "safe"),
        ("$A$B", {"A": "x", "B": "yz"}, "xyz"),
        ("$A-$A", {"A": "-"}, "---"),
        ("plain", {}, "plain"),
    ],
)
def test_the_expansion_oneoff_makes_is_accepted(
    template: str, env: dict[str, str], value: str
) -> None:
    """Each $VAR form, filled as sh (and oneoff's expand_vars) fills it, is accepted."""
    assert expand_vars(template, env, "test") == value
    assert check(template, value, env)


@pytest.mark.parametrize(
    ("template", "env", "value"),
    [
        ("--database=$DB", {"DB": "main"}, "--database=other"),  # another value
        ("--database=$DB", {"DB": "main"}, "--flush=main"),  # other literal text
        ("--database=$DB", {"DB": "main"}, "--database=main --noinput"),
        ("$DB", {}, "anything"),  # unset, no default: nothing can be checked
        ("${MODE:-safe}", {"MODE": "fast"}, "safe"),  # set: the default is not used
        ("${MODE:-safe}", {"MODE": "fast"}, ""),
        ("${MODE-safe}", {"MODE": ""}, "safe"),  # set to empty: '-' keeps the empty value
        ("$A$B", {"A": "x", "B": "yz"}, "xyzz"),
        ("plain", {}, "plainer"),
    ],
)
def test_anything_else_is_refused(template: str, env: dict[str, str], value: str) -> None:
    """Other values, other literal text, extra text or an unverifiable variable: refused."""
    assert not check(template, value, env)


def test_a_fingerprint_made_with_another_key_does_not_match() -> None:
    """The fingerprints count only under the server's key: a client's own key is refused."""
    env = {"DB": "main"}
    assert not expansion_matches("$DB", "main", fingerprints(env, b"x" * 32), KEY)


def test_a_costly_search_is_refused_not_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adjacent references over a long value would fingerprint ever more splits (50 MB
    here): past MAX_HASHED bytes the element is refused (fail closed), not searched on."""
    import oneoff._plan

    hashed = []
    real = oneoff._plan.fingerprint

    def counting(key: bytes, name: str, value: str) -> str:
        hashed.append(len(value))
        return real(key, name, value)

    monkeypatch.setattr(oneoff._plan, "fingerprint", counting)
    value = "x" * 10_000
    assert not check("$A$B", value, {"A": "a", "B": "b"})
    assert 0 < sum(hashed) <= MAX_HASHED
    assert MAX_HASHED >= 1 << 20  # a real line's few references stay far below it


NAMES = st.sampled_from(["A", "B", "DB_NAME"])
LITERAL = st.text(st.sampled_from("ab-=/:_ "), max_size=4)
# Braced only: a generated literal after a bare $NAME could extend the name.
REF = st.tuples(NAMES, st.sampled_from(["${}", "${:-}", "${-}"]), LITERAL)


def _ref(name: str, form: str, default: str) -> str:
    if form == "${}":
        return "${" + name + "}"
    return "${" + name + form[2:-1] + default + "}"


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.tuples(LITERAL, REF), max_size=3),
    tail=LITERAL,
    env=st.dictionaries(NAMES, st.text(st.sampled_from("ab-=/:_ "), max_size=5)),
)
def test_every_expansion_of_a_generated_template_is_accepted(
    parts: list[tuple[str, tuple[str, str, str]]], tail: str, env: dict[str, str]
) -> None:
    """Whatever the template and config, what expand_vars makes of it is accepted (when it
    can make anything), and one character more is refused."""
    template = "".join(lit + _ref(*ref) for lit, ref in parts) + tail
    try:
        value = expand_vars(template, env, "test")
    except Exception:
        return  # an unset variable without a default: no plan has this argv
    assert check(template, value, env)
    assert not check(template, value + "\x00", env)
