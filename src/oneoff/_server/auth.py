"""Who makes an API call: a signed envelope (acting calls) or a session token (reads).

The envelope's format is ``oneoff._envelope``'s docstring. Here the server checks it
against the PINNED allowed signers, the HTTP request itself, its own id, its clock and the
store's nonces. Every refusal is audited (``auth.refused``) and answered 401 (409 for a
replayed statement).

A session token is ``base64url(JSON claims) "." base64url(HMAC-SHA256)`` under a 256-bit
key kept in the server's store (the same for every server process on that store); claims:
person, key fingerprint, server id, expiry (at most 15 minutes), a random id. It is
opaque to clients. It names the key, so a key removed from the pinned people by a re-pin
stops its tokens at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

from oneoff._envelope import (
    API_NAMESPACE,
    MAX_SKEW,
    SIGNATURE_HEADER,
    STATEMENT_HEADER,
    EnvelopeError,
    decode_envelope,
    envelope_problem,
)
from oneoff._identity import Principal, iso, utc_now
from oneoff._server.errors import ApiError, unauthorized
from oneoff.errors import NotPermitted

if TYPE_CHECKING:
    from oneoff._server.pinning import PinnedGate
    from oneoff._store.interface import ApprovalRecord, Store

__all__ = ["SESSION_TTL", "PendingNonce", "check_envelope", "check_token", "make_token"]

SESSION_TTL = _dt.timedelta(minutes=15)
_MAX_TOKEN = 2048


def refuse(gate: PinnedGate, error: ApiError, actor: str, where: dict[str, str]) -> NoReturn:
    """Audit a refused call, then raise its HTTP error."""
    payload = {"reason": error.error.message, **where}
    gate.app.audit.append("auth.refused", actor=actor, payload=payload)
    raise error


class PendingNonce:
    """A checked call's nonce, not spent yet: its handler spends it in the transaction that
    records the call's outcome (``spend``), so the call costs one durable commit, not two.

    Why that is as safe as spending it first: the nonce's primary key still decides which
    of two copies of a call wins, inside the transaction that would record it, so a copy
    never acts twice; a call refused by its handler spends its nonce afterwards
    (``oneoff._server.routing``), so it cannot be replayed later when it might pass; only
    a call whose transaction failed (nothing of it written: the store said no) leaves it
    unspent, and sending that same call again does once what its signer asked, as their
    own retry would, within the 5 minutes its statement is good for."""

    __slots__ = ("gate", "nonce", "person", "replayed", "seen_at", "spent", "where")

    def __init__(
        self, gate: PinnedGate, nonce: str, person: str, seen_at: str, where: dict[str, str]
    ) -> None:
        self.gate, self.nonce, self.person, self.seen_at = gate, nonce, person, seen_at
        self.where = where
        self.spent = False
        self.replayed = False

    def spend(self, store: Store) -> bool:
        """Spend it through ``store`` (in the caller's transaction); False for a replay,
        whose refusal the caller then audits (``refusal``) and raises (``error``)."""
        fresh = store.remember_nonce(self.nonce, self.person, self.seen_at)
        self.spent, self.replayed = True, not fresh
        return fresh

    def spend_approving(self, store: Store, approval: ApprovalRecord) -> tuple[bool, bool]:
        """Spend it and store ``approval`` if it was fresh, in one statement (in the
        caller's transaction): ``(fresh, added)``; a replay as ``spend``'s."""
        fresh, added = store.add_approval_spending(approval, self.nonce, self.person, self.seen_at)
        self.spent, self.replayed = True, not fresh
        return fresh, added

    def refusal(self) -> dict[str, Any]:
        """The ``auth.refused`` event of a replay (``AuditLog.append_all``'s form)."""
        error = self.error()
        return {"kind": "auth.refused", "actor": self.person,
                "payload": {"reason": error.error.message, **self.where}}  # fmt: skip

    def error(self) -> ApiError:
        return ApiError(
            409,
            NotPermitted(f"call from {self.person} refused: statement replayed (nonce used)"),
        )

    def spend_alone(self) -> None:
        """Spend it in its own commit (the handler did not); 409, audited, for a replay."""
        if not self.spend(self.gate.app.store):
            refuse(self.gate, self.error(), self.person, self.where)


def check_envelope(
    gate: PinnedGate,
    headers: dict[str, str],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    server_id: str,
    now: _dt.datetime | None = None,
    defer: list[PendingNonce] | None = None,
) -> Principal:
    """The person whose signed statement authorises this exact call; audited refusals.
    With ``defer``, the nonce is not spent here but put there (``PendingNonce``)."""
    from oneoff._auth.gate import _key_of
    from oneoff._auth.sshsig import verify

    now = now or utc_now()
    where = {"method": method, "path": path}
    statement_header = headers.get(STATEMENT_HEADER.lower())
    signature_header = headers.get(SIGNATURE_HEADER.lower())
    if not statement_header or not signature_header:
        error = unauthorized(
            f"this call must be signed: {STATEMENT_HEADER} and {SIGNATURE_HEADER} headers",
            hint="use the oneoff CLI with --key (see docs/server.md for the format)",
        )
        refuse(gate, error, "unknown", where)
    try:
        statement, signed, signature = decode_envelope(statement_header, signature_header)
    except EnvelopeError as exc:
        refuse(gate, unauthorized(f"call refused: {exc}"), "unknown", where)
    try:
        person = verify(
            signed, signature, namespace=API_NAMESPACE, allowed=gate.signer_of(signature), now=now
        )
    except NotPermitted as exc:
        refuse(gate, ApiError(401, exc), _key_of(signature), where)
    problem = envelope_problem(
        statement, method=method, path=path, query=query, body=body, server_id=server_id, now=now
    )
    if problem is not None:
        refuse(
            gate, unauthorized(f"call from {person.name} refused: {problem}"), person.name, where
        )
    store = gate.app.store
    pending = PendingNonce(gate, statement["nonce"], person.name, iso(now), where)
    _forget_stale_nonces(store, now)
    if defer is not None:
        defer.append(pending)
    else:
        # One statement, outside the store-wide write lock: the nonce's primary key alone
        # makes a replay lose (of two calls with one nonce, one INSERT wins), so concurrent
        # calls do not queue for the lock one durable commit at a time.
        pending.spend_alone()
    return Principal(person.name, person.groups, person.fingerprint)


#: Seconds between two sweeps of stale nonces by one server process.
SWEEP_EVERY = 1.0
_swept = [-SWEEP_EVERY]
_swept_lock = threading.Lock()


def _forget_stale_nonces(store: Store, now: _dt.datetime) -> None:
    """Drop nonces older than twice the accepted skew (their statements are refused as
    stale anyway), at most once a second per process: one DELETE through the index on
    ``seen_at`` (schema v4 on PostgreSQL, v6 on SQLite), not one per call."""
    with _swept_lock:
        if time.monotonic() - _swept[0] < SWEEP_EVERY:
            return
        _swept[0] = time.monotonic()
    store.forget_nonces(iso(now - 2 * MAX_SKEW))


def make_token(
    secret: bytes, principal: Principal, server_id: str, *, now: _dt.datetime | None = None
) -> tuple[str, str]:
    """A session token for ``principal`` and its expiry (ISO seconds)."""
    expires = (now or utc_now()) + SESSION_TTL
    claims = {
        "person": principal.name,
        "key": principal.key,
        "server": server_id,
        "expires": int(expires.timestamp()),
        "id": secrets.token_hex(8),
    }
    body = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    mac = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}", iso(expires)


def check_token(
    gate: PinnedGate,
    secret: bytes,
    authorization: str | None,
    server_id: str,
    *,
    where: dict[str, str],
    now: _dt.datetime | None = None,
) -> Principal:
    """The person a bearer token was issued to; 401 (audited) when missing, forged,
    expired, for another server, or for a key no longer among the pinned people."""
    now = now or utc_now()
    if not authorization or not authorization.startswith("Bearer "):
        error = unauthorized(
            "this call needs a session token (Authorization: Bearer ...)",
            hint="get one with a signed POST /v1/session",
        )
        refuse(gate, error, "unknown", where)
    token = authorization[len("Bearer ") :].strip()
    claims = _claims(secret, token)
    if claims is None:
        refuse(gate, unauthorized("session token refused: malformed or forged"), "unknown", where)
    person = str(claims.get("person"))
    if claims.get("server") != server_id:
        refuse(gate, unauthorized("session token refused: made by another server"), person, where)
    expires = claims.get("expires")
    if not isinstance(expires, int) or expires <= now.timestamp():
        error = unauthorized("session token refused: expired", hint="sign a new POST /v1/session")
        refuse(gate, error, person, where)
    for entry in gate.signers:
        if entry.name == person and entry.fingerprint == claims.get("key"):
            return Principal(entry.name, entry.groups, entry.fingerprint)
    refuse(
        gate,
        unauthorized(f"session token refused: {person}'s key is no longer allowed"),
        person,
        where,
    )


def _claims(secret: bytes, token: str) -> dict[str, Any] | None:
    if len(token) > _MAX_TOKEN or token.count(".") != 1:
        return None
    body, mac = token.split(".")
    want = _b64(hmac.new(secret, body.encode("ascii", "replace"), hashlib.sha256).digest())
    if not hmac.compare_digest(want.encode(), mac.encode("ascii", "replace")):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
