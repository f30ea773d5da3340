"""What the stat cache trusts in git mode: the repository state behind ``git ls-files``,
and whether a new listing is still the cached one."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Container, Iterable
from operator import attrgetter
from typing import Final

from oneoff._release.listing import _dec, _Ignore
from oneoff._release.lstats import stat_key

__all__ = ["NO_STATE", "git_state", "ignored", "real_dirs", "same_tracked"]

NO_STATE: Final = b"\x00" * 32  # no usable repository state: ask git every time
_st_mode = attrgetter("st_mode")


def git_state(root: bytes) -> tuple[bytes, int]:
    """A digest of what ``git ls-files --cached`` reads (``NO_STATE``: always ask git),
    and the newest mtime/ctime among the files it covers.

    The nearest ``.git`` above ``root`` (the repository git would find), and the stat keys
    of that directory, its ``index`` and its ``config``: any change to the tracked set
    rewrites the index (a new inode and timestamp). Only a plain ``.git`` directory
    without submodules qualifies; a ``.git`` file (linked worktree, submodule checkout) or
    a ``.gitmodules``/``.git/modules`` means other indexes count too, so git is asked
    every time. The caller records the digest only when that newest time is strictly older
    than its "now": otherwise the index could be rewritten within the same timestamp tick
    without its stat changing (racy, as for files).
    """
    path = os.path.abspath(root)
    while True:
        dotgit = os.path.join(path, b".git")
        try:
            git_st = os.lstat(dotgit)
            break
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return NO_STATE, 0
            path = parent
        except OSError:
            return NO_STATE, 0
    if not stat.S_ISDIR(git_st.st_mode):
        return NO_STATE, 0
    try:
        index_st = os.lstat(os.path.join(dotgit, b"index"))
        config_st = os.lstat(os.path.join(dotgit, b"config"))
    except OSError:
        return NO_STATE, 0
    if os.path.lexists(os.path.join(path, b".gitmodules")) or os.path.lexists(
        os.path.join(dotgit, b"modules")
    ):
        return NO_STATE, 0
    stats = (git_st, index_st, config_st)
    h = hashlib.sha256(b"oneoff-git-state-v1\x00" + dotgit + b"\x00")
    for s in stats:
        h.update(stat_key(s))
    return h.digest(), max(max(s.st_mtime_ns, s.st_ctime_ns) for s in stats)


def same_tracked(tracked: list[bytes], recs: Container[bytes], count: int, ignore: _Ignore) -> bool:
    """True when ``tracked`` is the cached paths plus only paths the ignore rules drop."""
    if len(tracked) < count:
        return False
    seen = 0
    for rel in tracked:
        if rel in recs:
            seen += 1
        elif not ignored(rel, ignore):
            return False  # e.g. absent when cached: whether it exists now needs the listing
    return seen == count


def ignored(rel: bytes, ignore: _Ignore) -> bool:
    parent, _, name = rel.rpartition(b"/")
    if ignore.file(_dec(rel), _dec(name)):
        return True
    while parent:
        directory = parent
        parent, _, name = directory.rpartition(b"/")
        if ignore.dir(_dec(directory), _dec(name)):
            return True
    return False


def real_dirs(root: bytes, rels: Iterable[bytes]) -> bool:
    """True when every ancestor directory of ``rels`` is a real directory (not a link)."""
    dirs: set[bytes] = set()
    # Distinct parents first (few), then their ancestors: ten thousand paths share a few
    # hundred directories.
    for parent in {rel.rpartition(b"/")[0] for rel in rels}:
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition(b"/")[0]
    prefix = root.rstrip(b"/") + b"/"
    try:
        modes = map(_st_mode, map(os.lstat, [prefix + d for d in dirs]))
        return all(map(stat.S_ISDIR, modes))
    except OSError:
        return False
