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
    symbolic links (SHA-256 of the target bytes, mode 0). Links are never followed, so a
    link pointing outside the root, or a loop, is just a recorded link. Anything else (a
    FIFO, socket, device, an uninitialized submodule directory) is refused with
    ``ReleaseError``: hashing it could hang or would not mean anything.

Paths are the raw bytes the OS returns. In Python they are ``str`` decoded as UTF-8 with
``surrogateescape`` (independent of the locale), so a non-UTF-8 name round-trips exactly
and the digest is computed over the original bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import stat
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import translate
from types import MappingProxyType
from typing import Any, Final, Literal, cast

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
Source = Literal["git", "walk"]

DEFAULT_IGNORE: Final[tuple[str, ...]] = (".oneoff/", ".git/", "__pycache__/", "*.pyc", ".venv/")
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
_GIT_TIMEOUT: Final = 120.0


def _dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _enc(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _display(path: str) -> str:
    """A path safe to print on one line: escapes control characters and undecodable bytes."""
    if path.isprintable():
        return path
    out = []
    for ch in path:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or symlink: path relative to the root, kind, mode bits, size, SHA-256 (hex)."""

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


@dataclass(frozen=True, slots=True)
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


# --- ignore patterns -------------------------------------------------------------------


def _compile(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(translate(p) for p in patterns)) if patterns else None


class _Ignore:
    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        names: list[str] = []
        dir_names: list[str] = []
        paths: list[str] = []
        dir_paths: list[str] = []
        for pattern in (*DEFAULT_IGNORE, *patterns):
            if not isinstance(pattern, str) or not pattern.strip("/") or "\x00" in pattern:
                raise ReleaseError(f"bad ignore pattern {pattern!r}")
            dir_only = pattern.endswith("/")
            body = pattern.strip("/")
            anchored = pattern.startswith("/") or "/" in body
            if anchored:
                (dir_paths if dir_only else paths).append(body)
            else:
                (dir_names if dir_only else names).append(body)
        # Cached whole-tree results are only valid for the same patterns.
        self.fingerprint = hashlib.sha256(
            "\x00".join((*DEFAULT_IGNORE, *patterns)).encode("utf-8", "surrogateescape")
        ).digest()
        self._names = _compile(names)
        self._dir_names = _compile(dir_names)
        self._paths = _compile(paths)
        self._dir_paths = _compile(dir_paths)

    def file(self, rel: str, name: str) -> bool:
        return bool(
            (self._names and self._names.match(name)) or (self._paths and self._paths.match(rel))
        )

    def dir(self, rel: str, name: str) -> bool:
        return bool(
            self.file(rel, name)
            or (self._dir_names and self._dir_names.match(name))
            or (self._dir_paths and self._dir_paths.match(rel))
        )


# --- listing ---------------------------------------------------------------------------

_Listing = list[tuple[bytes, os.stat_result]]


def _refuse_special(rel: bytes, st: os.stat_result) -> ReleaseError:
    shown = _display(_dec(rel))
    if stat.S_ISDIR(st.st_mode):
        return ReleaseError(
            f"tracked path {shown} is a directory",
            hint="an uninitialized git submodule? run: git submodule update --init",
        )
    return ReleaseError(
        f"{shown} is neither a regular file nor a symlink",
        hint="remove it from the app tree or add it to the ignore patterns",
    )


def _walk(root: bytes, ignore: _Ignore) -> tuple[_Listing, _Listing]:
    """Files and links under root, and the directories walked (root as b"")."""
    out: _Listing = []
    dirs: _Listing = []
    stack: list[tuple[bytes, str]] = [(b"", "")]
    while stack:
        prefix, prefix_s = stack.pop()
        directory = os.path.join(root, prefix) if prefix else root
        try:
            # Stat before listing: a change after this point shows up next time.
            dirs.append((prefix.rstrip(b"/"), os.lstat(directory)))
            with os.scandir(directory) as it:
                dirents = list(it)
        except OSError as exc:
            raise ReleaseError(
                f"cannot list directory {_display(prefix_s) or '.'}: {exc.strerror}"
            ) from exc
        for de in dirents:
            name = _dec(de.name)
            rel_s = prefix_s + name
            # d_type tells directories apart without a syscall; never follow links.
            if de.is_dir(follow_symlinks=False):
                if not ignore.dir(rel_s, name):
                    stack.append((prefix + de.name + b"/", rel_s + "/"))
                continue
            if ignore.file(rel_s, name):
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ReleaseError(f"cannot stat {_display(rel_s)}: {exc.strerror}") from exc
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise _refuse_special(prefix + de.name, st)
            out.append((prefix + de.name, st))
    return out, dirs


def _git_files(root: bytes) -> list[bytes] | None:
    """Tracked paths under root, or None when root is not inside a git work tree."""
    # GIT_DIR & co. would let the environment point git at another repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["LC_ALL"] = "C"
    argv = [
        "git",
        "-c",
        "core.fsmonitor=false",
        "-C",
        os.fsdecode(root),
        "ls-files",
        "-z",
        "--cached",
        "--recurse-submodules",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=_GIT_TIMEOUT, check=False)
    except FileNotFoundError:
        if _inside_git_dir(root):
            raise ReleaseError(
                "the app is a git work tree but git is not installed",
                hint="install git: which files belong to the release comes from its index",
            ) from None
        return None
    except subprocess.TimeoutExpired as exc:
        raise ReleaseError("git ls-files timed out") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        # Only "not a repository" means walk mode; any other failure (dubious ownership,
        # corrupt index) must not silently widen the file set.
        if "not a git repository" in err:
            return None
        raise ReleaseError(f"git ls-files failed: {err.splitlines()[-1] if err else proc}")
    return sorted({p for p in proc.stdout.split(b"\x00") if p})


def _inside_git_dir(root: bytes) -> bool:
    path = os.path.abspath(root)
    while True:
        if os.path.lexists(os.path.join(path, b".git")):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _git_listing(root: bytes, tracked: list[bytes], ignore: _Ignore) -> _Listing:
    out: _Listing = []
    dir_ok: dict[bytes, bool] = {b"": True}

    def usable_dir(d: bytes) -> bool:
        # Every ancestor must be ignored-free and a real directory, not a symlink that
        # would lead the lstat/open of a tracked path outside the root.
        known = dir_ok.get(d)
        if known is not None:
            return known
        parent, _, name = d.rpartition(b"/")
        ok = usable_dir(parent) and not ignore.dir(_dec(d), _dec(name))
        if ok:
            try:
                ok = stat.S_ISDIR(os.lstat(os.path.join(root, d)).st_mode)
            except OSError:
                ok = False
        dir_ok[d] = ok
        return ok

    for rel in tracked:
        parent, _, name = rel.rpartition(b"/")
        if ignore.file(_dec(rel), _dec(name)):
            continue
        if not usable_dir(parent):
            continue
        try:
            st = os.lstat(os.path.join(root, rel))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise ReleaseError(f"cannot stat {_display(_dec(rel))}: {exc.strerror}") from exc
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise _refuse_special(rel, st)
        out.append((rel, st))
    return out


def _list(root: bytes, ignore: _Ignore) -> tuple[Source, _Listing, _Listing]:
    tracked = _git_files(root)
    if tracked is None:
        return ("walk", *_walk(root, ignore))
    return "git", _git_listing(root, tracked, ignore), []


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


# --- stat cache ------------------------------------------------------------------------

_CACHE_MAGIC: Final = b"ONEOFFSC\x00\x02"
# magic, record count, complete flag, source, tree digest, ignore fingerprint, body MAC
_CACHE_HEADER: Final = struct.Struct("<10sIBc32s32s32s")
# A record is the packed stat key followed by the 32-byte digest. Records stay packed in
# memory: slicing bytes is ~5x faster than unpacking 10,000 tuples on every load.
_KEY: Final = struct.Struct("<QqqQI")
_RECORD_SIZE: Final = _KEY.size + 32
_NO_DIGEST: Final = b"\x00" * 32


def _stat_key(st: os.stat_result) -> bytes:
    return _KEY.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


class StatCache:
    """Digests keyed by (path, size, mtime_ns, ctime_ns, inode, mode), plus a whole-tree record.

    Stored in one binary file at ``path`` (header, fixed-size records, NUL-separated
    paths), replaced atomically. A missing, corrupt, truncated or foreign file is ignored:
    everything is re-hashed. A digest is reused only when every part of the stat key
    matches; ctime cannot be set by ordinary users, so a forged mtime does not make a
    modified file look unchanged.

    Trust: whoever can write the cache file can make ``verify`` vouch for modified files.
    Pass ``key`` (a secret kept outside the app tree) to authenticate the file with
    HMAC-SHA256; without it the body is only checksummed against corruption, and the cache
    is exactly as trustworthy as the permissions on its file.

    Racy entries (as in git): a file modified in the same timestamp tick as it was hashed
    could change again without its stat changing. Before hashing, the cache creates its
    temporary file and takes that file's mtime as "now" on the filesystem's own clock;
    entries whose mtime or ctime is not strictly older are not saved, so they are hashed
    again next time. Keep the cache on the same filesystem as the tree so both clocks agree.

    Whole-tree fast path: when the last scan saved every entry, the cache also keeps the
    tree digest, the ignore patterns' fingerprint and (outside git) the stat of every
    directory walked. ``verify`` then only lstat()s the recorded paths: a created, removed
    or renamed file changes its directory's mtime, a modified file its own stat.

    Saving is best-effort: on a read-only tree the cache is simply not written.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.path = os.fspath(path)
        self._key = key
        self._old: dict[bytes, bytes] = {}
        self._tree: tuple[Source, bytes, bytes] | None = None
        self._new: dict[bytes, bytes] = {}
        self._tmp: tuple[int, str] | None = None
        self._now_ns = 0
        self._complete = True

    def __len__(self) -> int:
        return len(self._old)

    def _mac(self, head: bytes | memoryview, body: bytes | memoryview) -> bytes:
        h = hashlib.sha256() if self._key is None else hmac.new(self._key, None, hashlib.sha256)
        h.update(head)
        h.update(body)
        return h.digest()

    def load(self) -> None:
        """(Re)read the cache file; any problem with it just empties the cache."""
        self._old, self._tree = {}, None
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return
        hsize = _CACHE_HEADER.size
        if len(data) < hsize:
            return
        magic, count, complete, source, digest, ignore_fp, mac = _CACHE_HEADER.unpack_from(data)
        view = memoryview(data)
        if magic != _CACHE_MAGIC or not hmac.compare_digest(
            self._mac(view[: hsize - 32], view[hsize:]), mac
        ):
            return
        split = hsize + count * _RECORD_SIZE
        if split > len(data):
            return
        paths = data[split:].split(b"\x00") if count else []
        if len(paths) != count:
            return
        size = _RECORD_SIZE
        self._old = dict(
            zip(paths, [data[i : i + size] for i in range(hsize, split, size)], strict=True)
        )
        if complete == 1 and source in (b"g", b"w"):
            self._tree = ("git" if source == b"g" else "walk", digest, ignore_fp)

    def _begin(self) -> None:
        self.load()
        self._new = {}
        self._complete = True
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory
            )
        except OSError:
            self._tmp = None
            return
        self._tmp = (fd, tmp)
        self._now_ns = os.fstat(fd).st_mtime_ns

    def _get(self, rel: bytes, st: os.stat_result) -> str | None:
        rec = self._old.get(rel)
        if rec is None or not rec.startswith(_stat_key(st)):
            return None
        self._new[rel] = rec
        return rec[_KEY.size :].hex()

    def _put(self, rel: bytes, st: os.stat_result, digest: bytes) -> None:
        if max(st.st_mtime_ns, st.st_ctime_ns) < self._now_ns:
            self._new[rel] = _stat_key(st) + digest
        else:
            self._complete = False

    def _commit(self, source: Source, tree_digest: str, ignore_fp: bytes) -> None:
        if self._tmp is None:
            return
        fd, tmp = self._tmp
        self._tmp = None
        try:
            meta = (source, bytes.fromhex(tree_digest), ignore_fp) if self._complete else None
            if meta == self._tree and self._new == self._old:
                return
            paths = list(self._new)
            body = b"".join(self._new.values()) + b"\x00".join(paths)
            src, digest, fp = meta or ("walk", _NO_DIGEST, _NO_DIGEST)
            head = _CACHE_HEADER.pack(
                _CACHE_MAGIC, len(paths), meta is not None, src[0].encode(), digest, fp, b""
            )[:-32]
            mac = self._mac(head, body)
            with open(fd, "wb", closefd=False) as f:
                f.write(head + mac + body)
            os.replace(tmp, self.path)
            tmp = ""
            self._old, self._tree = self._new, meta
        except OSError:
            pass
        finally:
            os.close(fd)
            if tmp:
                _unlink_quietly(tmp)

    def _abort(self) -> None:
        if self._tmp is not None:
            fd, tmp = self._tmp
            self._tmp = None
            os.close(fd)
            _unlink_quietly(tmp)

    def _unchanged(self, root: bytes, ignore: _Ignore, digest: str) -> bool:
        """True when the recorded tree has digest ``digest`` and nothing on disk moved."""
        self.load()
        if self._tree is None or self._tree[1:] != (bytes.fromhex(digest), ignore.fingerprint):
            return False
        recs = self._old
        if self._tree[0] == "git":
            tracked = _git_files(root)
            if tracked is None:
                return False
            if _same_tracked(tracked, recs, ignore):
                # The ignore filter is path-only and unchanged: the listing is the cached
                # paths again if their ancestors are still real directories (no symlink
                # leads outside) and each path still has its cached stat.
                return _real_dirs(root, recs) and _stats_match(root, recs)
            listing = _git_listing(root, tracked, ignore)
            if len(listing) != len(recs):
                return False
            return all(recs.get(rel, b"").startswith(_stat_key(st)) for rel, st in listing)
        if _inside_git_dir(root):
            return False
        return _stats_match(root, recs)


def _same_tracked(tracked: list[bytes], recs: Mapping[bytes, bytes], ignore: _Ignore) -> bool:
    """True when ``tracked`` is the cached paths plus only paths the ignore rules drop."""
    if len(tracked) < len(recs):
        return False
    seen = 0
    for rel in tracked:
        if rel in recs:
            seen += 1
        elif not _ignored(rel, ignore):
            return False  # e.g. absent when cached: whether it exists now needs the listing
    return seen == len(recs)


def _ignored(rel: bytes, ignore: _Ignore) -> bool:
    parent, _, name = rel.rpartition(b"/")
    if ignore.file(_dec(rel), _dec(name)):
        return True
    while parent:
        directory = parent
        parent, _, name = directory.rpartition(b"/")
        if ignore.dir(_dec(directory), _dec(name)):
            return True
    return False


def _real_dirs(root: bytes, rels: Iterable[bytes]) -> bool:
    """True when every ancestor directory of ``rels`` is a real directory (not a link)."""
    dirs: set[bytes] = set()
    for rel in rels:
        parent = rel.rpartition(b"/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition(b"/")[0]
    prefix = root.rstrip(b"/") + b"/"
    try:
        return all(stat.S_ISDIR(os.lstat(prefix + d).st_mode) for d in dirs)
    except OSError:
        return False


def _stats_match(root: bytes, recs: Mapping[bytes, bytes]) -> bool:
    # The hot loop of a warm verify: one lstat per path, nothing else.
    lstat, pack, prefix = os.lstat, _KEY.pack, root.rstrip(b"/") + b"/"
    try:
        for rel, rec in recs.items():
            st = lstat(prefix + rel) if rel else lstat(root)
            if not rec.startswith(
                pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)
            ):
                return False
    except OSError:
        return False
    return True


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# --- snapshot / diff / verify ----------------------------------------------------------


def _scan(
    root: str | os.PathLike[str], matcher: _Ignore, cache: StatCache | None
) -> tuple[Source, list[Entry]]:
    root_b = _root_bytes(root)
    if cache is not None:
        cache._begin()
    try:
        source, listing, dirs = _list(root_b, matcher)
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
            cache._commit(source, _tree_digest(entries), matcher.fingerprint)
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
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda rel: _hash_file(root, rel), rels, chunksize=64))


def snapshot(
    root: str | os.PathLike[str],
    *,
    ignore: Iterable[str] = (),
    cache: StatCache | None = None,
) -> TreeSnapshot:
    """Snapshot the code under ``root``; see the module docstring for which files count."""
    source, entries = _scan(root, _Ignore(ignore), cache)
    return TreeSnapshot.build(entries, source)


@dataclass(frozen=True, slots=True)
class Change:
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
