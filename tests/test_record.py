"""oneoff._record behaves like dataclasses for everything oneoff uses."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff import _record


def make(module):  # type: ignore[no-untyped-def]
    @module.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 0
        tags: tuple[str, ...] = module.field(default_factory=tuple)
        note: str = module.field(default="", compare=False)

    return Point


OURS, THEIRS = make(_record), make(dataclasses)


@given(st.integers(), st.integers(), st.lists(st.text(max_size=3), max_size=3), st.text(max_size=5))
def test_same_behaviour_as_dataclasses(x: int, y: int, tags: list[str], note: str) -> None:
    """Construction, equality, hashing and repr match dataclasses (repr up to the class path)."""
    a, b = OURS(x, y, tuple(tags), note=note), THEIRS(x, y, tuple(tags), note=note)
    assert (a.x, a.y, a.tags, a.note) == (b.x, b.y, b.tags, b.note)
    assert a == OURS(x, y, tuple(tags), note="other")
    assert hash(a) == hash(OURS(x, y, tuple(tags)))
    assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    assert _record.replace(a, y=y + 1).y == y + 1
    assert _record.asdict(a) == {"x": x, "y": y, "tags": tuple(tags), "note": note}


def test_frozen_missing_and_unknown() -> None:
    """Frozen records refuse assignment; missing or unknown arguments are TypeErrors."""
    p = OURS(1)
    with pytest.raises(_record.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing"):
        OURS()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected"):
        OURS(1, z=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        OURS(1, 2, (), "", 5)  # type: ignore[call-arg]


def test_post_init_inheritance_and_mutable() -> None:
    """__post_init__ runs, fields are inherited, mutable records are unhashable."""

    @_record.dataclass
    class Base:
        a: int

    @_record.dataclass
    class Child(Base):
        b: int = 2

        def __post_init__(self) -> None:
            self.b *= 10

    child = Child(1)
    assert (child.a, child.b) == (1, 20)
    child.a = 5
    assert child.a == 5
    assert Child.__hash__ is None
    assert [f.name for f in _record.fields(child)] == ["a", "b"]
