"""Tests for the dependency snapshot of a Python interpreter."""

from __future__ import annotations

import json
import platform
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._release import deps
from oneoff._release.deps import (
    DepsSnapshot,
    Distribution,
    diff_deps,
    normalize_name,
    snapshot_deps,
)
from oneoff.errors import ReleaseError


def make(python: str = "3.11.7", **dists: tuple[str, str | None]) -> DepsSnapshot:
    return DepsSnapshot.build(
        "cpython",
        python,
        {n: Distribution(n, v, r, False) for n, (v, r) in dists.items()},
    )


def test_current_interpreter_snapshot_lists_normalized_distributions_including_oneoff() -> None:
    """The in-process snapshot has our Python version and every name PEP 503-normalized."""
    snap = snapshot_deps()
    assert snap.implementation == sys.implementation.name
    assert snap.python_version == platform.python_version()
    assert "oneoff" in snap.distributions
    assert "pytest" in snap.distributions
    assert all(normalize_name(n) == n for n in snap.distributions)
    assert all(
        d.record_sha256 is None or len(d.record_sha256) == 64 for d in snap.distributions.values()
    )


def test_other_interpreter_via_subprocess_agrees_with_in_process_probe() -> None:
    """Probing the same interpreter through a subprocess gives the same snapshot as in-process."""
    here = snapshot_deps()
    there = deps._parse(deps._probe_other(sys.executable), normalized=False)
    assert there.digest == here.digest


@pytest.mark.parametrize(
    ("python", "message"),
    [
        ("/nonexistent/python", "cannot run interpreter"),
        ("/bin/false", "failed to list its distributions"),
        ("/bin/echo", "unreadable output"),
    ],
)
def test_broken_interpreter_raises_release_error(python: str, message: str) -> None:
    """A missing, failing or babbling interpreter gives a ReleaseError, never a crash."""
    with pytest.raises(ReleaseError, match=message):
        snapshot_deps(python)


def test_normalize_name_follows_pep_503() -> None:
    """Runs of -, _ and . become one dash and the name is lower-cased."""
    assert normalize_name("Flask_SQLAlchemy") == "flask-sqlalchemy"
    assert normalize_name("zope.interface") == "zope-interface"
    assert normalize_name("A-_.b") == "a-b"


def test_diff_deps_describes_version_python_added_removed_and_rebuilt() -> None:
    """diff_deps names each difference in one short line, python first."""
    old = make(flask=("3.1.3", "a" * 64), requests=("2.0", None), attrs=("23.1", "b" * 64))
    new = make("3.12.1", flask=("3.1.4", "a" * 64), attrs=("23.1", "c" * 64), rich=("13", None))
    assert diff_deps(old, new) == [
        "python 3.11.7 -> 3.12.1",
        "attrs 23.1 (installed files differ)",
        "flask 3.1.3 -> 3.1.4",
        "requests (removed)",
        "rich 13 (added)",
    ]
    assert diff_deps(old, old) == []


def test_editable_switch_is_reported() -> None:
    """Going from an installed to an editable distribution shows as such."""
    old = make(app=("1.0", None))
    new = DepsSnapshot.build("cpython", "3.11.7", {"app": Distribution("app", "1.0", None, True)})
    assert diff_deps(old, new) == ["app 1.0 (installed -> editable)"]


def test_first_distribution_on_the_path_wins_when_a_name_repeats() -> None:
    """Raw probe output with a shadowed duplicate keeps the first, as import would."""
    raw = {
        "implementation": "cpython",
        "python_version": "3.11.7",
        "distributions": [
            {"name": "Foo_Bar", "version": "2", "record_sha256": None, "editable": False},
            {"name": "foo-bar", "version": "1", "record_sha256": None, "editable": False},
        ],
    }
    assert deps._parse(raw, normalized=False).distributions["foo-bar"].version == "2"


dist_strategy = st.builds(
    Distribution,
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
        lambda n: "--" not in n
    ),
    version=st.text(max_size=10),
    record_sha256=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex),
    editable=st.booleans(),
)


@given(st.lists(dist_strategy, max_size=8), st.text(min_size=1, max_size=8))
def test_to_dict_from_dict_round_trips_through_json(
    dists: list[Distribution], version: str
) -> None:
    """Any snapshot survives to_dict -> JSON -> from_dict with the same digest."""
    snap = DepsSnapshot.build("cpython", version, {d.name: d for d in dists})
    again = DepsSnapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(digest="0" * 64), "digest does not match"),
        (lambda d: d["distributions"][0].update(name="Flask"), "unnormalized"),
        (lambda d: d["distributions"][0].update(editable=1), "boolean"),
        (lambda d: d["distributions"][0].update(record_sha256="xyz"), "RECORD digest"),
        (lambda d: d.update(extra=1), "expected an object"),
    ],
)
def test_from_dict_rejects_tampered_or_malformed_input(mutate: object, message: str) -> None:
    """from_dict is strict: a wrong digest or malformed entry raises ReleaseError."""
    data = make(flask=("3.1.3", "a" * 64)).to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ReleaseError, match=message):
        DepsSnapshot.from_dict(data)
