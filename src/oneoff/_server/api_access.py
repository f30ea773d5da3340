"""Sessions, requests, approvals, denials: the access endpoints over the access library."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneoff._server.routing import Call, api_route

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from oneoff._server.context import ServerContext

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


def session(call: Call) -> dict[str, Any]:
    """A read token for the person who signed this call."""
    from oneoff._server.auth import make_token

    assert call.principal is not None  # auth="sign"
    token, expires = make_token(call.ctx.session_key, call.principal, call.ctx.server_id)
    return {"token": token, "person": call.principal.name, "expires_at": expires}


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return [
        api_route(
            ctx, "POST", "/v1/session", session, auth="sign", body=EMPTY, response=SESSION,
            summary="A short-lived read token (at most 15 minutes) for the signer",
        ),
    ]  # fmt: skip
