"""The warm paths of release checks: git-mode stat cache, dependency cache, signature cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oneoff._release import warm
from oneoff._release.deps import snapshot_deps
from oneoff._release.tree import StatCache, snapshot, unchanged, verify

KEY = b"w" * 32
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
}  # fmt: skip

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env=GIT_ENV, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel in ("a/x.py", "a/b/y.py", "z.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def warm_cache(root: Path, tmp_path: Path) -> tuple[StatCache, str]:
    cache = StatCache(tmp_path / "statcache", key=KEY)
    snap = snapshot(root, cache=cache)
    # Racy entries (modified in the same tick as hashed) are re-hashed on the next scan.
    for _ in range(3):
        snapshot(root, cache=cache)
    return cache, snap.digest


@needs_git
def test_git_tree_unchanged_is_proven_from_stats(repo: Path, tmp_path: Path) -> None:
    """An untouched git checkout is proven unchanged without reading any file."""
    cache, digest = warm_cache(repo, tmp_path)
    assert unchanged(repo, digest, cache=cache)


@needs_git
def test_git_directory_swapped_for_a_link_is_not_unchanged(repo: Path, tmp_path: Path) -> None:
    """Replacing a tracked directory by a symlink to a copy is caught, and reported."""
    cache, digest = warm_cache(repo, tmp_path)
    expected = snapshot(repo)
    shutil.copytree(repo / "a", tmp_path / "copy", copy_function=os.link)
    shutil.rmtree(repo / "a")
    (repo / "a").symlink_to(tmp_path / "copy")
    assert not unchanged(repo, digest, cache=cache)
    changes = {str(c) for c in verify(repo, expected, cache=cache)}
    assert "a/x.py (removed)" in changes


@needs_git
def test_newly_tracked_file_is_not_unchanged(repo: Path, tmp_path: Path) -> None:
    """A file added to the git index after the cache was filled breaks the warm proof."""
    cache, digest = warm_cache(repo, tmp_path)
    (repo / "new.py").write_text("")
    assert unchanged(repo, digest, cache=cache)  # untracked files never count
    git(repo, "add", "new.py")
    assert not unchanged(repo, digest, cache=cache)


def _fake_venv(tmp_path: Path) -> tuple[str, Path]:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    info = next(venv.glob("lib/python*/site-packages")) / "fakedep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedep\nVersion: 1.0\n")
    return str(venv / "bin" / "python"), info


def test_dependency_cache_answers_until_a_distribution_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached snapshot is reused while nothing moved; editing METADATA invalidates it."""
    python, info = _fake_venv(tmp_path)
    monkeypatch.setattr(warm, "_RACY_NS", -(10**18))  # the files were written just now
    first = warm.cached_deps(python, tmp_path, KEY)
    assert first.distributions["fakedep"].version == "1.0"

    def no_probe(python: str | None = None) -> None:
        raise AssertionError("the cache should have answered")

    with monkeypatch.context() as m:
        m.setattr(warm, "snapshot_deps", no_probe)
        assert warm.cached_deps(python, tmp_path, KEY) == first
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedep\nVersion: 1.1\n")
    assert warm.cached_deps(python, tmp_path, KEY).distributions["fakedep"].version == "1.1"


def test_dependency_cache_written_with_another_key_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache file not authenticated by this app's key is never trusted."""
    python, _info = _fake_venv(tmp_path)
    monkeypatch.setattr(warm, "_RACY_NS", -(10**18))
    warm.cached_deps(python, tmp_path, b"x" * 32)
    calls: list[str | None] = []
    real = snapshot_deps

    def counting(python: str | None = None) -> object:
        calls.append(python)
        return real(python)

    monkeypatch.setattr(warm, "snapshot_deps", counting)
    warm.cached_deps(python, tmp_path, KEY)
    assert calls == [python]


def test_signature_cache_holds_only_added_tags(tmp_path: Path) -> None:
    """A tag is remembered once added, tags differ per input, and a foreign key sees none."""
    cache = warm.SignatureCache(tmp_path, KEY)
    tag = cache.tag(["rel_1", b"sig", "kid", "production"])
    assert tag not in cache
    cache.add(tag)
    assert tag in cache
    assert cache.tag(["rel_1", b"sig2", "kid", "production"]) not in cache
    assert tag not in warm.SignatureCache(tmp_path, b"z" * 32)


@needs_git
def test_tracked_but_ignored_files_keep_the_warm_proof(repo: Path, tmp_path: Path) -> None:
    """A tracked file the ignore rules drop (a committed .env) does not defeat the warm path."""
    (repo / ".env").write_text("A=1\n")
    git(repo, "add", ".env")
    cache = StatCache(tmp_path / "statcache", key=KEY)
    digest = snapshot(repo, ignore=["/.env"], cache=cache).digest
    for _ in range(3):
        snapshot(repo, ignore=["/.env"], cache=cache)
    (repo / ".env").write_text("A=2\n")
    assert unchanged(repo, digest, ignore=["/.env"], cache=cache)


@needs_git
def test_tracked_file_missing_when_cached_and_restored_is_caught(
    repo: Path, tmp_path: Path
) -> None:
    """A tracked file absent at release time that reappears is reported as added."""
    saved = (repo / "z.py").read_bytes()
    (repo / "z.py").unlink()
    cache, digest = warm_cache(repo, tmp_path)
    expected = snapshot(repo)
    (repo / "z.py").write_bytes(saved)
    assert not unchanged(repo, digest, cache=cache)
    assert [str(c) for c in verify(repo, expected, cache=cache)] == ["z.py (added)"]
