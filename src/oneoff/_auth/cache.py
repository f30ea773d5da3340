"""A per-app cache of pure functions of the access files, so a run skips re-parsing them.

Every CLI run is a new process; parsing 1,000 allowed signers and validating 100 Cedar
policies (and importing cedarpy) costs far more than the 10 ms a run may spend on access.
Both are pure functions of file contents, so their results are cached under a digest of
exactly those contents (plus oneoff's version, which fixes the schema):

- the parsed allowed signers, keyed by the file's SHA-256;
- Cedar decisions, keyed by the policy files' digest and the canonical request.

A changed byte is a different key, never a stale answer. But a cache is also a place to
forge answers: whoever can write the app's ``.oneoff/`` could add invented people to a
cached signers file or turn a cached deny into an allow. So the file is authenticated
with HMAC-SHA256 under a key held outside ``.oneoff/`` (``App.cache_key``, see
``oneoff._userkey``); a file that does not verify is ignored and rebuilt. Without such a
key nothing is read from or written to disk: answers are memoised in this process only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from oneoff._version import __version__

__all__ = ["AccessCache"]

_MAX_DECISIONS = 1024


class AccessCache:
    """Read once per process, written back (atomically) only when something was added."""

    def __init__(self, path: Path, *, key: bytes | None) -> None:
        self.path = path
        self._key = key
        self._data: dict[str, Any] | None = None
        self._dirty = False

    def _mac(self, body: bytes) -> bytes:
        assert self._key is not None
        return hmac.new(self._key, body, hashlib.sha256).hexdigest().encode("ascii")

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            data: Any = None
            if self._key is not None:
                try:
                    mac, _, body = self.path.read_bytes().partition(b"\n")
                    if hmac.compare_digest(mac, self._mac(body)):
                        data = json.loads(body)
                except (OSError, ValueError):
                    data = None
            ok = isinstance(data, dict) and data.get("version") == __version__
            self._data = data if ok else {"version": __version__, "signers": {}, "decisions": {}}
        return self._data

    def signers(self, digest: str) -> dict[str, dict[str, Any]] | None:
        """The parsed signers file with this digest, by base64 public key."""
        found = self._load()["signers"].get(digest)
        return found if isinstance(found, dict) else None

    def put_signers(self, digest: str, people: dict[str, dict[str, Any]]) -> None:
        # Only the current file matters: drop entries for older contents.
        self._load()["signers"] = {digest: people}
        self._dirty = True

    def decision(self, key: str) -> dict[str, Any] | None:
        found = self._load()["decisions"].get(key)
        return found if isinstance(found, dict) else None

    def put_decision(self, key: str, value: dict[str, Any]) -> None:
        decisions = self._load()["decisions"]
        if len(decisions) >= _MAX_DECISIONS:
            for old in list(decisions)[: _MAX_DECISIONS // 2]:
                del decisions[old]
        decisions[key] = value
        self._dirty = True

    def save(self) -> None:
        if not self._dirty or self._data is None or self._key is None:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        body = json.dumps(self._data, separators=(",", ":")).encode()
        with contextlib.suppress(OSError):  # a cache that cannot be written is just slower
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._mac(body) + b"\n" + body)
            os.replace(tmp, self.path)
        self._dirty = False


def person_to_json(person: Any) -> dict[str, Any]:
    return {
        "name": person.name,
        "groups": sorted(person.groups),
        "fingerprint": person.fingerprint,
        "namespaces": list(person.namespaces) if person.namespaces is not None else None,
        "valid_after": person.valid_after.isoformat() if person.valid_after else None,
        "valid_before": person.valid_before.isoformat() if person.valid_before else None,
        "public_key": base64.b64encode(person.public_key).decode(),
        "line": person.line,
        "aliases": list(person.aliases),
    }


def person_from_json(data: dict[str, Any]) -> Any:
    from oneoff._auth.signers import Person

    def when(value: str | None) -> _dt.datetime | None:
        return _dt.datetime.fromisoformat(value) if value else None

    return Person(
        name=data["name"],
        groups=frozenset(data["groups"]),
        fingerprint=data["fingerprint"],
        namespaces=tuple(data["namespaces"]) if data["namespaces"] is not None else None,
        valid_after=when(data["valid_after"]),
        valid_before=when(data["valid_before"]),
        public_key=base64.b64decode(data["public_key"]),
        line=int(data["line"]),
        aliases=tuple(data.get("aliases", ())),
    )
