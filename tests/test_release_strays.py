"""Listing importable files the release does not contain, and the cache of a clean listing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oneoff._release import strays as strays_mod
from oneoff._release.strays import cached_strays, strays

KEY = b"k" * 32


def tree(root: Path) -> Path:
    for rel in ("app/__init__.py", "app/models.py", "manage.py", "README"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    return root


def released_set(*paths: str) -> Callable[[bytes], bool]:
    wanted = {p.encode() for p in paths}
    return lambda rel: rel in wanted


RELEASED = ("app/__init__.py", "app/models.py", "manage.py", "README")


def test_only_importable_files_outside_the_release_are_listed(tmp_path: Path) -> None:
    """Loadable names not in the release are listed; other files, ``__pycache__``,
    non-identifier directories and the skipped virtualenv are not."""
    root = tree(tmp_path / "root")
    for rel in ("notes.txt", "__pycache__/json.cpython-311.pyc", ".tox/json.py",
                "my-data/x.py", "venv/lib/evil.py", "app/evil.pth", "json.pyc"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "lib").symlink_to(tmp_path)
    found = strays(root, released_set(*RELEASED), [str(root / "venv")])
    assert found == ["app/evil.pth", "json.pyc", "lib"]


def test_a_clean_listing_is_cached_and_a_new_file_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached clean result is reused while no directory moved; a file planted afterwards
    (in a subdirectory) is found, and a cache under another key is not trusted."""
    monkeypatch.setattr(strays_mod, "_RACY_NS", 0)
    root, state = tree(tmp_path / "root"), tmp_path / "state"
    state.mkdir()
    released = released_set(*RELEASED)
    args: dict[str, Any] = {"state_dir": state, "key": KEY, "tag": "digest"}
    assert cached_strays(root, released, [], **args) == []
    assert (state / "straycache").exists()
    calls: list[object] = []
    real_scan = strays_mod._scan

    def counted(*a: Any) -> Any:
        calls.append(a)
        return real_scan(*a)

    monkeypatch.setattr(strays_mod, "_scan", counted)
    assert cached_strays(root, released, [], **args) == []
    assert calls == []  # answered from directory stats alone
    (root / "app" / "json.py").write_text("x")
    assert cached_strays(root, released, [], **args) == ["app/json.py"]
    os.unlink(root / "app" / "json.py")
    other: dict[str, Any] = {"state_dir": state, "key": b"o" * 32, "tag": "digest"}
    assert cached_strays(root, released, [], **other) == []
    assert len(calls) == 2
