"""The operator's own secret, kept outside every app: it authenticates oneoff's caches.

A cache in the app's ``.oneoff/`` directory is only as trustworthy as the key that
authenticates it. A key kept beside the cache protects against nothing: whoever can write
``.oneoff/`` (a shared bastion's group, a careless ``chmod``) reads or replaces it, then
forges entries (invented approvers, a deny turned into an allow, a modified file vouched
for). So the key lives in the OS user's own state directory, ``$XDG_STATE_HOME/oneoff``
(default ``~/.local/state/oneoff``): a directory this user owns (made 0700) and a 0600
file, both checked on every use: nobody else may write the directory or read the file.
Each cache gets its own subkey, bound to the app's real path, so a cache file copied from
another app or another purpose does not verify.

When no such directory can be had (no home, someone else's directory, loose modes),
``cache_key`` returns None and callers fall back to recomputing: slower, never weaker.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
from pathlib import Path

__all__ = ["cache_key", "private_dir", "user_state_dir"]

_KEY_NAME = "cache.key"
_KEY_SIZE = 32
_keys: dict[str, bytes | None] = {}


def user_state_dir() -> Path | None:
    """``$XDG_STATE_HOME/oneoff`` or ``~/.local/state/oneoff``; None without a home."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "oneoff"
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (KeyError, ImportError):
            return None
    return Path(home) / ".local" / "state" / "oneoff"


def _ours(st: os.stat_result, kind: int) -> bool:
    """Ours, of this kind, and nobody else may change it (a key file: nor read it).

    A directory others may read but not write (0755, as ``mkdir -p`` leaves a parent) is
    fine, as for ssh's StrictModes: the key file's own 0600 keeps it secret.
    """
    loose = 0o077 if kind == stat.S_IFREG else 0o022
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.getuid() and not st.st_mode & loose


def private_dir(*parts: str) -> Path | None:
    """A directory under the user state dir that only this user can enter, made if need be.

    None when it cannot be made or is not ours alone (a symlink, another owner, writable
    by group or others): the caller must then not rely on it.
    """
    base = user_state_dir()
    if base is None:
        return None
    try:
        base.parent.mkdir(parents=True, exist_ok=True)  # ~/.local/state: the user's own
        directory = base
        for part in ("", *parts):
            directory = directory / part if part else directory
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
            if not _ours(os.lstat(directory), stat.S_IFDIR):
                return None
    except OSError:
        return None
    return directory


def _user_key() -> bytes | None:
    directory = private_dir()
    if directory is None:
        return None
    path = directory / _KEY_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _create(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, _KEY_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not _ours(st, stat.S_IFREG) or len(data) != _KEY_SIZE:
        return None
    return data


def _create(path: Path) -> bytes | None:
    """Write a new random key so readers only ever see it whole (link, never rename)."""
    data = os.urandom(_KEY_SIZE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _user_key()  # another process got there first: use its key
    except OSError:
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return data


def cache_key(purpose: str, app_root: Path) -> bytes | None:
    """The key that authenticates ``purpose``'s cache for the app at ``app_root``."""
    base = str(user_state_dir())
    if base not in _keys:
        _keys[base] = _user_key()
    master = _keys[base]
    if master is None:
        return None
    where = os.fsencode(os.path.realpath(app_root))
    return hmac.new(master, purpose.encode() + b"\x00" + where, hashlib.sha256).digest()
