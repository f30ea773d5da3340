"""What the daemon loads once for every fork, and how it notices that code changed under it."""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["code_fingerprint", "code_paths", "preload"]

# Imported inside functions on the run path; the daemon imports them once for every fork.
_LAZY_IMPORTS = (
    "argparse", "ctypes", "datetime", "encodings.utf_16_be", "getpass", "hashlib", "hmac",
    "json", "pty", "secrets", "selectors", "shutil", "sqlite3", "subprocess", "termios",
    "threading", "tomllib", "uuid", "zlib", "ahocorasick_rs", "re2",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.hazmat.primitives.serialization",
)  # fmt: skip
_SKIP = ("oneoff.__main__", "oneoff.testing")


def preload() -> None:
    """Import every oneoff module (and what the run path imports lazily), once; build the
    command-line parser; then freeze what exists so forks' garbage collections leave the
    shared pages alone."""
    import gc
    import pkgutil

    import oneoff
    from oneoff.cli._parser import prebuild_parser

    for name in _LAZY_IMPORTS:
        importlib.import_module(name)
    for info in pkgutil.walk_packages(oneoff.__path__, "oneoff."):
        if not info.name.startswith(_SKIP):
            importlib.import_module(info.name)
    prebuild_parser()
    _warm_libraries()
    gc.collect()
    gc.freeze()


def _warm_libraries() -> None:
    """First-use costs paid once here instead of in every fork: OpenSSL and SQLite set-up,
    argparse's and the default secret patterns' regexes. Only constants and throw-away
    values are touched: the daemon never holds an app's data, config or keys."""
    import hashlib
    import sqlite3

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from oneoff._environ import secret_key_matcher
    from oneoff._manifest import DEFAULT_SECRET_PATTERNS
    from oneoff.cli._parser import build_parser

    throwaway = Ed25519PrivateKey.generate()
    throwaway.public_key().verify(throwaway.sign(b"warm-up"), b"warm-up")
    hashlib.sha256(b"warm-up").hexdigest()
    sqlite3.connect(":memory:").close()
    secret_key_matcher(DEFAULT_SECRET_PATTERNS)("WARM_UP")
    build_parser().parse_known_args(["run", "task", "--env", "e", "--param", "a=b"])


def code_paths() -> list[str]:
    """Where the loaded code lives: oneoff's files, and the directory of every loaded
    module (a reinstall or upgrade of any dependency rewrites its directory), plus the
    import path's directories."""
    paths = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        paths.add(os.path.dirname(file))
        if name == "oneoff" or name.startswith("oneoff."):
            paths.add(file)
    return sorted(paths)


def code_fingerprint(paths: list[str]) -> list[tuple[int, int, int]]:
    """Their stat data: an edit of oneoff, a new module or a reinstall changes it."""
    prints = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            prints.append((-1, -1, -1))
            continue
        prints.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return prints
