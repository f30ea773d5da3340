"""Sessions, requests, approvals, denials: the access endpoints over the access library.

A request's body carries the plan document, its hash and the requester's own signed
request statement (namespace ``oneoff``), verified by ``Gate.authenticate`` against the
pinned people: the server recomputes the hash from the document and refuses a mismatch.
An approval carries the approver's signature over the plan hash (``oneoff-approve``),
checked by ``approvals.record_approval``. The signer of the envelope must be the signer of
the domain statement: nobody acts with another person's signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneoff._record import asdict
from oneoff._server.access_shown import request_json
from oneoff._server.errors import ApiError
from oneoff._server.routing import Call, api_route
from oneoff.errors import ApprovalError, NotPermitted, UsageError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from oneoff._identity import Principal
    from oneoff._server.context import ServerContext
    from oneoff._store.interface import RequestRecord

__all__ = ["routes"]

EMPTY = {"type": "object", "additionalProperties": False}
SESSION = {
    "type": "object",
    "required": ["token", "person", "expires_at"],
    "properties": {
        "token": {"type": "string"},
        "person": {"type": "string"},
        "expires_at": {"type": "string"},
    },
}
_SIG = {"type": "string", "maxLength": 8192}
_HASH = {"type": "string", "pattern": "sha256:[0-9a-f]{64}"}
_STATEMENT = {"type": "object", "description": "a request statement (oneoff._identity)"}
NEW_REQUEST = {
    "type": "object",
    "required": ["plan", "plan_hash", "statement", "signature"],
    "additionalProperties": False,
    "properties": {
        "plan": {"type": "object", "description": "oneoff plan --json: document, env, params"},
        "plan_hash": _HASH,
        "statement": _STATEMENT,
        "signature": _SIG,
    },
}
APPROVAL = {
    "type": "object",
    "required": ["time", "policy_version", "signature"],
    "additionalProperties": False,
    "properties": {
        "time": {"type": "string", "maxLength": 40},
        "policy_version": {"type": "string", "maxLength": 80},
        "signature": _SIG,
    },
}
DENIAL = {
    "type": "object",
    "required": ["reason", "statement", "signature"],
    "additionalProperties": False,
    "properties": {
        "reason": {"type": "string", "maxLength": 2000},
        "statement": _STATEMENT,
        "signature": _SIG,
    },
}
STATUS = {"type": "string", "enum": ["pending", "used", "denied", "all"]}
FINGERPRINT_KEY = {
    "type": "object",
    "required": ["server_id", "key", "key_id"],
    "properties": {
        "server_id": {"type": "string"},
        "key": {"type": "string", "description": "base64 of the 32-byte HMAC key"},
        "key_id": {"type": "string", "description": "sha256: of the key (to compare)"},
    },
}


def session(call: Call) -> dict[str, Any]:
    """A read token for the person who signed this call."""
    from oneoff._server.auth import make_token

    principal = _who(call)
    token, expires = make_token(call.ctx.session_key, principal, call.ctx.server_id)
    return {"token": token, "person": principal.name, "expires_at": expires}


def fingerprint_key(call: Call) -> dict[str, Any]:
    """The server's fingerprint key, for a person's client to make plans with (audited).

    Every person who may open a session holds it (see docs/server.md, "Fingerprint key"):
    it lets them test guesses of a value against fingerprints they can see, nothing more.
    """
    import base64
    import hashlib

    key = call.ctx.fingerprint_key
    call.worker.app.audit.append(
        "server.fingerprint_key", actor=_who(call).name, payload={"key": _who(call).key}
    )
    return {
        "server_id": call.ctx.server_id,
        "key": base64.b64encode(key).decode("ascii"),
        "key_id": "sha256:" + hashlib.sha256(key).hexdigest(),
    }


def create(call: Call) -> dict[str, Any]:
    """Record a pending request for the plan the requester signed."""
    from oneoff._server.access_shown import create_signed_request

    body = call.body
    record = create_signed_request(
        call.worker.gate, body["plan"], body["plan_hash"], body["statement"],
        body["signature"], caller=_who(call),
    )  # fmt: skip
    return request_json(record, [])


def listing(call: Call) -> dict[str, Any]:
    status = call.query.get("status", "pending")
    store = call.worker.app.store
    found = store.list_requests(status=None if status == "all" else status)
    return {"requests": [request_json(r, store.approvals_for(r.id)) for r in found]}


def show(call: Call) -> dict[str, Any]:
    request = _request(call)
    return request_json(request, call.worker.app.store.approvals_for(request.id))


def approve(call: Call) -> dict[str, Any]:
    """Check and record an approval signed by the caller over the request's plan hash."""
    from oneoff._auth.approvals import record_approval
    from oneoff._auth.sshsig import decode
    from oneoff._identity import parse_iso

    gate, body = call.worker.gate, call.body
    request = _request(call)
    try:
        parse_iso(body["time"])
    except ValueError:
        raise UsageError("the approval's time is not an ISO timestamp") from None
    if body["policy_version"] != gate.version:
        raise ApprovalError(
            f"the approval is for policy version {body['policy_version'][:80]!r}, the "
            f"server's is {gate.version}: the people or policies changed; review again"
        )
    if decode(body["signature"]).fingerprint != _who(call).key:
        raise NotPermitted("the approval must be signed with the key that signs the call")
    # record_approval checks the stored plan against its hash (audited refusal): once.
    approval = record_approval(gate, request, body["signature"], body["time"], nonce=call.nonce)
    return {"approval": asdict(approval)}


def denial(call: Call) -> dict[str, Any]:
    """Refuse a request (an approver) or withdraw it (its requester), signed."""
    from oneoff._server.access_shown import deny_signed

    body = call.body
    request = _request(call)
    denied = deny_signed(
        call.worker.gate, request, body["statement"], body["signature"], body["reason"],
        caller=_who(call),
    )  # fmt: skip
    return request_json(denied, call.worker.app.store.approvals_for(denied.id))


def _who(call: Call) -> Principal:
    if call.principal is None:  # only routes with auth="sign" or "session" call this
        raise NotPermitted("this call needs a signature")
    return call.principal


def _request(call: Call) -> RequestRecord:
    try:
        return call.worker.app.store.get_request(call.params["id"])
    except UsageError as exc:
        raise ApiError(404, exc) from None


def routes(ctx: ServerContext) -> list[BaseRoute]:
    one = {"type": "object", "description": "a request and its approvals"}
    return [
        api_route(
            ctx, "POST", "/v1/session", session, auth="sign", body=EMPTY, response=SESSION,
            summary="A short-lived read token (at most 15 minutes) for the signer",
        ),
        api_route(
            ctx, "GET", "/v1/fingerprint-key", fingerprint_key, auth="session",
            response=FINGERPRINT_KEY,
            summary="The key plans made for this server fingerprint values with (no-store)",
        ),
        api_route(
            ctx, "POST", "/v1/requests", create, auth="sign", body=NEW_REQUEST, status=201,
            response=one, summary="Ask for approval of one exact plan (signed by the requester)",
        ),
        api_route(
            ctx, "GET", "/v1/requests", listing, auth="session", query={"status": STATUS},
            summary="Requests (default: pending) with their approvals",
        ),
        api_route(
            ctx, "GET", "/v1/requests/{id}", show, auth="session", response=one,
            summary="One request (id or unique prefix) with its approvals",
        ),
        api_route(
            ctx, "POST", "/v1/requests/{id}/approvals", approve, auth="sign", body=APPROVAL,
            status=201, summary="Approve a request: a signature over its plan hash",
            spends_nonce=True,
        ),
        api_route(
            ctx, "POST", "/v1/requests/{id}/denials", denial, auth="sign", body=DENIAL,
            response=one, summary="Deny a request (approver) or withdraw it (requester)",
        ),
    ]  # fmt: skip
