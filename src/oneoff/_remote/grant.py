"""The run grant: the server's signed, single-use permission to run one plan as one run.

A grant is a JSON document and an Ed25519 signature by the server's key (the key that signs
its audit checkpoints, ``oneoff._audit.keys``) over ``b"oneoff-grant-v1\\0"`` followed by
the document's canonical JSON. The NUL makes the signed bytes something no checkpoint note
(text) can ever be, so a grant signature cannot pass for a checkpoint's, nor the reverse.

The document binds: the server (its id), the app, the run id, the plan hash, the task,
environment and release, the principal it was granted to, the locks with their fencing
tokens, the lease length, and ``expires_at`` (at most ``GRANT_TTL`` seconds after
``issued_at``): the run must be *started* before then, once (the server remembers each
grant id it accepted). Anything changed in it breaks the signature; a grant for one plan
or run does not start another.

The runner's later calls for the run (output, heartbeat, finish) carry a *run token*: the
server's signature over ``b"oneoff-run-token-v1\\0" + run_id``. It is stateless (the server
checks it with its public key) and good for that one run only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_json
from oneoff._clock import utc_iso
from oneoff.errors import NotPermitted

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "GRANT_TTL",
    "GRANT_VERSION",
    "check_run_token",
    "grant_problem",
    "public_key_b64",
    "public_key_from_text",
    "run_token",
    "sign_grant",
    "verify_grant",
]

GRANT_VERSION = 1
GRANT_TTL = 60  # seconds from issue to start, at most
_GRANT_PREFIX = b"oneoff-grant-v1\0"
_TOKEN_PREFIX = b"oneoff-run-token-v1\0"
_SKEW = _dt.timedelta(minutes=5)  # as every signed statement (oneoff._auth.gate.MAX_SKEW)
_FIELDS = {
    "oneoff_grant": int, "id": str, "server": str, "app": str, "run": str, "plan_hash": str,
    "task": str, "environment": str, "principal": str, "locks": dict, "lease_seconds": int,
    "issued_at": str, "expires_at": str, "single_use": bool,
}  # fmt: skip
_ID = re.compile(r"^[0-9a-f]{32}$")


def sign_grant(key: Ed25519PrivateKey, document: Mapping[str, Any]) -> str:
    """The base64 signature of ``document`` as a grant."""
    return base64.b64encode(key.sign(_GRANT_PREFIX + canonical_json(document))).decode("ascii")


def grant_problem(
    document: object,
    *,
    run_id: str,
    plan_hash: str,
    now: _dt.datetime,
    server_id: str | None = None,
) -> str | None:
    """Why ``document`` (signature aside) does not let ``run_id`` run ``plan_hash`` now."""
    if not isinstance(document, dict):
        return "the grant is not a JSON object"
    if document.get("oneoff_grant") != GRANT_VERSION:
        return "unknown grant version"
    for name, kind in _FIELDS.items():
        value = document.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"the grant's {name} is missing or not a {kind.__name__}"
    if not _ID.match(document["id"]):
        return "the grant's id is not 32 hex digits"
    if document["single_use"] is not True:
        return "the grant is not single-use"
    if document["run"] != run_id:
        return f"the grant is for run {document['run']}, not {run_id}"
    if document["plan_hash"] != plan_hash:
        return f"the grant is for plan {document['plan_hash']}, not {plan_hash}"
    if server_id is not None and document["server"] != server_id:
        return f"the grant was issued by server {document['server']}, not {server_id}"
    try:
        issued = _parse(document["issued_at"])
        expires = _parse(document["expires_at"])
    except ValueError:
        return "the grant's times are not UTC timestamps"
    if expires - issued > _dt.timedelta(seconds=GRANT_TTL) or expires < issued:
        return f"the grant's lifetime is not within {GRANT_TTL} seconds"
    if issued > now + _SKEW:
        return f"the grant was issued in the future ({document['issued_at']})"
    if now >= expires:
        return f"the grant expired at {document['expires_at']} (it is {utc_iso(now)})"
    for name, token in document["locks"].items():
        if not isinstance(name, str) or type(token) is not int or token < 1:
            return "the grant's locks are not names with positive fencing tokens"
    return None


def verify_grant(
    public: Ed25519PublicKey,
    document: object,
    signature: object,
    *,
    run_id: str,
    plan_hash: str,
    now: _dt.datetime,
    server_id: str | None = None,
) -> dict[str, Any]:
    """The grant if its signature is the server's and it lets ``run_id`` run ``plan_hash``
    now; NotPermitted (one line saying why) otherwise."""
    from cryptography.exceptions import InvalidSignature

    problem = grant_problem(
        document, run_id=run_id, plan_hash=plan_hash, now=now, server_id=server_id
    )
    if problem is None and not isinstance(signature, str):
        problem = "the grant carries no signature"
    if problem is None:
        assert isinstance(document, dict)
        assert isinstance(signature, str)
        try:
            public.verify(_b64(signature), _GRANT_PREFIX + canonical_json(document))
        except (InvalidSignature, ValueError):
            problem = "the grant's signature is not the server's (altered or forged)"
    if problem is not None:
        raise NotPermitted(f"run grant refused: {problem}")
    assert isinstance(document, dict)
    return document


def run_token(key: Ed25519PrivateKey, run_id: str) -> str:
    """The token that lets the runner of ``run_id`` (and nothing else) record it."""
    signature = key.sign(_TOKEN_PREFIX + run_id.encode())
    return base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")


def check_run_token(public: Ed25519PublicKey, run_id: str, token: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    if not re.fullmatch(r"[A-Za-z0-9_-]{86}", token):
        return False
    try:
        public.verify(base64.urlsafe_b64decode(token + "=="), _TOKEN_PREFIX + run_id.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_b64(public: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64: how the server publishes it (``GET /v1/server``)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def public_key_from_text(text: object) -> Ed25519PublicKey:
    """The server's key as ``GET /v1/server`` publishes it (``audit_public_key``: PEM), or
    raw base64; NotPermitted for anything else."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        if isinstance(text, str) and text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
            if isinstance(key, Ed25519PublicKey):
                return key
        elif isinstance(text, str):
            return Ed25519PublicKey.from_public_bytes(_b64(text))
    except (ValueError, UnicodeEncodeError):
        pass
    raise NotPermitted("the server publishes no Ed25519 key to check its grants with")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def _parse(stamp: str) -> _dt.datetime:
    when = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("no time zone")
    return when
