"""Which paths a code snapshot covers: ignore patterns, the directory walk, git's index.

The rules are described in ``oneoff._release.tree``; this module only lists paths and
their ``lstat``, it never reads a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from collections.abc import Iterable
from fnmatch import translate
from typing import Final, Literal

from oneoff.errors import ReleaseError

__all__ = ["DEFAULT_IGNORE", "Source"]

Source = Literal["git", "walk"]

DEFAULT_IGNORE: Final[tuple[str, ...]] = (".oneoff/", ".git/", "__pycache__/", "*.pyc", ".venv/")
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


def _git_listing(root: bytes, tracked: list[bytes], ignore: _Ignore) -> tuple[_Listing, bool]:
    """Tracked files on disk, and whether every tracked path not ignored is among them."""
    out: _Listing = []
    complete = True
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
            complete = False  # an ignored directory, a link or gone: not "unchanged" material
            continue
        try:
            st = os.lstat(os.path.join(root, rel))
        except (FileNotFoundError, NotADirectoryError):
            complete = False
            continue
        except OSError as exc:
            raise ReleaseError(f"cannot stat {_display(_dec(rel))}: {exc.strerror}") from exc
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise _refuse_special(rel, st)
        out.append((rel, st))
    return out, complete
