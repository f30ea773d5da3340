"""Read-only session tokens, cached per server URL and signing key in the user's state dir.

``POST /v1/session`` (a signed, acting call) returns an opaque, server-MAC'd token good for
at most 15 minutes; read calls carry it as ``Authorization: Bearer``. It is kept in
``$XDG_STATE_HOME/oneoff/sessions/`` (else ``~/.local/state/oneoff/sessions/``; directory
0700, file 0600, written atomically) and used until 30 seconds before it expires, so a
command a few seconds long never presents one that runs out midway. The file is keyed by
server URL *and* signing key: switching ``--key`` never borrows another person's session.
A token is a bearer credential for reads only: anyone who can read the user's files can
read what the user may read, for minutes; nothing it holds can act.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneoff._identity import Signer

__all__ = ["EARLY_REFRESH", "cached_token", "drop_token", "sessions_dir", "store_token"]

EARLY_REFRESH = _dt.timedelta(seconds=30)


def sessions_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "oneoff" / "sessions"


def _who(signer: Signer) -> str:
    path = signer.key_path
    return "agent" if path is None else os.path.realpath(path)


def _file(url: str, signer: Signer) -> Path:
    digest = hashlib.sha256(f"{url}\n{_who(signer)}".encode()).hexdigest()[:32]
    return sessions_dir() / f"{digest}.json"


def _expires(data: Any) -> _dt.datetime | None:
    from oneoff._identity import parse_iso

    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        return None
    try:
        when = parse_iso(str(data.get("expires_at")))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def cached_token(url: str, signer: Signer, now: _dt.datetime | None = None) -> str | None:
    """The cached token for this server and key, unless it expires within 30 s."""
    from oneoff._identity import utc_now

    path = _file(url, signer)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    when = _expires(data)
    if when is None or data.get("url") != url or data.get("key") != _who(signer):
        return None
    if when - EARLY_REFRESH <= (now or utc_now()):
        return None
    token: str = data["token"]
    return token


def store_token(url: str, signer: Signer, answer: Any) -> str:
    """Keep the session ``answer`` (``{token, person, expires_at}``); its token."""
    from oneoff.errors import StoreError

    if _expires(answer) is None:
        raise StoreError(f"the server at {url} answered POST /v1/session without a valid token")
    token: str = answer["token"]
    directory = sessions_dir()
    with contextlib.suppress(OSError):  # no cache is slower, not wrong
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        record = {"url": url, "key": _who(signer), "token": token,
                  "person": answer.get("person"), "expires_at": answer["expires_at"]}  # fmt: skip
        target = _file(url, signer)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(record, sort_keys=True).encode())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    return token


def drop_token(url: str, signer: Signer) -> None:
    """Forget the cached token (the server refused it: expired early, or its secret changed)."""
    with contextlib.suppress(OSError):
        os.unlink(_file(url, signer))
