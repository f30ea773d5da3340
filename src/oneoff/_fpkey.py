"""A team server's fingerprint key on the client: fetched once, cached per server id.

A plan's hash covers its variables' values as keyed fingerprints (``oneoff._plan``). With
a key local to each checkout, the same release and config hash differently on the laptop
that asked for approval and on the deploy host that runs: the approval could not be spent
there, and the server could not check the values it is shown. So a command that talks to
a team server fingerprints with the SERVER's key (one per server, made on its first
start), fetched by an authenticated person with ``GET /v1/fingerprint-key`` and used by
the App in place of the local key (``App.use_fingerprint_key``).

**Cache.** ``$XDG_STATE_HOME/oneoff/fingerprint-keys/<server id>.json`` (else under
``~/.local/state``): the directory is this user's alone (``oneoff._userkey.private_dir``:
not a symlink, not writable by others), the file 0600, ours, not a symlink, written whole
(temporary file then rename). The file names its server and is read only for that server
id, so a key fetched from server A is never used for server B, even if a file is renamed.
A file that fails a check is ignored and fetched again; without a usable directory the key
is fetched on every command (slower, never weaker). The key is a secret of the team: who
holds it and what it allows is in docs/server.md ("Fingerprint key").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff.errors import UsageError

if TYPE_CHECKING:
    from oneoff._app import App

__all__ = ["PATH", "cache_file", "fetch_answer", "server_fingerprint_key", "use_server_key"]

PATH = "/v1/fingerprint-key"
KEY_SIZE = 32
_SERVER_ID = re.compile(r"[0-9a-f]{32}")
_MAX_FILE = 4096

Fetch = Callable[[], Mapping[str, Any]]


def use_server_key(app: App, server_id: str, fetch: Fetch) -> bytes:
    """Make ``app`` fingerprint with the server's key (cached, else ``fetch()``ed)."""
    key = server_fingerprint_key(server_id, fetch)
    app.use_fingerprint_key(key)
    return key


def server_fingerprint_key(server_id: str, fetch: Fetch) -> bytes:
    """The fingerprint key of server ``server_id``: from this user's cache, else from
    ``fetch()`` (the JSON answer of ``GET /v1/fingerprint-key``), checked and cached."""
    _check_id(server_id)
    cached = _load(server_id)
    if cached is not None:
        return cached
    key = parse_answer(fetch(), server_id)
    _save(server_id, key)
    return key


def parse_answer(answer: Mapping[str, Any], server_id: str) -> bytes:
    """The key in a server's answer, refused unless it is whole and from ``server_id``."""
    if not isinstance(answer, Mapping) or answer.get("server_id") != server_id:
        got = str(answer.get("server_id"))[:40] if isinstance(answer, Mapping) else "nothing"
        raise UsageError(
            f"the fingerprint key came from server {got!r}, not {server_id}: refusing it",
            hint="check the server URL: it answers for another server",
        )
    try:
        key = base64.b64decode(str(answer.get("key")), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    key_id = "sha256:" + hashlib.sha256(key).hexdigest()
    if len(key) != KEY_SIZE or not hmac.compare_digest(key_id, str(answer.get("key_id"))):
        raise UsageError(f"server {server_id} sent a malformed fingerprint key")
    return key


def fetch_answer(base_url: str, token: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """``GET /v1/fingerprint-key`` with a session token (stdlib; http or https).

    The team client may pass its own fetch instead; this one raises the server's error
    (same class and message) or a UsageError when the server cannot be reached.
    """
    import urllib.error
    import urllib.request

    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"server URL {base_url[:80]!r} is not http(s)")
    url, auth = base_url.rstrip("/") + PATH, {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, headers=auth)  # noqa: S310 (http(s), checked above)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            raw = answer.read(_MAX_FILE + 1)
    except urllib.error.HTTPError as exc:
        raise _server_error(exc.code, exc.read(_MAX_FILE + 1)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise UsageError(f"cannot reach the server at {base_url[:80]}: {exc}") from None
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise UsageError("the server's fingerprint key answer is not JSON")
    return found


def _server_error(status: int, raw: bytes) -> Exception:
    """The oneoff error a server's error answer stands for (same class, same message)."""
    from oneoff import errors

    try:
        error = json.loads(raw)["error"]
        kind = getattr(errors, str(error["kind"]), None)
        message, hint = str(error["message"]), error.get("hint")
    except (ValueError, KeyError, TypeError):
        return UsageError(f"the server refused the fingerprint key (HTTP {status})")
    if isinstance(kind, type) and issubclass(kind, errors.OneoffError):
        return kind(message, hint=hint if isinstance(hint, str) else None)
    return errors.NotPermitted(message)


def cache_file(server_id: str) -> Path | None:
    """Where server ``server_id``'s key is cached; None when no private directory exists."""
    from oneoff._userkey import private_dir

    _check_id(server_id)
    directory = private_dir("fingerprint-keys")
    return None if directory is None else directory / f"{server_id}.json"


def _check_id(server_id: str) -> None:
    if not isinstance(server_id, str) or not _SERVER_ID.fullmatch(server_id):
        raise UsageError(f"server id {str(server_id)[:40]!r} is not 32 hex digits")


def _load(server_id: str) -> bytes | None:
    path = cache_file(server_id)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        raw = os.read(fd, _MAX_FILE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    mine = stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
    if not mine or len(raw) > _MAX_FILE:
        return None
    try:
        return parse_answer(json.loads(raw), server_id)
    except (ValueError, UsageError):
        return None


def _save(server_id: str, key: bytes) -> None:
    path = cache_file(server_id)
    if path is None:
        return
    data = json.dumps(
        {
            "server_id": server_id,
            "key": base64.b64encode(key).decode("ascii"),
            "key_id": "sha256:" + hashlib.sha256(key).hexdigest(),
        }
    ).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        return  # no cache this time: the next command fetches again
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
