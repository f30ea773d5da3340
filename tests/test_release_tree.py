"""Tests for the release code snapshot: file selection, digest, diff, verify and the stat cache."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oneoff._release import listing, statcache, tree
from oneoff._release.tree import (
    Change,
    Entry,
    StatCache,
    TreeSnapshot,
    describe,
    diff,
    ensure_unchanged,
    snapshot,
    verify,
)
from oneoff.errors import DriftError, ReleaseError

HAS_GIT = shutil.which("git") is not None


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def git(root: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    write(root, {"app/models.py": b"class M: ...\n", "manage.py": b"print('hi')\n", "README": b"x"})
    (root / "manage.py").chmod(0o755)
    return root


@pytest.fixture
def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records every os.open of a path: proof of which files were read."""
    opened: list[bytes] = []
    real_open = os.open

    def counting_open(path: object, *args: object, **kwargs: object) -> int:
        opened.append(os.fsencode(path))  # type: ignore[arg-type]
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    return opened


# --- what is recorded ------------------------------------------------------------------


def test_snapshot_records_files_with_mode_size_and_sha256(app: Path) -> None:
    """Each regular file is recorded with its permission bits, size and content SHA-256."""
    snap = snapshot(app)
    assert set(snap.entries) == {"README", "app/models.py", "manage.py"}
    digest = hashlib.sha256(b"print('hi')\n").hexdigest()
    assert snap.entries["manage.py"] == Entry("manage.py", "file", 0o755, 12, digest)
    assert snap.source == "walk"
    assert len(snap.digest) == 64


def test_symlinks_are_recorded_not_followed_even_outside_root_or_in_loops(app: Path) -> None:
    """Links (to outside the root, dangling, or forming a loop) are recorded by their target."""
    (app / "etc").symlink_to("/etc")
    (app / "loop").symlink_to("loop")
    (app / "app" / "up").symlink_to("..")
    snap = snapshot(app)
    assert snap.entries["etc"] == Entry("etc", "symlink", 0, 4, hashlib.sha256(b"/etc").hexdigest())
    assert snap.entries["loop"].kind == "symlink"
    assert snap.entries["app/up"].kind == "symlink"
    assert not any(p.startswith(("etc/", "app/up/")) for p in snap.entries)


def test_default_and_caller_ignore_patterns_leave_files_out(app: Path) -> None:
    """Default ignores (.oneoff/, __pycache__/, *.pyc, .venv/) and caller globs are skipped."""
    write(
        app,
        {
            ".oneoff/statcache": b"x",
            "app/__pycache__/m.cpython-311.pyc": b"x",
            "stray.pyc": b"x",
            ".venv/lib/x.py": b"x",
            "node_modules/a.js": b"x",
            "logs/today.log": b"x",
            "app/keep.log": b"x",
        },
    )
    snap = snapshot(app, ignore=["node_modules/", "/logs", "*.tmp"])
    assert set(snap.entries) == {"README", "app/models.py", "manage.py", "app/keep.log"}


def test_non_utf8_names_round_trip_and_differ_from_lookalikes(tmp_path: Path) -> None:
    """A name that is not valid UTF-8 is snapshotted, serialized and restored byte-exactly."""
    root = tmp_path / "app"
    root.mkdir()
    raw = os.path.join(os.fsencode(root), b"caf\xe9.py")
    with open(raw, "wb") as f:
        f.write(b"x")
    snap = snapshot(root)
    (path,) = snap.entries
    assert listing._enc(path) == b"caf\xe9.py"
    data = json.loads(json.dumps(snap.to_dict()))
    assert "path_b64" in data["entries"][0]
    assert TreeSnapshot.from_dict(data) == snap
    assert "caf\\xe9.py (removed)" in describe(diff(snap, TreeSnapshot.build([])))


def test_fifo_in_tree_is_refused_by_name(app: Path) -> None:
    """A FIFO cannot be hashed meaningfully (and could block), so the snapshot refuses it."""
    os.mkfifo(app / "app" / "pipe")
    with pytest.raises(ReleaseError, match="app/pipe is neither a regular file"):
        snapshot(app)


def test_unreadable_file_raises_release_error_naming_it(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open that fails (here EACCES) becomes a ReleaseError that names the file."""
    real_open = os.open

    def deny(path: object, *args: object, **kwargs: object) -> int:
        if os.fsencode(path).endswith(b"app/models.py"):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ReleaseError, match=r"cannot read app/models\.py: Permission denied"):
        snapshot(app)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions only")
def test_unreadable_file_for_real_as_unprivileged_user() -> None:
    """With real permissions (run as nobody when we are root), a mode-000 file is refused."""
    base = Path(tempfile.mkdtemp(prefix="oneoff-perm-"))
    try:
        base.chmod(0o755)
        write(base, {"ok.py": b"x", "secret.py": b"x"})
        (base / "secret.py").chmod(0o000)
        src = str(Path(tree.__file__).parents[2])
        code = (
            "import sys; sys.path.insert(0, sys.argv[2])\n"
            "from oneoff._release.tree import snapshot\n"
            "from oneoff.errors import ReleaseError\n"
            "try:\n    snapshot(sys.argv[1])\nexcept ReleaseError as e:\n    print(e.message)\n"
        )
        proc = None
        if os.geteuid() == 0:
            # Root bypasses permission checks, so drop to nobody for a real EACCES; our
            # interpreter may live under /root, so fall back to the system one (stdlib only).
            for python in (sys.executable, "/usr/bin/python3"):
                try:
                    attempt = subprocess.run(
                        [python, "-I", "-c", code, str(base), src],
                        capture_output=True,
                        text=True,
                        user=65534,
                        check=False,
                    )
                except (PermissionError, FileNotFoundError):
                    continue
                if attempt.stdout or attempt.returncode == 0:
                    proc = attempt
                    break
        elif not os.access(base / "secret.py", os.R_OK):
            argv = [sys.executable, "-c", code, str(base), src]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc is None:
            pytest.skip("no way here to run as a user who cannot read a mode-000 file")
        assert proc.stdout.strip() == "cannot read secret.py: Permission denied"
    finally:
        (base / "secret.py").chmod(0o600)
        shutil.rmtree(base)


def _append_after_hashing(monkeypatch: pytest.MonkeyPatch, path: Path, times: int) -> None:
    real = tree._sha256_fd
    calls = {"n": 0}

    def hash_then_write(fd: int) -> str:
        digest = real(fd)
        if calls["n"] < times and os.path.samestat(os.fstat(fd), os.stat(path)):
            calls["n"] += 1
            with open(path, "ab") as f:
                f.write(b"# appended while hashing\n")
        return digest

    monkeypatch.setattr(tree, "_sha256_fd", hash_then_write)


def test_file_that_keeps_changing_while_hashed_is_refused(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that changes during both the hash and the one re-hash raises ReleaseError."""
    _append_after_hashing(monkeypatch, app / "app" / "models.py", times=2)
    with pytest.raises(ReleaseError, match=r"app/models\.py changed while it was being hashed"):
        snapshot(app)


def test_file_that_changed_once_while_hashed_is_rehashed(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one change during hashing, the re-hash records the file's new contents."""
    _append_after_hashing(monkeypatch, app / "app" / "models.py", times=1)
    snap = snapshot(app)
    expected = hashlib.sha256((app / "app" / "models.py").read_bytes()).hexdigest()
    assert snap.entries["app/models.py"].digest == expected


# --- digest and diff -------------------------------------------------------------------


def test_digest_does_not_depend_on_directory_listing_order(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reversing what the OS lists in each directory yields the same snapshot and digest."""
    write(app, {f"pkg/m{i}.py": bytes([i]) for i in range(20)})
    first = snapshot(app)
    real_scandir = os.scandir

    class Reversed:
        def __init__(self, path: bytes) -> None:
            with real_scandir(path) as it:
                self.items = list(it)[::-1]

        def __enter__(self) -> Iterator[os.DirEntry[bytes]]:
            return iter(self.items)

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(os, "scandir", Reversed)
    assert snapshot(app) == first


entry_paths = (
    st.lists(
        st.binary(min_size=1, max_size=8).filter(lambda b: b"\x00" not in b and b"/" not in b),
        min_size=1,
        max_size=3,
    )
    .map(lambda parts: b"/".join(parts))
    .filter(lambda p: all(x not in (b".", b"..") for x in p.split(b"/")))
)

entries_strategy = st.dictionaries(
    entry_paths,
    st.tuples(
        st.sampled_from(["file", "symlink"]),
        st.integers(0, 0o7777),
        st.integers(0, 2**40),
        st.binary(min_size=32, max_size=32),
    ),
    max_size=12,
).map(
    lambda d: [
        Entry(listing._dec(p), kind, mode if kind == "file" else 0, size, h.hex())  # type: ignore[arg-type]
        for p, (kind, mode, size, h) in d.items()
    ]
)


@given(entries=entries_strategy, seed=st.integers())
def test_digest_is_invariant_under_permutation_of_entries(entries: list[Entry], seed: int) -> None:
    """The tree digest depends on the set of entries, never on the order they come in."""
    shuffled = entries[:]
    random.Random(seed).shuffle(shuffled)
    assert TreeSnapshot.build(shuffled).digest == TreeSnapshot.build(entries).digest


@given(entries=entries_strategy)
def test_to_dict_from_dict_round_trips_through_json(entries: list[Entry]) -> None:
    """Any snapshot, including non-UTF-8 paths, survives to_dict -> JSON -> from_dict."""
    snap = TreeSnapshot.build(entries, "git")
    assert TreeSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(digest="0" * 64), "digest does not match"),
        (lambda d: d["entries"][0].update(path="../evil"), "bad path"),
        (lambda d: d["entries"][0].update(path="/abs"), "bad path"),
        (lambda d: d["entries"][0].update(mode=True), "bad mode"),
        (lambda d: d["entries"][0].update(kind="dir"), "bad kind"),
        (lambda d: d["entries"][0].update(extra=1), "expected keys"),
        (lambda d: d["entries"].append(dict(d["entries"][0])), "duplicate"),
        (lambda d: d.update(format="oneoff-tree-v0"), "unsupported format"),
        (lambda d: d["entries"][0].update(sha256="A" * 64), "sha256"),
    ],
)
def test_from_dict_rejects_tampered_or_malformed_input(
    app: Path, mutate: object, message: str
) -> None:
    """from_dict is strict: a wrong digest, unsafe path or bad field raises ReleaseError."""
    data = snapshot(app).to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ReleaseError, match=message):
        TreeSnapshot.from_dict(data)


names = st.text(
    st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=6
).filter(
    lambda n: (
        n not in (".", "..")
        and not n.endswith(".pyc")
        and n not in (".git", ".oneoff", ".venv", "__pycache__")
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.dictionaries(names, st.binary(max_size=64), min_size=1, max_size=6),
    data=st.data(),
)
def test_any_single_change_alters_digest_and_is_named_in_diff(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    """Changing one byte, the mode, the name or a link target changes the digest, and the diff
    names exactly the affected path(s)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root, files)
        (root / "link").symlink_to("target-a")
        before = snapshot(root)
        victim = data.draw(st.sampled_from(sorted(files)))
        kind = data.draw(st.sampled_from(["byte", "mode", "name", "link"]))
        if kind == "byte":
            content = bytearray(files[victim] or b"\x00")
            i = data.draw(st.integers(0, len(content) - 1))
            content[i] ^= data.draw(st.integers(1, 255)) if files[victim] else 0
            (root / victim).write_bytes(bytes(content) if files[victim] else b"\x00")
            expected = {Change(victim, "modified")}
        elif kind == "mode":
            (root / victim).chmod(0o755)
            expected = {Change(victim, "mode changed")}
        elif kind == "name":
            (root / victim).rename(root / (victim + "_renamed"))
            expected = {Change(victim, "removed"), Change(victim + "_renamed", "added")}
        else:
            (root / "link").unlink()
            (root / "link").symlink_to("target-b")
            victim = "link"
            expected = {Change("link", "modified")}
        after = snapshot(root)
        assert after.digest != before.digest
        assert set(diff(before, after)) == expected
        assert set(verify(root, before)) == expected


def test_diff_reports_type_change_and_mode_change(app: Path) -> None:
    """A file replaced by a symlink is 'type changed'; a chmod alone is 'mode changed'."""
    before = snapshot(app)
    (app / "README").unlink()
    (app / "README").symlink_to("manage.py")
    (app / "manage.py").chmod(0o644)
    assert diff(before, snapshot(app)) == [
        Change("README", "type changed"),
        Change("manage.py", "mode changed"),
    ]


def test_describe_lists_first_changes_and_counts_the_rest() -> None:
    """describe() gives a count, the first `limit` changes, and how many more there are."""
    changes = [Change(f"f{i}.py", "modified") for i in range(7)]
    assert describe(changes[:1]) == "1 file differs: f0.py (modified)"
    assert (
        describe(changes, limit=2)
        == "7 files differ: f0.py (modified), f1.py (modified), and 5 more"
    )
    assert describe([Change("a\nb", "added")]) == "1 file differs: a\\nb (added)"
    assert describe([]) == "no files differ"


def test_ensure_unchanged_raises_drift_error_with_description(app: Path) -> None:
    """ensure_unchanged passes on an identical tree and raises DriftError naming changed files."""
    expected = snapshot(app)
    ensure_unchanged(app, expected)
    (app / "app" / "models.py").write_text("changed")
    with pytest.raises(DriftError, match=r"1 file differs: app/models\.py \(modified\)"):
        ensure_unchanged(app, expected)


# --- git mode --------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_mode_uses_tracked_files_only_and_reports_deleted_as_removed(app: Path) -> None:
    """Inside a git work tree only tracked files count; untracked ones are ignored, deleted
    tracked ones show as removed."""
    git(app, "init", "-q")
    git(app, "add", "app/models.py", "manage.py")
    (app / "untracked.py").write_text("x")
    snap = snapshot(app)
    assert snap.source == "git"
    assert set(snap.entries) == {"app/models.py", "manage.py"}
    (app / "manage.py").unlink()
    assert verify(app, snap) == [Change("manage.py", "removed")]


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_mode_does_not_follow_a_tracked_directory_replaced_by_a_symlink(tmp_path: Path) -> None:
    """A tracked directory turned into a symlink: its files are 'removed', never read there."""
    root = tmp_path / "app"
    write(root, {"pkg/a.py": b"a"})
    write(tmp_path / "elsewhere", {"a.py": b"a"})
    git(root, "init", "-q")
    git(root, "add", ".")
    before = snapshot(root)
    shutil.rmtree(root / "pkg")
    (root / "pkg").symlink_to(tmp_path / "elsewhere")
    assert verify(root, before) == [Change("pkg/a.py", "removed")]


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_mode_in_a_subdirectory_lists_paths_relative_to_the_app_root(tmp_path: Path) -> None:
    """An app root below the repository top lists its own tracked files, relative to itself."""
    write(tmp_path, {"svc/app.py": b"x", "other/b.py": b"y"})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    assert set(snapshot(tmp_path / "svc").entries) == {"app.py"}


# --- stat cache ------------------------------------------------------------------------


def _warm(root: Path, cache: StatCache) -> TreeSnapshot:
    snap = snapshot(root, cache=cache)
    for _ in range(50):
        if cache._tree is not None:
            break
        # Entries stamped in the same tick as the cache stay racy; a later run admits them.
        snap = snapshot(root, cache=cache)
    assert cache._tree is not None
    return snap


def test_warm_verify_of_unchanged_tree_reads_no_files(app: Path, count_opens: list[bytes]) -> None:
    """With a warm stat cache, verify of an unchanged tree opens no file in the tree."""
    (app / "link").symlink_to("README")
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    count_opens.clear()
    assert verify(app, expected, cache=StatCache(cache.path)) == []
    assert [p for p in count_opens if not p.endswith(b"statcache")] == []


def test_warm_snapshot_uses_cached_digests_without_reading_files(
    app: Path, count_opens: list[bytes]
) -> None:
    """A second snapshot with the cache opens no app file and gives the same digest."""
    cache = StatCache(app / ".oneoff" / "statcache")
    first = _warm(app, cache)
    count_opens.clear()
    assert snapshot(app, cache=cache) == first
    assert [p for p in count_opens if b".oneoff" not in p] == []


def test_cache_entry_is_not_trusted_when_content_changes_but_size_and_mtime_do_not(
    app: Path,
) -> None:
    """Same size and restored mtime still leave a new ctime, so the file is re-hashed."""
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    path = app / "app" / "models.py"
    st = path.stat()
    path.write_bytes(b"X" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify(app, expected, cache=cache) == [Change("app/models.py", "modified")]


def test_walk_fast_path_notices_added_file(app: Path) -> None:
    """A new file changes its directory's stat, so the cached fast path reports it as added."""
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    (app / "app" / "new.py").write_text("x")
    assert verify(app, expected, cache=cache) == [Change("app/new.py", "added")]


def test_files_modified_after_the_cache_stamp_are_not_cached(
    app: Path, count_opens: list[bytes]
) -> None:
    """A file whose mtime is not older than the cache's own write time is re-hashed next time."""
    cache = StatCache(app / ".oneoff" / "statcache")
    _warm(app, cache)
    future = app / "README"
    st = future.stat()
    os.utime(future, ns=(st.st_atime_ns, st.st_mtime_ns + 3600 * 10**9))
    snapshot(app, cache=cache)
    count_opens.clear()
    snapshot(app, cache=cache)
    assert [p for p in count_opens if p.endswith(b"/README")] != []


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not a cache", statcache._CACHE_MAGIC + b"\xff" * 200, None],
    ids=["empty", "text", "bad-mac", "truncated"],
)
def test_corrupt_cache_file_is_ignored_and_replaced(app: Path, garbage: bytes | None) -> None:
    """A corrupt or truncated cache is ignored: results stay right, a new cache is written."""
    cache_path = app / ".oneoff" / "statcache"
    expected = _warm(app, StatCache(cache_path))
    good = cache_path.read_bytes()
    cache_path.write_bytes(good[: len(good) // 2] if garbage is None else garbage)
    (app / "README").write_text("changed")
    cache = StatCache(cache_path)
    assert verify(app, expected, cache=cache) == [Change("README", "modified")]
    assert cache_path.read_bytes()[:10] == statcache._CACHE_MAGIC


def test_cache_written_under_another_key_is_not_trusted(
    app: Path, count_opens: list[bytes]
) -> None:
    """A cache authenticated with another key (e.g. forged) is ignored; files are re-hashed."""
    cache_path = app / ".oneoff" / "statcache"
    expected = _warm(app, StatCache(cache_path, key=b"k" * 32))
    count_opens.clear()
    assert verify(app, expected, cache=StatCache(cache_path, key=b"other" * 8)) == []
    assert any(p.endswith(b"/README") for p in count_opens)


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_fast_path_notices_modified_and_removed_files(app: Path) -> None:
    """In git mode the cached check re-lists the index and still spots edits and deletions."""
    git(app, "init", "-q")
    git(app, "add", ".")
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    assert verify(app, expected, cache=cache) == []
    (app / "README").write_text("edited")
    (app / "manage.py").unlink()
    assert verify(app, expected, cache=cache) == [
        Change("README", "modified"),
        Change("manage.py", "removed"),
    ]


# --- warm fast paths: every kind of change still shows -----------------------------------


def _file_to_link(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


CHANGES: dict[str, Callable[[Path], object]] = {
    "modified": lambda root: (root / "app" / "models.py").write_text("class N: ...\n"),
    "added": lambda root: (root / "app" / "new.py").write_text("x"),
    "removed": lambda root: (root / "README").unlink(),
    "mode changed": lambda root: (root / "manage.py").chmod(0o644),
    "type changed": lambda root: _file_to_link(root / "README", "manage.py"),
}
CHANGED_PATH = {
    "modified": "app/models.py",
    "added": "app/new.py",
    "removed": "README",
    "mode changed": "manage.py",
    "type changed": "README",
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_walk_fast_path_detects_each_kind_of_change_after_a_warm_cache(
    app: Path, what: str
) -> None:
    """After a warm verify, a file modified, added, removed, chmod'ed or turned into a link
    is reported, and unchanged() no longer vouches for the tree."""
    cache = StatCache(app / ".oneoff" / "statcache", key=b"k" * 32)
    expected = _warm(app, cache)
    assert tree.unchanged(app, expected.digest, cache=cache)
    assert verify(app, expected, cache=cache) == []
    CHANGES[what](app)
    assert not tree.unchanged(app, expected.digest, cache=cache)
    assert verify(app, expected, cache=cache) == [Change(CHANGED_PATH[what], what)]  # type: ignore[arg-type]


def test_walk_fast_path_checks_the_root_itself_without_following_a_symlink(
    tmp_path: Path,
) -> None:
    """The walked root is lstat'ed as given: a root symlink re-pointed at a copy with a new
    file is not vouched for."""
    real = tmp_path / "real"
    write(real, {"a.py": b"a"})
    link = tmp_path / "link"
    link.symlink_to(real)
    cache = StatCache(tmp_path / "statcache")
    expected = _warm(link, cache)
    copy = tmp_path / "copy"
    shutil.copytree(real, copy)
    (copy / "b.py").write_text("b")
    link.unlink()
    link.symlink_to(copy)
    assert verify(link, expected, cache=cache) == [Change("b.py", "added")]


def test_cache_file_from_an_older_format_is_ignored(app: Path) -> None:
    """A cache in the previous layout (another magic) is not trusted; files are re-hashed."""
    cache_path = app / ".oneoff" / "statcache"
    expected = _warm(app, StatCache(cache_path))
    data = bytearray(cache_path.read_bytes())
    data[:10] = b"ONEOFFSC\x00\x02"
    cache_path.write_bytes(bytes(data))
    cache = StatCache(cache_path)
    cache.load()
    assert len(cache) == 0
    assert not tree.unchanged(app, expected.digest, cache=cache)


def _git_app(app: Path) -> None:
    git(app, "init", "-q")
    git(app, "add", ".")


def _git_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = listing._git_files

    def counting(root: bytes) -> list[bytes] | None:
        calls.append(root)
        return real(root)

    monkeypatch.setattr(statcache, "_git_files", counting)
    return calls


def _warm_git(app: Path, cache: StatCache) -> TreeSnapshot:
    snap = _warm(app, cache)
    for _ in range(200):
        if cache._git != statcache._NO_DIGEST:
            break
        # An index written in the cache's own timestamp tick is racy and not recorded;
        # a warm check a tick later records it (a ctime cannot be back-dated).
        time.sleep(0.005)
        assert tree.unchanged(app, snap.digest, cache=cache)
    assert cache._git != statcache._NO_DIGEST
    return snap


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_fast_path_skips_ls_files_while_the_index_is_unchanged(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With .git, .git/index and .git/config unchanged, a warm check runs no git at all."""
    _git_app(app)
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm_git(app, cache)
    calls = _git_calls(monkeypatch)
    assert tree.unchanged(app, expected.digest, cache=StatCache(cache.path))
    assert verify(app, expected, cache=cache) == []
    assert calls == []


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
@pytest.mark.parametrize("what", sorted(set(CHANGES) - {"added"}))
def test_git_fast_path_detects_each_kind_of_change_without_re_listing(app: Path, what: str) -> None:
    """Skipping ls-files does not skip the stat check: every kind of change is reported."""
    _git_app(app)
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm_git(app, cache)
    CHANGES[what](app)
    assert not tree.unchanged(app, expected.digest, cache=cache)
    assert verify(app, expected, cache=cache) == [Change(CHANGED_PATH[what], what)]  # type: ignore[arg-type]


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_index_change_makes_the_fast_path_re_list_tracked_files(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untracked file changes nothing; `git add` of it rewrites the index, so the warm
    check re-lists and reports it."""
    _git_app(app)
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm_git(app, cache)
    (app / "new.py").write_text("x")
    calls = _git_calls(monkeypatch)
    assert tree.unchanged(app, expected.digest, cache=cache)
    assert calls == []
    git(app, "add", "new.py")
    assert not tree.unchanged(app, expected.digest, cache=cache)
    assert calls != []
    assert verify(app, expected, cache=cache) == [Change("new.py", "added")]


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_git_rm_cached_of_a_tracked_file_is_noticed_by_the_fast_path(app: Path) -> None:
    """Untracking a file that stays on disk changes the index: it shows as removed."""
    _git_app(app)
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm_git(app, cache)
    git(app, "rm", "-q", "--cached", "README")
    assert verify(app, expected, cache=cache) == [Change("README", "removed")]


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_racy_git_index_is_not_recorded(app: Path) -> None:
    """An index not older than the cache's stamp could change again unseen: git is asked."""
    _git_app(app)
    index = app / ".git" / "index"
    st = index.stat()
    os.utime(index, ns=(st.st_atime_ns, st.st_mtime_ns + 3600 * 10**9))
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    assert tree.unchanged(app, expected.digest, cache=cache)
    assert cache._git == statcache._NO_DIGEST


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_missing_tracked_file_keeps_the_git_fast_path_off(app: Path) -> None:
    """A tracked file absent when cached could come back without an index change: the git
    state is not recorded, and its return is reported."""
    _git_app(app)
    data = (app / "README").read_bytes()
    (app / "README").unlink()
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    time.sleep(0.05)
    assert tree.unchanged(app, expected.digest, cache=cache)
    assert cache._git == statcache._NO_DIGEST
    (app / "README").write_bytes(data)
    assert verify(app, expected, cache=cache) == [Change("README", "added")]


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_repository_with_submodules_always_asks_git(app: Path) -> None:
    """A .gitmodules file means other indexes count: the git state is never recorded."""
    (app / ".gitmodules").write_text("")
    _git_app(app)
    cache = StatCache(app / ".oneoff" / "statcache")
    expected = _warm(app, cache)
    time.sleep(0.05)
    assert tree.unchanged(app, expected.digest, cache=cache)
    assert cache._git == statcache._NO_DIGEST


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.dictionaries(
        st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=16),
        min_size=1, max_size=8,
    ),
    data=st.data(),
)  # fmt: skip
def test_warm_cache_never_vouches_for_a_changed_tree(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    """Whatever the tree, after a warm cache any one edit, addition, removal or chmod makes
    unchanged() false and verify() name exactly that path."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        try:
            write(root, files)
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            return  # "a" and "a/b" both drawn: not a tree
        cache = StatCache(Path(tmp) / "statcache", key=b"k" * 32)
        expected = _warm(root, cache)
        assert tree.unchanged(root, expected.digest, cache=StatCache(cache.path, key=b"k" * 32))
        victim = data.draw(st.sampled_from(sorted(files)))
        what = data.draw(st.sampled_from(["modified", "added", "removed", "mode changed"]))
        path = root / victim
        if what == "modified":
            path.write_bytes(files[victim] + b"!")
        elif what == "added":
            victim += ".new"
            if victim in files:
                return
            (root / victim).write_bytes(b"new")
        elif what == "removed":
            path.unlink()
        else:
            path.chmod(0o755)
        assert not tree.unchanged(root, expected.digest, cache=cache)
        assert verify(root, expected, cache=cache) == [Change(victim, what)]  # type: ignore[arg-type]
