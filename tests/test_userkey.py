"""The operator's cache key: outside every app, private to the OS user, or not used at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from oneoff import _userkey


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "oneoff"


def test_key_is_made_private_and_reused(state: Path, tmp_path: Path) -> None:
    """The key file is created 0600 in a 0700 directory and gives the same key next time."""
    first = _userkey.cache_key("statcache", tmp_path / "app")
    _userkey._keys.clear()
    again = _userkey.cache_key("statcache", tmp_path / "app")
    assert first is not None
    assert first == again
    assert stat.S_IMODE((state / "cache.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_each_purpose_and_app_has_its_own_key(state: Path, tmp_path: Path) -> None:
    """A cache file copied to another app or another purpose does not verify there."""
    keys = {
        _userkey.cache_key("statcache", tmp_path / "a"),
        _userkey.cache_key("statcache", tmp_path / "b"),
        _userkey.cache_key("deps", tmp_path / "a"),
    }
    assert len(keys) == 3
    assert None not in keys


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_directory_others_can_write_gives_no_key(state: Path, tmp_path: Path, mode: int) -> None:
    """A state directory that others can write is not trusted: no key, no cache."""
    state.mkdir(parents=True)
    state.chmod(mode)
    _userkey._keys.clear()
    assert _userkey.cache_key("statcache", tmp_path) is None
    assert _userkey.private_dir("pycache") is None


def test_a_symlinked_or_loose_key_file_gives_no_key(state: Path, tmp_path: Path) -> None:
    """A key file readable by others, or a symlink to one, is not used."""
    assert _userkey.cache_key("statcache", tmp_path) is not None
    key = state / "cache.key"
    key.chmod(0o644)
    _userkey._keys.clear()
    assert _userkey.cache_key("statcache", tmp_path) is None
    key.unlink()
    elsewhere = tmp_path / "their.key"
    elsewhere.write_bytes(os.urandom(32))
    elsewhere.chmod(0o600)
    key.symlink_to(elsewhere)
    _userkey._keys.clear()
    assert _userkey.cache_key("statcache", tmp_path) is None


def test_a_directory_others_can_only_read_is_fine(state: Path, tmp_path: Path) -> None:
    """A 0755 state directory (as ``mkdir -p`` leaves a parent) still holds the key."""
    state.mkdir(parents=True)
    state.chmod(0o755)
    _userkey._keys.clear()
    assert _userkey.cache_key("statcache", tmp_path) is not None
    assert stat.S_IMODE((state / "cache.key").stat().st_mode) == 0o600
