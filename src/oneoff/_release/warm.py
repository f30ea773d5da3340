"""Keyed caches that keep per-invocation release checks cheap: dependencies and signatures.

Listing installed distributions costs ~60 ms (``importlib.metadata``, or a subprocess
for another interpreter) and an Ed25519 check ~40 ms (importing ``cryptography``); both
run before every ``run``, ``plan`` and ``exec``. Both results are cached in the state
directory under an HMAC with a per-app key, so a cache file written by someone without
that key is ignored.

The dependency cache is keyed by a fingerprint of the interpreter (its path and stat,
the ``PYTHON*`` variables that change ``sys.path``) and of every ``sys.path`` entry and
every ``*.dist-info``/``*.egg-info`` in it (stat of the directory, its METADATA and
RECORD). Installing, removing or editing a distribution changes one of those stats.
Fingerprints that include something modified in the last two seconds are not saved
(racy, as in git's index), so a change in the same clock tick is never missed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oneoff._release.deps import (
    SITE_PATHS,
    DepsSnapshot,
    probe_env,
    shaped_by_operator,
    snapshot_deps,
)
from oneoff.errors import ReleaseError

__all__ = ["SignatureCache", "cached_deps"]

_ENV_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONUSERBASE")
_DIST_FILES = ("METADATA", "RECORD", "PKG-INFO", "direct_url.json")
_RACY_NS = 2_000_000_000
# Distribution metadata, plus what the deps probe records when no distribution owns it
# (``deps.unrecorded``): editing one in place changes its stat, not its directory's.
_META = (".dist-info", ".egg-info", ".egg-link", ".pth")
_WATCHED = (
    ".dist-info",
    ".egg-info",
    ".egg-link",
    ".pth",
    ".py",
    ".pyc",
    ".pyo",
    ".pyw",
    ".pyd",
    ".so",
)
_MAX_TAGS = 64


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _read_signed(path: Path, key: bytes) -> Any:
    try:
        mac, _, body = path.read_bytes().partition(b"\n")
        if hmac.compare_digest(mac.decode("ascii"), _mac(key, body)):
            return json.loads(body)
    except (OSError, ValueError):
        pass
    return None


def _write_signed(path: Path, key: bytes, value: Any) -> None:
    import tempfile  # ~4 ms to import; only needed when a cache is (re)written

    body = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_mac(key, body).encode("ascii") + b"\n" + body)
        os.replace(tmp, path)
    except OSError:
        pass  # best effort: a read-only state dir only makes checks slower


class _Fingerprint:
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.newest = 0

    def stat(self, path: str) -> os.stat_result | None:
        try:
            st = os.stat(path)
        except OSError:
            self.h.update(b"-\x00")
            return None
        self.newest = max(self.newest, st.st_mtime_ns, st.st_ctime_ns)
        key = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        self.h.update(repr(key).encode() + b"\x00")
        return st


def _fingerprint(python: str, paths: Iterable[str]) -> tuple[str, bool]:
    """(fingerprint, racy) of an interpreter and what its ``sys.path`` holds."""
    fp = _Fingerprint()
    fp.h.update(python.encode("utf-8", "surrogateescape") + b"\x00")
    fp.stat(python)
    # A virtualenv's pyvenv.cfg decides which base interpreter and site-packages it uses.
    fp.stat(os.path.join(os.path.dirname(os.path.dirname(python)), "pyvenv.cfg"))
    for var in _ENV_VARS:
        fp.h.update(f"{var}={os.environ.get(var)}\x00".encode("utf-8", "surrogateescape"))
    for entry in paths:
        fp.h.update(b"P" + entry.encode("utf-8", "surrogateescape") + b"\x00")
        st = fp.stat(entry)
        if st is None or not os.path.isdir(entry):
            continue
        try:
            names = sorted(os.listdir(entry))
        except OSError:
            continue
        # Loose modules only matter in a site directory (deps.unrecorded); a stdlib
        # directory has hundreds and no distribution metadata.
        site_dir = os.path.basename(entry) in ("site-packages", "dist-packages")
        watched = _WATCHED if site_dir or any(n.endswith(_META) for n in names) else _META
        for name in names:
            if not name.endswith(watched):
                continue
            fp.h.update(b"D" + name.encode("utf-8", "surrogateescape") + b"\x00")
            full = os.path.join(entry, name)
            if fp.stat(full) is not None and os.path.isdir(full):
                for file in _DIST_FILES:
                    fp.stat(os.path.join(full, file))
    racy = fp.newest >= time.time_ns() - _RACY_NS
    return fp.h.hexdigest(), racy


def _other_paths(python: str) -> list[str]:
    try:
        done = subprocess.run(
            [python, "-S", "-c", SITE_PATHS + "import json; print(json.dumps(site_paths()))"],
            capture_output=True,
            env=probe_env(),
            timeout=60,
            check=True,
        )
        paths = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ReleaseError(f"cannot ask interpreter {python} for its sys.path: {exc}") from None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ReleaseError(f"interpreter {python} gave an unexpected sys.path")
    return paths


def cached_deps(python: str, state_dir: Path, key: bytes) -> DepsSnapshot:
    """``snapshot_deps(python)``, answered from the cache when nothing it depends on moved."""
    here = python == sys.executable and not shaped_by_operator()
    path = state_dir / "depscache"
    cached = _read_signed(path, key)
    if here:
        paths = sys.path if sys.flags.safe_path else sys.path[1:]
    elif isinstance(cached, dict) and cached.get("python") == python:
        paths = cached.get("paths", [])
    else:
        paths = None
    if paths is not None and isinstance(cached, dict) and cached.get("python") == python:
        fingerprint, _ = _fingerprint(python, paths)
        if cached.get("fingerprint") == fingerprint:
            try:
                return DepsSnapshot.from_dict(cached["deps"])
            except (ReleaseError, KeyError, TypeError):
                pass
    deps = snapshot_deps(None if here else python)
    if not here:
        paths = _other_paths(python)
    assert paths is not None
    fingerprint, racy = _fingerprint(python, paths)
    if not racy:
        value = {"python": python, "paths": list(paths), "fingerprint": fingerprint}
        _write_signed(path, key, {**value, "deps": deps.to_dict()})
    return deps


class SignatureCache:
    """Tags of (release id, signature, key id, trusted key bytes, environment) seen valid."""

    def __init__(self, state_dir: Path, key: bytes) -> None:
        self.path = state_dir / "sigcache"
        self.key = key

    def tag(self, parts: Iterable[str | bytes]) -> str:
        data = b"".join(
            (p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape")) + b"\x00"
            for p in parts
        )
        return _mac(self.key, data)

    def _tags(self) -> list[str]:
        tags = _read_signed(self.path, self.key)
        return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []

    def __contains__(self, tag: str) -> bool:
        return tag in self._tags()

    def add(self, tag: str) -> None:
        tags = [t for t in self._tags() if t != tag][-(_MAX_TAGS - 1) :]
        _write_signed(self.path, self.key, [*tags, tag])
