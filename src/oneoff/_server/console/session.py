"""The console's session cookie, its CSRF token and the same-origin check of every POST.

The cookie is ``base64url(JSON claims) "." base64url(HMAC-SHA256)`` under a key derived
from the server's token key for this use only (so an API bearer token is never a cookie,
nor a cookie a token). Claims: person, key fingerprint, server id, expiry, a random id.
It is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends
it), ``Secure`` and ``__Host-`` prefixed when served over https, and lives
``SESSION_TTL``; like a bearer token it names the key, so a key dropped by a re-pin ends
its sessions at once.

CSRF: every form carries ``csrf`` = HMAC(key, "csrf:" + session id), a synchronizer token
bound to the session (another session's token, or none, is refused), and every POST must
come from our own origin: ``Origin`` equal to ours, or (browsers send ``Origin: null``
under ``Referrer-Policy: no-referrer``) ``Sec-Fetch-Site: same-origin``. A POST showing
neither is refused: fail closed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any

from oneoff._identity import Principal, utc_now

if TYPE_CHECKING:
    from oneoff._auth.signers import Signers

__all__ = [
    "SESSION_TTL",
    "Session",
    "console_key",
    "cookie_name",
    "csrf_token",
    "make_cookie",
    "origin_problem",
    "read_cookie",
]

SESSION_TTL = _dt.timedelta(minutes=30)
_MAX_COOKIE = 2048


def console_key(session_key: bytes) -> bytes:
    """The console's own MAC key, derived from the server's token key."""
    return hmac.new(session_key, b"oneoff-console-cookie/v1", hashlib.sha256).digest()


def cookie_name(https: bool) -> str:
    # __Host-: only a Secure cookie set by this exact host, for path /, may carry the name.
    return "__Host-oneoff_session" if https else "oneoff_session"


class Session:
    """A checked console session: who, until when, and its CSRF token."""

    def __init__(self, principal: Principal, session_id: str, expires: int, key: bytes) -> None:
        self.principal = principal
        self.id = session_id
        self.expires = expires
        self.csrf = csrf_token(key, session_id)

    def check_csrf(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf.encode(), given.encode())


def csrf_token(key: bytes, session_id: str) -> str:
    return _b64(hmac.new(key, b"csrf:" + session_id.encode(), hashlib.sha256).digest())


def make_cookie(
    key: bytes, principal: Principal, server_id: str, *, now: _dt.datetime | None = None
) -> tuple[str, int]:
    """The cookie value for a freshly logged-in person, and its lifetime in seconds."""
    expires = (now or utc_now()) + SESSION_TTL
    claims = {
        "v": 1,
        "person": principal.name,
        "key": principal.key,
        "server": server_id,
        "expires": int(expires.timestamp()),
        "id": secrets.token_hex(16),
    }
    body = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    return f"{body}.{_mac(key, body)}", int(SESSION_TTL.total_seconds())


def read_cookie(
    key: bytes,
    value: str | None,
    server_id: str,
    signers: Signers,
    *,
    now: _dt.datetime | None = None,
) -> Session | None:
    """The session a cookie proves, or None: missing, forged, expired, for another
    server, or for a key that is no longer among the pinned people."""
    claims = _claims(key, value)
    if claims is None or claims.get("v") != 1 or claims.get("server") != server_id:
        return None
    expires, session_id = claims.get("expires"), claims.get("id")
    if not isinstance(expires, int) or not isinstance(session_id, str):
        return None
    if expires <= (now or utc_now()).timestamp():
        return None
    for entry in signers:
        if entry.name == claims.get("person") and entry.fingerprint == claims.get("key"):
            principal = Principal(entry.name, entry.groups, entry.fingerprint)
            return Session(principal, session_id, expires, key)
    return None


def origin_problem(headers: Any, own_origin: str) -> str | None:
    """Why this POST may come from another site, or None when it is our own page's."""
    origin = headers.get("origin")
    site = headers.get("sec-fetch-site")
    if origin is not None and origin != "null":
        if origin != own_origin:
            return f"it comes from {origin}, not {own_origin}"
        return None
    if site == "same-origin":
        return None
    if site is not None:
        return f"the browser says it comes from a {site} page"
    return "it names no origin (the console accepts POSTs from its own pages only)"


def _claims(key: bytes, value: str | None) -> dict[str, Any] | None:
    if not value or len(value) > _MAX_COOKIE or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    if not hmac.compare_digest(_mac(key, body).encode(), mac.encode("ascii", "replace")):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode("ascii", "replace"), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
