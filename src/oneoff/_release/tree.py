"""Code snapshot of an app directory: which files, their digests, and how two snapshots differ.

Which files count
    If the root lies inside a git work tree, exactly the files git tracks under it (the
    index, ``git ls-files --cached``, submodules included). Untracked files never count,
    even when not ignored: a release is what was committed, and a stray local file must not
    silently become part of it. A tracked file missing from disk is simply absent from the
    snapshot, so a diff against the release shows it as "removed". Outside git, every file
    under the root counts. In both modes the caller's ignore patterns and ``DEFAULT_IGNORE``
    are applied.

Ignore patterns (fnmatch globs, case-sensitive)
    ``name`` (no slash) matches a file or directory name at any depth; ``dir/`` (trailing
    slash) matches directories only; ``a/b*`` or ``/top`` (a slash inside or leading) is
    matched against the whole path relative to the root, where ``*`` may cross ``/``.
    An ignored directory is not descended into.

What is recorded
    Regular files (mode bits ``st_mode & 0o7777`` and a SHA-256 of the contents) and
    symbolic links (SHA-256 of the target bytes, mode 0). Links are never followed here;
    that each one leads to content the release holds (not outside the root, nowhere or
    round in a loop) is checked by ``oneoff._release.links`` on create and every run.
    Anything else (a FIFO, socket, device, an uninitialized submodule directory) is refused
    with ``ReleaseError``: hashing it could hang or would not mean anything.

Paths are the raw bytes the OS returns. In Python they are ``str`` decoded as UTF-8 with
``surrogateescape`` (independent of the locale), so a non-UTF-8 name round-trips exactly
and the digest is computed over the original bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple, cast

from oneoff._record import dataclass
from oneoff._release.gitstate import git_state
from oneoff._release.listing import (
    DEFAULT_IGNORE,
    Source,
    _dec,
    _display,
    _enc,
    _git_files,
    _git_listing,
    _Ignore,
    _Listing,
    _walk,
)
from oneoff._release.statcache import _NO_DIGEST, StatCache
from oneoff.errors import DriftError, ReleaseError

__all__ = [
    "DEFAULT_IGNORE",
    "Change",
    "Entry",
    "StatCache",
    "TreeSnapshot",
    "describe",
    "diff",
    "ensure_unchanged",
    "snapshot",
    "unchanged",
    "verify",
]

Kind = Literal["file", "symlink"]
What = Literal["modified", "added", "removed", "mode changed", "type changed"]
FORMAT: Final = "oneoff-tree-v1"
CHUNK: Final = 1 << 20

_TREE_PREFIX: Final = b"oneoff-tree-v1\x00"
_LEAF_PREFIX: Final = b"oneoff-leaf-v1\x00"
_KIND_BYTE: Final[Mapping[str, bytes]] = {"file": b"f", "symlink": b"l"}
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_OPEN_FLAGS: Final = (
    os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
)  # O_NONBLOCK: a FIFO swapped in after the scan must not block the open.
_PARALLEL_MIN_FILES: Final = 32


class Entry(NamedTuple):
    """One file or symlink: path relative to the root, kind, mode bits, size, SHA-256 (hex).

    A named tuple rather than a dataclass: a tree holds tens of thousands of these, and
    ``dataclasses`` costs ~5 ms to import on the path every ``oneoff run`` takes.
    """

    path: str
    kind: Kind
    mode: int
    size: int
    digest: str

    def leaf(self) -> bytes:
        """The Merkle leaf: SHA-256 over a length-prefixed, unambiguous encoding of the entry."""
        raw = _enc(self.path)
        return hashlib.sha256(
            _LEAF_PREFIX
            + struct.pack(">Q", len(raw))
            + raw
            + _KIND_BYTE[self.kind]
            + struct.pack(">IQ", self.mode, self.size)
            + bytes.fromhex(self.digest)
        ).digest()


def _sorted(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: _enc(e.path))


def _tree_digest(entries: Iterable[Entry]) -> str:
    ordered = _sorted(entries)
    h = hashlib.sha256(_TREE_PREFIX + struct.pack(">Q", len(ordered)))
    for entry in ordered:
        h.update(entry.leaf())
    return h.hexdigest()


@dataclass(frozen=True)
class TreeSnapshot:
    """The code of a release: entries by path and their Merkle digest (hex).

    ``source`` tells how the file list was chosen ("git" or "walk"); it is informational
    and not part of the digest: the same files give the same digest either way. Build one
    with ``snapshot()``, ``TreeSnapshot.build()`` or ``from_dict()`` (which checks that the
    digest matches the entries); the plain constructor trusts its arguments.
    """

    entries: Mapping[str, Entry]
    digest: str
    source: Source = "walk"

    @classmethod
    def build(cls, entries: Iterable[Entry], source: Source = "walk") -> TreeSnapshot:
        """A snapshot of the given entries with its digest computed."""
        ordered = _sorted(entries)
        by_path = {e.path: e for e in ordered}
        if len(by_path) != len(ordered):
            raise ReleaseError("tree snapshot has duplicate paths")
        return cls(MappingProxyType(by_path), _tree_digest(ordered), source)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; non-UTF-8 paths are stored base64-encoded under ``path_b64``."""
        items: list[dict[str, Any]] = []
        for e in _sorted(self.entries.values()):
            item: dict[str, Any]
            try:
                item = {"path": _enc(e.path).decode("utf-8")}
            except UnicodeDecodeError:
                item = {"path_b64": base64.b64encode(_enc(e.path)).decode("ascii")}
            item.update(kind=e.kind, mode=e.mode, size=e.size, sha256=e.digest)
            items.append(item)
        return {"format": FORMAT, "source": self.source, "digest": self.digest, "entries": items}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeSnapshot:
        """Parse ``to_dict()`` output strictly; any unknown key, bad value or digest mismatch
        raises ``ReleaseError``."""
        _expect_keys(data, {"format", "source", "digest", "entries"}, "tree snapshot")
        if data["format"] != FORMAT:
            raise ReleaseError(f"tree snapshot: unsupported format {data['format']!r}")
        source = data["source"]
        if source not in ("git", "walk"):
            raise ReleaseError(f"tree snapshot: bad source {source!r}")
        digest = data["digest"]
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ReleaseError("tree snapshot: digest is not 64 lowercase hex digits")
        items = data["entries"]
        if not isinstance(items, list):
            raise ReleaseError("tree snapshot: entries must be a list")
        snap = cls.build((_entry_from_dict(item) for item in items), source)
        if snap.digest != digest:
            raise ReleaseError("tree snapshot: digest does not match its entries")
        return snap


def _expect_keys(data: Any, keys: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ReleaseError(f"{what}: expected an object")
    if set(data) != keys:
        raise ReleaseError(f"{what}: expected keys {sorted(keys)}, got {sorted(map(str, data))}")


def _strict_int(value: Any, lo: int, hi: int, what: str) -> int:
    # bool is an int subclass; True must not pass as mode 1.
    if type(value) is not int or not lo <= value <= hi:
        raise ReleaseError(f"tree snapshot: bad {what} {value!r}")
    return value


def _entry_from_dict(item: Any) -> Entry:
    if not isinstance(item, Mapping):
        raise ReleaseError("tree snapshot: entry must be an object")
    path_key = "path" if "path" in item else "path_b64"
    _expect_keys(item, {path_key, "kind", "mode", "size", "sha256"}, "tree snapshot entry")
    raw_value = item[path_key]
    if not isinstance(raw_value, str):
        raise ReleaseError("tree snapshot: path must be a string")
    try:
        if path_key == "path":
            raw = raw_value.encode("utf-8")
        else:
            raw = base64.b64decode(raw_value, validate=True)
            raw.decode("utf-8")
            # Reaching here means the path was valid UTF-8 and should have used "path":
            # one path, one representation, or digests of equal dicts could differ.
            raise ReleaseError("tree snapshot: path_b64 used for a UTF-8 path")
    except UnicodeEncodeError as exc:
        raise ReleaseError("tree snapshot: path is not valid Unicode") from exc
    except UnicodeDecodeError:
        pass
    except ValueError as exc:
        raise ReleaseError("tree snapshot: path_b64 is not base64") from exc
    _check_relpath(raw)
    kind = item["kind"]
    if kind not in ("file", "symlink"):
        raise ReleaseError(f"tree snapshot: bad kind {kind!r}")
    digest = item["sha256"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ReleaseError("tree snapshot: sha256 is not 64 lowercase hex digits")
    return Entry(
        path=_dec(raw),
        kind=cast(Kind, kind),
        mode=_strict_int(item["mode"], 0, 0o7777, "mode"),
        size=_strict_int(item["size"], 0, 2**63 - 1, "size"),
        digest=digest,
    )


def _check_relpath(raw: bytes) -> None:
    # A snapshot read from disk may be hostile; its paths are later joined to a root.
    parts = raw.split(b"/")
    if not raw or b"\x00" in raw or any(p in (b"", b".", b"..") for p in parts):
        raise ReleaseError(f"tree snapshot: bad path {_display(_dec(raw))!r}")


def _list(
    root: bytes, ignore: _Ignore, now_ns: int | None
) -> tuple[Source, _Listing, _Listing, bytes]:
    """Source, files, directories walked, and the git state the listing was made from."""
    # The state is taken before listing: a change after it shows up as a changed state.
    state, newest = git_state(root)
    if now_ns is None or newest >= now_ns:
        state = _NO_DIGEST
    tracked = _git_files(root)
    if tracked is None:
        return ("walk", *_walk(root, ignore), _NO_DIGEST)
    listing, complete = _git_listing(root, tracked, ignore)
    return "git", listing, [], state if complete else _NO_DIGEST


# --- hashing ---------------------------------------------------------------------------

_local = threading.local()


def _buffer() -> bytearray:
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(CHUNK)
    return buf


def _sha256_fd(fd: int) -> str:
    """SHA-256 of an open file, streamed in CHUNK-sized reads so memory stays flat."""
    h = hashlib.sha256()
    buf = _buffer()
    view = memoryview(buf)
    with open(fd, "rb", buffering=0, closefd=False) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _stat_changed(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) != (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def _hash_file(root: bytes, rel: bytes) -> tuple[str, os.stat_result]:
    """Hash one regular file; re-hash once if it changed meanwhile, then give up."""
    path = os.path.join(root, rel)
    shown = _display(_dec(rel))
    for _attempt in range(2):
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise ReleaseError(f"cannot read {shown}: {exc.strerror}") from exc
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise ReleaseError(f"{shown} stopped being a regular file while hashing")
            digest = _sha256_fd(fd)
            after = os.fstat(fd)
        except OSError as exc:
            raise ReleaseError(f"cannot read {shown}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        if not _stat_changed(before, after):
            return digest, before
    raise ReleaseError(
        f"{shown} changed while it was being hashed",
        hint="stop whatever is writing to the app tree and retry",
    )


def _link_entry(root: bytes, rel: bytes) -> tuple[Entry, os.stat_result]:
    path = os.path.join(root, rel)
    try:
        before = os.lstat(path)
        target = os.readlink(path)
        after = os.lstat(path)
    except OSError as exc:
        raise ReleaseError(f"cannot read link {_display(_dec(rel))}: {exc.strerror}") from exc
    if _stat_changed(before, after) or not stat.S_ISLNK(after.st_mode):
        raise ReleaseError(f"link {_display(_dec(rel))} changed while it was being read")
    return Entry(_dec(rel), "symlink", 0, len(target), hashlib.sha256(target).hexdigest()), after


def _entry(rel: bytes, st: os.stat_result, digest: str) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        return Entry(_dec(rel), "symlink", 0, st.st_size, digest)
    return Entry(_dec(rel), "file", stat.S_IMODE(st.st_mode), st.st_size, digest)


# --- snapshot / diff / verify ----------------------------------------------------------


def _scan(
    root: str | os.PathLike[str], matcher: _Ignore, cache: StatCache | None
) -> tuple[Source, list[Entry]]:
    root_b = _root_bytes(root)
    if cache is not None:
        cache._begin()
    try:
        now_ns = None if cache is None or cache._tmp is None else cache._now_ns
        source, listing, dirs, git_state = _list(root_b, matcher, now_ns)
        entries: list[Entry] = []
        todo: list[bytes] = []
        for rel, st in listing:
            digest = cache._get(rel, st) if cache is not None else None
            if digest is not None:
                entries.append(_entry(rel, st, digest))
            elif stat.S_ISLNK(st.st_mode):
                entry, st = _link_entry(root_b, rel)
                entries.append(entry)
                if cache is not None:
                    cache._put(rel, st, bytes.fromhex(entry.digest))
            else:
                todo.append(rel)
        for rel, (digest, st) in zip(todo, _hash_many(root_b, todo), strict=True):
            if cache is not None:
                cache._put(rel, st, bytes.fromhex(digest))
            entries.append(_entry(rel, st, digest))
        if cache is not None:
            for rel, st in dirs:
                cache._put(rel, st, _NO_DIGEST)
            cache._commit(source, _tree_digest(entries), matcher.fingerprint, git_state)
    finally:
        if cache is not None:
            cache._abort()
    return source, entries


def _root_bytes(root: str | os.PathLike[str]) -> bytes:
    root_b = os.fsencode(root)
    try:
        if not stat.S_ISDIR(os.stat(root_b).st_mode):
            raise ReleaseError(f"app root {os.fsdecode(root_b)} is not a directory")
    except OSError as exc:
        raise ReleaseError(f"app root {os.fsdecode(root_b)}: {exc.strerror}") from exc
    return root_b


def _hash_many(root: bytes, rels: list[bytes]) -> list[tuple[str, os.stat_result]]:
    if len(rels) < _PARALLEL_MIN_FILES:
        return [_hash_file(root, rel) for rel in rels]
    # hashlib and file I/O release the GIL, so a few threads overlap per-file syscalls
    # with hashing; more than a handful only adds contention.
    from concurrent.futures import ThreadPoolExecutor  # ~4 ms to import; cold scans only

    workers = min(4, os.cpu_count() or 1)
    # One task per batch, not per file: a future per file costs more than hashing a
    # small file (ThreadPoolExecutor ignores map's chunksize).
    size = -(-len(rels) // (workers * 4))
    batches = [rels[i : i + size] for i in range(0, len(rels), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda batch: [_hash_file(root, rel) for rel in batch], batches)
        return [result for batch in done for result in batch]


def snapshot(
    root: str | os.PathLike[str],
    *,
    ignore: Iterable[str] = (),
    cache: StatCache | None = None,
) -> TreeSnapshot:
    """Snapshot the code under ``root``; see the module docstring for which files count."""
    source, entries = _scan(root, _Ignore(ignore), cache)
    return TreeSnapshot.build(entries, source)


class Change(NamedTuple):
    """One path that differs between two snapshots, and how."""

    path: str
    what: What

    def __str__(self) -> str:
        return f"{_display(self.path)} ({self.what})"


def _diff_entries(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> list[Change]:
    changes: list[Change] = []
    for path in sorted(old.keys() | new.keys(), key=_enc):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        if a is None:
            changes.append(Change(path, "added"))
        elif b is None:
            changes.append(Change(path, "removed"))
        elif a.kind != b.kind:
            changes.append(Change(path, "type changed"))
        elif (a.digest, a.size) != (b.digest, b.size):
            changes.append(Change(path, "modified"))
        else:
            changes.append(Change(path, "mode changed"))
    return changes


def diff(old: TreeSnapshot, new: TreeSnapshot) -> list[Change]:
    """Every path that differs, sorted by path bytes; empty when the trees are identical."""
    if old.digest == new.digest:
        return []
    return _diff_entries(old.entries, new.entries)


def describe(changes: Sequence[Change], limit: int = 5) -> str:
    """One line for humans, e.g. ``2 files differ: app/models.py (modified), x (added)``."""
    if not changes:
        return "no files differ"
    n = len(changes)
    head = f"{n} file differs" if n == 1 else f"{n} files differ"
    shown = ", ".join(str(c) for c in changes[: max(limit, 0)])
    more = f", and {n - limit} more" if n > limit else ""
    return f"{head}: {shown}{more}" if shown else head


def verify(
    root: str | os.PathLike[str],
    expected: TreeSnapshot,
    *,
    ignore: Iterable[str] = (),
    cache: StatCache | None = None,
) -> list[Change]:
    """Changes from ``expected`` to the tree on disk; with a warm cache, no file is read."""
    matcher = _Ignore(ignore)
    if cache is not None and cache._unchanged(_root_bytes(root), matcher, expected.digest):
        return []
    _source, entries = _scan(root, matcher, cache)
    return _diff_entries(expected.entries, {e.path: e for e in entries})


def unchanged(
    root: str | os.PathLike[str],
    digest: str,
    *,
    ignore: Iterable[str] = (),
    cache: StatCache,
) -> bool:
    """True when ``cache`` proves from stat calls alone that the tree still has ``digest``.

    False means "not proven", not "changed": call ``verify`` for the actual changes.
    """
    return cache._unchanged(_root_bytes(root), _Ignore(ignore), digest)


def ensure_unchanged(
    root: str | os.PathLike[str],
    expected: TreeSnapshot,
    *,
    ignore: Iterable[str] = (),
    cache: StatCache | None = None,
) -> None:
    """Raise ``DriftError`` describing the changes if the tree differs from ``expected``."""
    changes = verify(root, expected, ignore=ignore, cache=cache)
    if changes:
        raise DriftError(
            f"code differs from the release: {describe(changes)}",
            hint="deploy the release's code unchanged, or cut a new release",
        )
