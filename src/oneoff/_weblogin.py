"""Login links for the web console: a statement signed with a person's SSH key, used once.

``oneoff login --web`` signs (namespace ``oneoff-login``) the canonical JSON of::

    {"oneoff_login": 1, "server": "<server id>", "time": "<ISO seconds Z>",
     "expires": "<ISO seconds Z, at most 5 minutes after time>", "nonce": "<32 hex>"}

and prints ``<server URL>/console/login#<base64url(statement)>.<base64url(SSHSIG blob)>``.
The token rides in the URL's fragment, which browsers never send to a server, never put
in a ``Referer`` and proxies never log: the login page's script posts it (see
``oneoff._server.console``). The server checks the signature against its PINNED people,
that ``server`` is its own id (a link minted for one server is refused by another), that
the link has not expired and is fresh, and that its nonce was never used before (single
use); only then does it set a session cookie. No password ever exists.

Standard library and ``oneoff._auth.sshsig`` only: the CLI imports this without the
server's dependencies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_json
from oneoff._identity import iso, parse_iso, utc_now
from oneoff.errors import NotPermitted

if TYPE_CHECKING:
    from oneoff._auth.signers import Person, Signers
    from oneoff._identity import Signer

__all__ = [
    "LOGIN_NAMESPACE",
    "LOGIN_TTL",
    "LoginToken",
    "decode_token",
    "login_link",
    "login_problem",
    "login_statement",
    "verify_token",
]

LOGIN_NAMESPACE = "oneoff-login"
# A link is for clicking now: five minutes at most, as for every signed statement.
LOGIN_TTL = _dt.timedelta(minutes=5)
MAX_SKEW = _dt.timedelta(minutes=5)
# A statement is ~150 bytes and a signature blob ~200: anything far larger is refused unread.
MAX_TOKEN = 2048
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_SERVER = re.compile(r"^[0-9a-f]{32}$")
_KEYS = frozenset({"oneoff_login", "server", "time", "expires", "nonce"})


def login_statement(
    server_id: str, *, now: _dt.datetime | None = None, ttl: _dt.timedelta = LOGIN_TTL
) -> dict[str, Any]:
    """What a person signs to open one console session on one server, now, once."""
    if ttl > LOGIN_TTL or ttl <= _dt.timedelta(0):
        raise ValueError("a login link lives at most 5 minutes")
    now = now or utc_now()
    return {
        "oneoff_login": 1,
        "server": server_id,
        "time": iso(now),
        "expires": iso(now + ttl),
        "nonce": secrets.token_hex(16),
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def login_link(base_url: str, statement: dict[str, Any], signer: Signer) -> str:
    """The link to open: the server's console login page, the signed token in the fragment."""
    from oneoff._auth.sshsig import dearmor

    signed = canonical_json(statement)
    blob = dearmor(signer.sign(signed, LOGIN_NAMESPACE))
    return f"{base_url.rstrip('/')}/console/login#{_b64(signed)}.{_b64(blob)}"


class LoginToken:
    """A decoded (not yet verified) login token: the statement, its bytes, the signature."""

    def __init__(self, statement: dict[str, Any], signed: bytes, signature: str) -> None:
        self.statement = statement
        self.signed = signed
        self.signature = signature

    @property
    def nonce(self) -> str:
        return str(self.statement["nonce"])


def decode_token(token: str) -> LoginToken:
    """Split and decode a token; NotPermitted (never another exception) when malformed."""
    from oneoff._auth.sshsig import armor

    token = token.strip().lstrip("#")
    if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
        raise NotPermitted("login link refused: malformed (copy the whole link)")
    head, tail = token.split(".")
    try:
        signed, blob = _unb64(head), _unb64(tail)
        statement = json.loads(signed)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise NotPermitted("login link refused: malformed (copy the whole link)") from None
    if not isinstance(statement, dict) or set(statement) != _KEYS:
        raise NotPermitted("login link refused: not a login statement")
    try:
        canonical = canonical_json(statement)
    except (TypeError, ValueError):
        canonical = b""
    if canonical != signed:
        raise NotPermitted("login link refused: its statement is not canonical JSON")
    return LoginToken(statement, signed, armor(blob))


def login_problem(statement: dict[str, Any], *, server_id: str, now: _dt.datetime) -> str | None:
    """Why this (signature-checked) statement cannot open a session here and now, or None."""
    if statement.get("oneoff_login") != 1:
        return "unknown login statement version"
    server = statement.get("server")
    if not isinstance(server, str) or not _SERVER.match(server) or server != server_id:
        return "it was made for another server"
    nonce = statement.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        return "it carries no valid nonce"
    try:
        when = parse_iso(str(statement.get("time")))
        expires = parse_iso(str(statement.get("expires")))
    except ValueError:
        return "its time or expiry is not a timestamp"
    if when.tzinfo is None or expires.tzinfo is None:
        return "its time or expiry has no time zone"
    if abs(now - when) > MAX_SKEW:
        return f"its time {iso(when)} is more than 5 minutes from ours ({iso(now)})"
    if expires - when > LOGIN_TTL or expires <= when:
        return "it claims to live longer than 5 minutes"
    if now >= expires:
        return f"it expired at {iso(expires)}; run `oneoff login --web` again"
    # Past this bound its nonce may already be forgotten (nonces are kept 2 x MAX_SKEW).
    if expires - now > MAX_SKEW:
        return "its expiry is too far ahead of our clock"
    return None


def verify_token(
    token: LoginToken, *, allowed: Signers, server_id: str, now: _dt.datetime
) -> Person:
    """The person whose key signed this login link; NotPermitted for anything wrong with
    it except reuse (the caller remembers the nonce, in the same store as every nonce)."""
    from oneoff._auth.sshsig import verify

    try:
        person = verify(
            token.signed, token.signature, namespace=LOGIN_NAMESPACE, allowed=allowed, now=now
        )
    except NotPermitted as exc:
        raise NotPermitted(f"login link refused: {exc.message}", hint=exc.hint) from None
    problem = login_problem(token.statement, server_id=server_id, now=now)
    if problem is not None:
        raise NotPermitted(f"login link from {person.name} refused: {problem}")
    return person
