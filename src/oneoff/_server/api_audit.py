"""The audit endpoints: the signed checkpoint, RFC 6962 proofs, events, co-signatures.

Checkpoints and proofs are public (no authentication), like a Certificate Transparency
log's: they hold only sizes, hashes and signatures, and a witness need not be able to read
the events to hold the server to its history (``oneoff._client.witness``). Events and the
server's own verification need a session; a co-signature is an acting call, signed by a
person in the pinned people, and is itself checked against the stored checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneoff._server.routing import Call, api_route

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from oneoff._server.context import ServerContext

__all__ = ["routes"]

_SIZE = {"type": "string", "pattern": "^[0-9]{1,18}$"}
_NAME = {"type": "string", "pattern": "^.{1,200}$"}
_B64 = {"type": "string", "pattern": "^[A-Za-z0-9+/=]{1,200}$"}
COSIGNATURE = {
    "type": "object",
    "required": ["size", "timestamp", "signature", "public_key"],
    "additionalProperties": False,
    "properties": {
        "size": {"type": "integer", "minimum": 0},
        "timestamp": {"type": "integer", "minimum": 0},
        "signature": _B64,
        "public_key": _B64,
    },
}


def _int(call: Call, name: str, default: int | None = None) -> int | None:
    value = call.query.get(name)
    return default if value is None else int(value)


def checkpoint(call: Call) -> dict[str, Any]:
    from oneoff._audit.publish import checkpoint_document

    return checkpoint_document(call.worker.app.audit)


def consistency(call: Call) -> dict[str, Any]:
    from oneoff._audit.publish import consistency_document
    from oneoff.errors import UsageError

    first, second = _int(call, "first"), _int(call, "second")
    if first is None or second is None:
        raise UsageError("first and second (checkpoint sizes) are required")
    return consistency_document(call.worker.app.store, first, second)


def _may_export(call: Call) -> None:
    """Reading events is exporting them: the pinned policy decides ``audit-export``."""
    from oneoff._auth.operations import app_resource, whole_app

    assert call.principal is not None  # auth="session"
    app = call.worker.app
    call.worker.gate.decide_operation(
        call.principal, "audit-export", app_resource(), whole_app(app.project)
    )


def inclusion(call: Call) -> dict[str, Any]:
    from oneoff._audit.publish import inclusion_document
    from oneoff.errors import UsageError

    _may_export(call)
    seq = _int(call, "seq")
    if seq is None:
        raise UsageError("seq (the event's number) is required")
    return inclusion_document(call.worker.app.store, seq, _int(call, "size"))


def events(call: Call) -> dict[str, Any]:
    from oneoff._audit.publish import events_document

    _may_export(call)
    return events_document(
        call.worker.app.audit, after=_int(call, "after", 0) or 0,
        limit=_int(call, "limit", 1000) or 0, run=call.query.get("run"),
        kind=call.query.get("kind"),
    )  # fmt: skip


def cosignatures(call: Call) -> dict[str, Any]:
    from oneoff._audit.publish import accept_cosignature

    assert call.principal is not None  # auth="sign"
    cos, stored = accept_cosignature(call.worker.app.audit, call.body, actor=call.principal.name)
    return {**cos, "stored": stored}


def verify(call: Call) -> dict[str, Any]:
    from oneoff._audit.verify import verify_log

    app = call.worker.app
    key = app.audit.key
    public = None if key is None else key.public()
    report = verify_log(app.store, public, all_signatures=call.query.get("all") == "1")
    return {"ok": True, "events": report.events, "checkpoints": report.checkpoints,
            "checkpointed": report.checkpointed, "uncovered": report.uncovered,
            "signatures": report.signatures, "head": report.head.hex()}  # fmt: skip


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return [
        api_route(
            ctx, "GET", "/v1/audit/checkpoint", checkpoint, auth="none",
            summary="The newest signed checkpoint (one is signed over new events first) and "
            "its witnesses' co-signatures",
        ),
        api_route(
            ctx, "GET", "/v1/audit/proof/consistency", consistency, auth="none",
            query={"first": _SIZE, "second": _SIZE},
            summary="RFC 6962 consistency proof from the tree of `first` events to the stored "
            "checkpoint of `second`",
        ),
        api_route(
            ctx, "GET", "/v1/audit/proof/inclusion", inclusion, auth="session",
            query={"seq": _SIZE, "size": _SIZE},
            summary="Inclusion proof of event `seq` in the checkpoint of `size` (default "
            "newest), with the event",
        ),
        api_route(
            ctx, "GET", "/v1/audit/events", events, auth="session",
            query={"after": _SIZE, "limit": _SIZE, "run": _NAME, "kind": _NAME},
            summary="Events after `after` (at most `limit`, 1000), optionally one run's or kind's",
        ),
        api_route(
            ctx, "POST", "/v1/audit/cosignatures", cosignatures, auth="sign", body=COSIGNATURE,
            summary="A witness's Ed25519 co-signature of a stored checkpoint",
        ),
        api_route(
            ctx, "GET", "/v1/audit/verify", verify, auth="session",
            query={"all": {"type": "string", "enum": ["0", "1"]}},
            summary="The server's own end-to-end verification of its audit log",
        ),
    ]  # fmt: skip
