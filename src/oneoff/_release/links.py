"""A release's symlinks may only lead to what the release itself contains.

A release records a symlink by its target text (as git does), never following it. That
alone would let a link carry code the release does not hold: ``app/settings.py ->
/etc/app/settings.py`` (or ``-> ../var/settings.py``, with ``var/`` ignored) is unchanged
as a link while the file it reaches is rewritten, so ``release verify`` would vouch for
code nobody released. So every recorded link is resolved (all links on the way followed,
as the kernel does when Python opens it) and must end, inside the app's root, at a file
the release contains or at a directory holding some: a link that leaves the root (an
absolute target, ``..`` out of it, a root moved since the link was made), dangles, loops,
or reaches an ignored or untracked path refuses ``release create`` and every run (exit 6).

Cost: one ``realpath`` per symlink, on every check (the warm path included: the stat
cache proves the links' own text unchanged, not where they lead).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oneoff._release.tree import Entry

__all__ = ["describe_links", "escaping_links", "escaping_links_of"]


def escaping_links(
    root: str | os.PathLike[str],
    links: Iterable[str],
    released_file: Callable[[str], bool],
    released_dir: Callable[[str], bool],
    skip: Iterable[str] = (),
) -> list[str]:
    """The links (paths relative to ``root``) that do not resolve to released content;
    links under a ``skip`` directory (the app's virtualenv, which the dependency check
    owns: its ``bin/python`` leads to the system's interpreter) are not looked at."""
    real_root = os.path.realpath(root)
    skipped = tuple(d.rstrip("/") + "/" for d in skip)
    bad = []
    for rel in links:
        if skipped and rel.startswith(skipped):
            continue
        try:
            target = os.path.realpath(os.path.join(real_root, rel))
        except (OSError, ValueError):
            bad.append(rel)
            continue
        inside = os.path.relpath(target, real_root)
        # realpath stops at a link it cannot resolve (a loop): that is no released file.
        looped = os.path.islink(target)
        outside = inside in (os.curdir, os.pardir) or inside.startswith(os.pardir + os.sep)
        if looped or outside or not (released_file(inside) or released_dir(inside)):
            bad.append(rel)
    return sorted(bad)


def escaping_links_of(
    root: str | os.PathLike[str], entries: Mapping[str, Entry], skip: Iterable[str] = ()
) -> list[str]:
    """``escaping_links`` for the symlinks among a snapshot's (or a release's) entries."""
    links = [path for path, entry in entries.items() if entry.kind == "symlink"]
    if not links:
        return []
    paths = sorted(entries)

    def released_file(rel: str) -> bool:
        entry = entries.get(rel)
        return entry is not None and entry.kind == "file"

    def released_dir(rel: str) -> bool:
        i = bisect.bisect_left(paths, rel + "/")
        return i < len(paths) and paths[i].startswith(rel + "/")

    return escaping_links(root, links, released_file, released_dir, skip)


def describe_links(bad: list[str]) -> str:
    from oneoff._release.listing import _display

    shown = ", ".join(_display(p) for p in bad[:5]) + (", ..." if len(bad) > 5 else "")
    noun = "symlink leads" if len(bad) == 1 else "symlinks lead"
    return f"{len(bad)} {noun} outside what the release contains: {shown}"
