"""The signed envelope of a team-server API call that acts: build it (client), check it (server).

An acting call (one that changes state) carries two HTTP headers::

    Oneoff-Statement: base64url, no padding, of the canonical JSON (RFC 8785) of
        {"oneoff_api": 1, "method": "POST", "path": "/v1/requests", "query": "",
         "body_sha256": "<hex of the exact body bytes>", "server": "<server id>",
         "time": "2026-12-06T23:00:00Z", "nonce": "<32 hex>"}
    Oneoff-Signature: base64 (standard, padded) of the armored SSHSIG over those canonical
        bytes, namespace "oneoff-api"

The server verifies the signature against its pinned allowed signers, then that method,
path, raw query and body hash are the HTTP request's own (a statement cannot be moved to
another call), that ``server`` is its id (nor to another server), that ``time`` is within
``MAX_SKEW`` of its clock, and that the nonce was never seen (nor replayed). Domain
signatures (a request statement, an approval) ride inside the body unchanged.

Standard library and ``oneoff._auth.sshsig`` only: the CLI client imports this without the
server's dependencies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_json
from oneoff._clock import utc_iso

if TYPE_CHECKING:
    from oneoff._identity import Signer

__all__ = [
    "API_NAMESPACE",
    "MAX_SKEW",
    "SIGNATURE_HEADER",
    "STATEMENT_HEADER",
    "EnvelopeError",
    "api_statement",
    "decode_envelope",
    "envelope_problem",
    "sign_envelope",
]

API_NAMESPACE = "oneoff-api"
STATEMENT_HEADER = "Oneoff-Statement"
SIGNATURE_HEADER = "Oneoff-Signature"
VERSION = 1
# The same window as every other signed statement (oneoff._auth.gate.MAX_SKEW).
MAX_SKEW = _dt.timedelta(minutes=5)
# A statement is ~300 bytes and an Ed25519 signature's armor ~300: anything far larger is
# refused before it is decoded.
_MAX_HEADER = 4096
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_KEYS = frozenset(
    {"oneoff_api", "method", "path", "query", "body_sha256", "server", "time", "nonce"}
)


class EnvelopeError(ValueError):
    """A malformed envelope (the server answers 401 with this message)."""


def api_statement(
    method: str,
    path: str,
    query: str,
    body: bytes,
    server_id: str,
    *,
    now: _dt.datetime | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """The statement a client signs for one HTTP call to one server, now, once."""
    when = now or _dt.datetime.now(_dt.UTC)
    return {
        "oneoff_api": VERSION,
        "method": method.upper(),
        "path": path,
        "query": query,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "server": server_id,
        "time": utc_iso(when, timespec="seconds"),
        "nonce": nonce or secrets.token_hex(16),
    }


def sign_envelope(
    signer: Signer,
    method: str,
    path: str,
    query: str,
    body: bytes,
    server_id: str,
    *,
    now: _dt.datetime | None = None,
) -> dict[str, str]:
    """The two headers of an acting call: ``{STATEMENT_HEADER: ..., SIGNATURE_HEADER: ...}``.

    ``path`` is the request path without the query; ``query`` the raw query string exactly
    as sent (``''`` for none); ``body`` the exact body bytes sent.
    """
    statement = canonical_json(api_statement(method, path, query, body, server_id, now=now))
    signature = signer.sign(statement, API_NAMESPACE)
    return {
        STATEMENT_HEADER: base64.urlsafe_b64encode(statement).decode("ascii").rstrip("="),
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
    }


def decode_envelope(
    statement_header: str, signature_header: str
) -> tuple[dict[str, Any], bytes, bytes]:
    """``(statement, signed bytes, armored signature)`` from the two headers, or EnvelopeError.

    The signature is checked over the exact decoded bytes; the statement is parsed from them.
    """
    if len(statement_header) > _MAX_HEADER or len(signature_header) > _MAX_HEADER:
        raise EnvelopeError("the signed statement or its signature is too large")
    if not _B64URL.match(statement_header):
        raise EnvelopeError(f"{STATEMENT_HEADER} is not base64url")
    try:
        signed = base64.urlsafe_b64decode(statement_header + "=" * (-len(statement_header) % 4))
        signature = base64.b64decode(signature_header, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(
            f"{STATEMENT_HEADER} or {SIGNATURE_HEADER} is not valid base64"
        ) from None
    try:
        statement = json.loads(signed.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EnvelopeError("the signed statement is not JSON") from None
    if not isinstance(statement, dict):
        raise EnvelopeError("the signed statement is not a JSON object")
    return statement, signed, signature


def envelope_problem(
    statement: dict[str, Any],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    server_id: str,
    now: _dt.datetime,
) -> str | None:
    """Why ``statement`` does not authorise this very call (None: it does; the nonce's
    freshness is the caller's to check, in its store)."""
    if statement.get("oneoff_api") != VERSION or set(statement) != _KEYS:
        return "unknown API statement version or fields"
    wanted = {
        "method": method.upper(),
        "path": path,
        "query": query,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "server": server_id,
    }
    for key, want in wanted.items():
        if statement.get(key) != want:
            return f"it was signed for {key} {_short(statement.get(key))}, not {_short(want)}"
    if not isinstance(statement.get("nonce"), str) or not _NONCE.match(statement["nonce"]):
        return "it carries no valid nonce"
    stamp = statement.get("time")
    try:
        when = _dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "its time is not a timestamp"
    if when.tzinfo is None or abs(now - when) > MAX_SKEW:
        ours = utc_iso(now, timespec="seconds")
        return f"its time {_short(stamp)} is more than 5 minutes from the server's ({ours})"
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
