"""The stat cache: reuse file digests, and prove a whole tree unchanged from lstat alone."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct
from typing import Final

from oneoff._release.gitstate import NO_STATE, git_state, real_dirs, same_tracked
from oneoff._release.listing import (
    Source,
    _git_files,
    _git_listing,
    _Ignore,
    _inside_git_dir,
)
from oneoff._release.lstats import KEY, keys_match, stat_key

__all__ = ["StatCache"]


_CACHE_MAGIC: Final = b"ONEOFFSC\x00\x03"
# magic, record count, complete flag, source, tree digest, ignore fingerprint, git state,
# body MAC. The body is three columns in path order: all stat keys, then all digests,
# then the NUL-separated paths. Keeping the keys contiguous lets the warm check compare
# one bytes object instead of ten thousand records.
_CACHE_HEADER: Final = struct.Struct("<10sIBc32s32s32s32s")
_KEY_SIZE: Final = KEY.size
_NO_DIGEST: Final = NO_STATE  # no digest recorded (32 zero bytes, like "no git state")
# Byte 33 of a key (bits 8-15 of st_mode) -> 1 where the file type is a symlink (0o120000).
_LINK_TYPE: Final = bytes(1 if b >> 4 == 0xA else 0 for b in range(256))


class StatCache:
    """Digests keyed by (path, size, mtime_ns, ctime_ns, inode, mode), plus a whole-tree record.

    Stored in one binary file at ``path`` (header, then the stat keys, digests and
    NUL-separated paths as three columns in path order), replaced atomically. A missing,
    corrupt, truncated or foreign file is ignored: everything is re-hashed. A digest is
    reused only when every part of the stat key matches; ctime cannot be set by ordinary
    users, so a forged mtime does not make a modified file look unchanged.

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
    or renamed file changes its directory's mtime, a modified file its own stat. In git
    mode it also keeps the stat of the repository's ``.git``, ``.git/index`` and
    ``.git/config`` (same racy rule): while they are unchanged the tracked set is too, and
    ``git ls-files`` is not run again (see ``gitstate.git_state`` for when this is not used). A
    warm check that had to ask git records that state, rewriting the cache once.

    Saving is best-effort: on a read-only tree the cache is simply not written.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.path = os.fspath(path)
        self._key = key
        self._count = 0
        self._keys = b""
        self._digests = b""
        self._path_blob = b""
        self._paths: list[bytes] | None = []
        self._index: dict[bytes, int] | None = None
        self._tree: tuple[Source, bytes, bytes] | None = None
        self._git = _NO_DIGEST
        self._new: dict[bytes, bytes] = {}
        self._tmp: tuple[int, str] | None = None
        self._now_ns = 0
        self._complete = True

    def __len__(self) -> int:
        return self._count

    def _mac(self, head: bytes | memoryview, body: bytes | memoryview) -> bytes:
        h = hashlib.sha256() if self._key is None else hmac.new(self._key, None, hashlib.sha256)
        h.update(head)
        h.update(body)
        return h.digest()

    def _set(self, count: int, keys: bytes, digests: bytes, blob: bytes) -> None:
        self._count, self._keys, self._digests, self._path_blob = count, keys, digests, blob
        self._paths = [] if count == 0 else None
        self._index = None

    def load(self) -> None:
        """(Re)read the cache file; any problem with it just empties the cache."""
        self._set(0, b"", b"", b"")
        self._tree, self._git = None, _NO_DIGEST
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return
        hsize = _CACHE_HEADER.size
        if len(data) < hsize:
            return
        fields = _CACHE_HEADER.unpack_from(data)
        magic, count, complete, source, digest, ignore_fp, git_fp, mac = fields
        view = memoryview(data)
        if magic != _CACHE_MAGIC or not hmac.compare_digest(
            self._mac(view[: hsize - 32], view[hsize:]), mac
        ):
            return
        digests_at = hsize + count * _KEY_SIZE
        paths_at = digests_at + count * 32
        if paths_at > len(data):
            return
        # Paths are only split when needed (the record count is checked then).
        self._set(count, data[hsize:digests_at], data[digests_at:paths_at], data[paths_at:])
        if complete == 1 and source in (b"g", b"w"):
            self._tree = ("git" if source == b"g" else "walk", digest, ignore_fp)
            self._git = git_fp

    def _rels(self) -> list[bytes] | None:
        """The cached paths in order, or None (and an emptied cache) if malformed."""
        if self._paths is None:
            paths = self._path_blob.split(b"\x00")
            if len(paths) != self._count:
                self._set(0, b"", b"", b"")
                self._tree = None
                return None
            self._paths = paths
        return self._paths

    def _begin(self) -> None:
        self.load()
        self._new = {}
        self._complete = True
        self._open_tmp()

    def _open_tmp(self) -> None:
        """Create the temporary file the cache is written to; its mtime is "now"."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            import tempfile  # only a scan writes the cache; the warm check never does

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
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self._rels() or ())}
        i = self._index.get(rel)
        if i is None:
            return None
        key = stat_key(st)
        if self._keys[i * _KEY_SIZE : (i + 1) * _KEY_SIZE] != key:
            return None
        digest = self._digests[i * 32 : (i + 1) * 32]
        self._new[rel] = key + digest
        return digest.hex()

    def _put(self, rel: bytes, st: os.stat_result, digest: bytes) -> None:
        if self._fresh(st):
            self._new[rel] = stat_key(st) + digest
        else:
            self._complete = False

    def _fresh(self, st: os.stat_result) -> bool:
        """True when ``st`` is strictly older than the cache's "now" (not racy)."""
        return max(st.st_mtime_ns, st.st_ctime_ns) < self._now_ns

    def _commit(
        self, source: Source, tree_digest: str, ignore_fp: bytes, git_fp: bytes = _NO_DIGEST
    ) -> None:
        meta = (source, bytes.fromhex(tree_digest), ignore_fp) if self._complete else None
        items = sorted(self._new.items())
        self._write(
            len(items),
            b"".join(rec[:_KEY_SIZE] for _, rec in items),
            b"".join(rec[_KEY_SIZE:] for _, rec in items),
            b"\x00".join(rel for rel, _ in items),
            meta,
            git_fp if meta is not None else _NO_DIGEST,
        )

    def _write(
        self,
        count: int,
        keys: bytes,
        digests: bytes,
        blob: bytes,
        meta: tuple[Source, bytes, bytes] | None,
        git_fp: bytes,
    ) -> None:
        """Replace the file with these records (through the open temporary file)."""
        if self._tmp is None:
            return
        fd, tmp = self._tmp
        self._tmp = None
        try:
            same = (count, keys, digests, blob) == (
                self._count, self._keys, self._digests, self._path_blob
            )  # fmt: skip
            if same and (meta, git_fp) == (self._tree, self._git):
                return
            src, digest, fp = meta or ("walk", _NO_DIGEST, _NO_DIGEST)
            head = _CACHE_HEADER.pack(
                _CACHE_MAGIC, count, meta is not None, src[0].encode(), digest, fp, git_fp, b""
            )[:-32]
            body = keys + digests + blob
            mac = self._mac(head, body)
            with open(fd, "wb", closefd=False) as f:
                f.write(head + mac + body)
            os.replace(tmp, self.path)
            tmp = ""
            self._set(count, keys, digests, blob)
            self._tree, self._git = meta, git_fp
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
        if self._tree[0] == "walk":
            return not _inside_git_dir(root) and self._stats_match(root)
        rels = self._rels()
        if rels is None:
            return False
        state, newest = git_state(root)
        if self._git != _NO_DIGEST and state == self._git:
            # Same index, config and repository as when every tracked path was cached:
            # the tracked set is the cached paths, so only their stats can have moved.
            return real_dirs(root, rels) and self._stats_match(root)
        tracked = _git_files(root)
        if tracked is None:
            return False
        if same_tracked(tracked, set(rels), self._count, ignore):
            # The ignore filter is path-only and unchanged: the listing is the cached
            # paths again if their ancestors are still real directories (no symlink
            # leads outside) and each path still has its cached stat.
            if not (real_dirs(root, rels) and self._stats_match(root)):
                return False
            if state != _NO_DIGEST:
                # Every tracked path is cached: record the state (taken before listing)
                # so the next check can skip git, unless it is racy against "now".
                self._open_tmp()
                if newest < self._now_ns:
                    blobs = (self._keys, self._digests, self._path_blob)
                    self._write(self._count, *blobs, self._tree, state)
                self._abort()
            return True
        listing, _complete = _git_listing(root, tracked, ignore)
        if len(listing) != self._count:
            return False
        if self._index is None:
            self._index = {p: i for i, p in enumerate(rels)}
        index, keys = self._index, self._keys
        for rel, st in listing:
            i = index.get(rel)
            if i is None or keys[i * _KEY_SIZE : (i + 1) * _KEY_SIZE] != stat_key(st):
                return False
        return True

    def digest_of(self, rel: bytes) -> bytes | None:
        """The digest recorded for ``rel`` by the scan this cache last saved, if any."""
        import bisect

        rels = self._rels() or []
        i = bisect.bisect_left(rels, rel)  # saved in path order
        if i == len(rels) or rels[i] != rel:
            return None
        return self._digests[i * 32 : (i + 1) * 32]

    def links(self) -> list[bytes]:
        """The recorded paths that were symbolic links (by their recorded mode)."""
        # The mode is the key's last field (little-endian uint32): its file type is the
        # high nibble of the key's byte 33. One C-speed pass finds the S_IFLNK ones.
        types = self._keys[_KEY_SIZE - 3 :: _KEY_SIZE].translate(_LINK_TYPE)
        if b"\x01" not in types:
            return []
        rels = self._rels() or []
        return [rels[i] for i, flag in enumerate(types) if flag and i < len(rels)]

    def paths_under(self, prefix: bytes) -> list[bytes]:
        """The recorded paths that start with ``prefix``."""
        import bisect

        rels = self._rels() or []
        i = bisect.bisect_left(rels, prefix)
        j = i
        while j < len(rels) and rels[j].startswith(prefix):
            j += 1
        return rels[i:j]

    def _stats_match(self, root: bytes) -> bool:
        """True when every cached path still has its cached stat key."""
        # The hot loop of a warm verify, kept in C (map/starmap/join run without a Python
        # frame per path, one bytes comparison per chunk) and shared by two processes when
        # the tree is large (see lstats.py).
        if not self._count:
            return True
        names, count, keys = self._path_blob, self._count, self._keys
        if names.count(b"\x00") != count - 1:
            return False  # malformed path column (b"" alone is one name: the root's)
        if names.startswith(b"\x00") or not names:
            # Paths are sorted, so the walked root (b"") comes first: lstat it as given,
            # not through a trailing slash that would follow a symlink.
            if not keys_match(root, b"", 1, keys[:_KEY_SIZE]):
                return False
            names, count, keys = names[1:], count - 1, keys[_KEY_SIZE:]
        return keys_match(root.rstrip(b"/") + b"/", names, count, keys)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
