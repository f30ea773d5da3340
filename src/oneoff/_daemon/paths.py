"""Where the daemon's socket lives, and the checks that make that place trustworthy.

The socket sits in a directory only its user can enter: ``$ONEOFF_DAEMON_DIR``, else
``$XDG_RUNTIME_DIR/oneoff``, else ``/tmp/oneoff-<uid>``. Both ends refuse a directory that
is a symlink, belongs to someone else or is open to group or others, so another user cannot
plant a socket for our client or reach our daemon. One daemon per interpreter and oneoff
installation: the file name is a checksum of both (the daemon re-checks them by value).

Imported on every CLI invocation: standard library built-ins only.
"""

from __future__ import annotations

import os
import stat
import sys
import zlib

__all__ = ["DaemonPathError", "install_identity", "runtime_dir", "socket_path", "trusted_dir"]


class DaemonPathError(Exception):
    """The socket directory is not safe to use."""


def install_identity() -> tuple[str, str]:
    """This interpreter (its real file, and the environment it runs in: ``python`` and
    ``python3`` in one virtualenv are the same) and the directory oneoff is imported from."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    real = os.path.realpath(sys.executable) if sys.executable else ""
    return real + "\0" + sys.prefix, package


def runtime_dir() -> str:
    explicit = os.environ.get("ONEOFF_DAEMON_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "oneoff")
    return f"/tmp/oneoff-{os.getuid()}"  # noqa: S108 - checked by trusted_dir before use


def socket_path(directory: str | None = None) -> str:
    executable, package = install_identity()
    tag = zlib.crc32(os.fsencode(executable + "\0" + package))
    return os.path.join(directory or runtime_dir(), f"daemon-{tag:08x}.sock")


def trusted_dir(directory: str, *, create: bool = False) -> str:
    """``directory`` if it is ours alone (made 0700 when ``create``), else DaemonPathError."""
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DaemonPathError(f"cannot create {directory}: {exc.strerror}") from None
    try:
        st = os.lstat(directory)
    except OSError as exc:
        raise DaemonPathError(f"{directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DaemonPathError(f"{directory} is not a directory (a symlink?)")
    if st.st_uid != os.getuid():
        raise DaemonPathError(f"{directory} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & 0o077:
        raise DaemonPathError(
            f"{directory} is open to other users (mode {stat.S_IMODE(st.st_mode):o}, want 700)"
        )
    return directory
