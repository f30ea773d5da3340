"""Files Python could import from the app tree that are not part of the release.

A release covers the tracked files (git mode) minus the ignore patterns, and never a
``.pyc``. But a task runs with the app root as its working directory and ``sys.path[0]``,
so an untracked or ignored ``json.py`` there shadows the standard library, and a
standalone ``name.pyc`` (no ``name.py`` beside it) is imported as ``name``. Such a file
would run inside a "verified" run while the code digest still matches.

This module lists them: every file under the root whose name Python's import system or
``site`` would act on (``LOADABLE``) and that the release does not contain.

What is walked: the root and every directory below it whose name is a Python identifier
(``import a.b`` only reaches modules through such names), except ``__pycache__`` (tasks
read bytecode from a private ``PYTHONPYCACHEPREFIX``, see ``oneoff._bytecode``) and the
app's own virtualenv (the dependency check owns it). ``.git``, ``.oneoff`` and
``.venv`` are not identifiers and so are never walked. A symlink not in the release whose
name is an identifier and that leads to a directory counts too: ``import name.x`` would
follow it.

Warm path: the walk is as costly as the warm tree check itself (one ``scandir`` per
directory), so a clean result is cached (``cached_strays``) with the stat of every
directory walked, under an HMAC with a key kept outside the app. While every one of them
keeps its mtime, ctime and inode, no name was added, removed or renamed in any of them,
so the result still holds: one ``lstat`` per directory instead of a listing. Directories
touched in the last two seconds make the result unsaved (racy, as in git's index), and
the cache only answers for the same release code digest and virtualenv.

Also walked, whatever their names: every directory that is some task's or process type's
``sys.path[0]``: its working directory and the directory of a script its argv names
(``python my-tools/run.py``), so an untracked ``my-tools/json.py`` is found too.

Not covered: code that puts a non-identifier directory on ``sys.path`` itself, or imports
through ``importlib`` by a name that is no identifier.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from oneoff._release.listing import _dec, _display

__all__ = ["LOADABLE", "cached_strays", "describe_strays", "entry_dirs", "strays"]

LOADABLE: Final = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".pth")
_LOADABLE_B: Final = tuple(s.encode("ascii") for s in LOADABLE)
_SKIP: Final = frozenset({b"__pycache__"})


def _identifier(name: bytes) -> bool:
    try:
        return name.decode("ascii").isidentifier()
    except UnicodeDecodeError:
        # Non-ASCII identifiers exist (PEP 3131); check them the slow way.
        text = _dec(name)
        return text.isidentifier()


_RACY_NS: Final = 2_000_000_000
_Dirs = list[tuple[bytes, tuple[int, int, int]]]


def _dir_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def strays(
    root: str | os.PathLike[str],
    released: Callable[[bytes], bool],
    skip_dirs: Iterable[str] = (),
    entry_dirs: Iterable[str] = (),
) -> list[str]:
    """Importable files under ``root`` for which ``released(rel)`` is false, sorted.

    ``entry_dirs`` (relative to ``root``) are walked whatever their names: each is some
    task's ``sys.path[0]`` (its working directory, or the directory of the script it runs).
    """
    return _scan(root, released, skip_dirs, entry_dirs)[0]


def entry_dirs(
    root: str | os.PathLike[str], commands: Iterable[tuple[str, Iterable[str]]]
) -> list[str]:
    """The directories under ``root`` that can be a task's ``sys.path[0]``: each command's
    working directory (``python -c``, ``-m``, a console) and the directory of every file
    under ``root`` its argv names (``python my-tools/run.py``: Python puts the script's
    directory first on ``sys.path``). ``commands``: (cwd, argv) pairs."""
    real_root = os.path.realpath(root)
    found: set[str] = set()
    for cwd, argv in commands:
        base = os.path.join(real_root, cwd)
        candidates = [base]
        for arg in argv:
            if "{" in arg or arg.startswith("-") or ("/" not in arg and not arg.endswith(".py")):
                continue
            path = os.path.realpath(os.path.join(base, arg))
            if os.path.isfile(path):
                candidates.append(os.path.dirname(path))
        for directory in candidates:
            real = os.path.realpath(directory)
            if real != real_root and real.startswith(real_root + os.sep) and os.path.isdir(real):
                found.add(os.path.relpath(real, real_root))
    return sorted(found)


def cached_strays(
    root: str | os.PathLike[str],
    released: Callable[[bytes], bool],
    skip_dirs: Iterable[str],
    *,
    state_dir: Path,
    key: bytes,
    tag: str,
    entry_dirs: Iterable[str] = (),
) -> list[str]:
    """``strays()``, answered from ``state_dir/straycache`` while no walked directory moved.

    ``tag`` names what the answer depends on besides the tree (the release's code digest);
    a cache for another tag is ignored.
    """
    from oneoff._release.warm import _read_signed, _write_signed

    skip_dirs, entry_dirs = list(skip_dirs), list(entry_dirs)
    path = state_dir / "straycache"
    tag = f"{tag}\x00{os.fspath(root)}\x00" + "\x00".join(skip_dirs)
    tag += "\x00\x00" + "\x00".join(entry_dirs)
    cached = _read_signed(path, key)
    if isinstance(cached, dict) and cached.get("tag") == tag and _dirs_unchanged(root, cached):
        return []
    found, dirs = _scan(root, released, skip_dirs, entry_dirs)
    newest = max((max(k[0], k[1]) for _, k in dirs), default=0)
    if not found and newest < time.time_ns() - _RACY_NS:
        entries = [[rel.hex(), *k] for rel, k in dirs]
        _write_signed(path, key, {"tag": tag, "dirs": entries})
    return found


def _dirs_unchanged(root: str | os.PathLike[str], cached: dict[str, object]) -> bool:
    entries = cached.get("dirs")
    if not isinstance(entries, list) or not entries:
        return False
    root_b = os.fsencode(root)
    try:
        for rel_hex, *want in entries:
            rel = bytes.fromhex(rel_hex)
            st = os.lstat(os.path.join(root_b, rel) if rel else root_b)
            if not stat.S_ISDIR(st.st_mode) or list(_dir_key(st)) != want:
                return False
    except (OSError, ValueError, TypeError):
        return False
    return True


def _scan(
    root: str | os.PathLike[str],
    released: Callable[[bytes], bool],
    skip_dirs: Iterable[str],
    entry_dirs: Iterable[str] = (),
) -> tuple[list[str], _Dirs]:
    root_b = os.fsencode(root)
    real_root = os.path.realpath(root_b)
    skip: set[bytes] = set()
    for skipped in skip_dirs:
        real = os.path.realpath(os.fsencode(skipped))
        if real.startswith(real_root + b"/"):
            skip.add(real[len(real_root) + 1 :])
    found: list[bytes] = []
    dirs: _Dirs = []
    stack: list[bytes] = [b""]
    for entry in (os.fsencode(d).rstrip(b"/") for d in entry_dirs):
        # The app's virtualenv (venv/bin/python as argv[0]) stays the dependency check's.
        if not any(entry == s or entry.startswith(s + b"/") for s in skip):
            stack.append(entry + b"/")
    seen: set[bytes] = set()
    while stack:
        prefix = stack.pop()
        if prefix in seen or prefix.rstrip(b"/") in skip:
            continue
        seen.add(prefix)
        directory = os.path.join(root_b, prefix) if prefix else root_b
        try:
            # Stat before listing: a change after this point shows up next time.
            dirs.append((prefix.rstrip(b"/"), _dir_key(os.lstat(directory))))
            with os.scandir(directory) as it:
                dirents = list(it)
        except FileNotFoundError:
            continue  # removed meanwhile: nothing in it can be imported
        except OSError as exc:
            from oneoff.errors import ReleaseError

            shown = _display(_dec(prefix)) or "."
            raise ReleaseError(f"cannot list directory {shown}: {exc.strerror}") from exc
        for de in dirents:
            name = de.name
            rel = prefix + name
            if de.is_dir(follow_symlinks=False):
                if name not in _SKIP and rel not in skip and _identifier(name):
                    stack.append(rel + b"/")
                continue
            loadable = name.endswith(_LOADABLE_B)
            if not loadable and de.is_symlink() and _identifier(name):
                loadable = _leads_to_dir(de.path)
            if loadable and not released(rel):
                found.append(rel)
    return [_dec(rel) for rel in sorted(found)], dirs


def _leads_to_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def describe_strays(paths: list[str], limit: int = 5) -> str:
    """One line naming the files, e.g. ``files Python could import ...: json.py``."""
    shown = ", ".join(_display(p) for p in paths[:limit])
    more = f", and {len(paths) - limit} more" if len(paths) > limit else ""
    return f"files Python could import are not part of the release: {shown}{more}"
