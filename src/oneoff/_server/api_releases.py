"""Releases through the server: push a signed release document, list them, the current one.

A release is made where the code is (``oneoff release create`` on a build machine): its
document is canonical JSON whose sha256 is its id, signed (Ed25519 over the id) by a
release key the environment trusts. The server accepts a pushed document only if it is
well formed (the same checks as a stored row), signed by a key the server's checkout
trusts for that environment, made by the person who signs the push, who must be allowed
to ``release`` there by the pinned policy; its version must be the environment's next one
and its floor (``min_version``) may not go down. It then becomes the current release.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from oneoff._server.errors import ApiError
from oneoff._server.routing import Call, api_route
from oneoff.errors import NotPermitted, ReleaseError, UsageError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from oneoff._server.context import ServerContext
    from oneoff._store.interface import ReleaseRecord

__all__ = ["routes"]

PUSH = {
    "type": "object",
    "required": ["document", "signature", "key_id"],
    "additionalProperties": False,
    "properties": {
        "document": {"type": "string", "description": "the canonical JSON release document"},
        "signature": {"type": ["string", "null"], "maxLength": 200},
        "key_id": {"type": ["string", "null"], "maxLength": 200},
        "code_entries": {"type": ["string", "null"], "description": "JSON code entries"},
    },
}
ENV = {"type": "string", "pattern": "[A-Za-z0-9_.-]{1,64}"}


def push(call: Call) -> dict[str, Any]:
    from oneoff._auth.operations import app_resource
    from oneoff._release.check import check_signature
    from oneoff._release.document import content_id, release_from_record
    from oneoff._release.floor import environment_floor
    from oneoff._server.pinning import release_keys
    from oneoff._store.interface import ReleaseRecord

    app, gate, body = call.worker.app, call.worker.gate, call.body
    principal = call.principal
    if principal is None:
        raise NotPermitted("pushing a release needs a signature")
    raw = body["document"].encode("utf-8", "surrogateescape")
    try:
        signature = (
            None
            if body["signature"] is None
            else base64.b64decode(body["signature"], validate=True)
        )
    except (binascii.Error, ValueError):
        raise UsageError("the release signature is not base64") from None
    probe = _record(content_id(raw), raw, signature, body["key_id"], body.get("code_entries"))
    release = release_from_record(probe, lambda: body.get("code_entries"))
    if release.app != app.project.name:
        raise ReleaseError(f"the release is for app {release.app!r}, not {app.project.name!r}")
    env = app.project.environment(release.environment)
    if release.created_by != principal.name:
        raise NotPermitted(f"{principal.name} cannot push a release made by {release.created_by!r}")
    gate.decide_operation(principal, "release", app_resource(), env)
    if release_keys(app).get(env.name) != call.ctx.release_keys.get(env.name):
        raise ReleaseError(
            f"the release keys {env.name!r} trusts changed on the server's disk since it "
            "started; refusing to trust them",
            hint="review the key files, then `oneoff server pin` and restart the server",
        )
    check_signature(app, release, env, use_cache=False)
    floor = environment_floor(app, env).version
    if release.min_version < floor:
        raise ReleaseError(
            f"release {release.label} lowers {env.name!r}'s floor (v{floor}); a floor never "
            "goes down"
        )
    record = ReleaseRecord(
        id=release.id, environment=env.name, version=release.version, document=probe.document,
        signature=signature, key_id=body["key_id"], created_at=release.created_at,
        created_by=release.created_by, code_entries=body.get("code_entries"),
    )  # fmt: skip
    store = app.store
    with store.tx():
        wanted = store.next_release_version(env.name)
        if release.version != wanted:
            raise ApiError(
                409,
                ReleaseError(
                    f"release version v{release.version} is not {env.name}'s next (v{wanted})"
                ),
            )
        store.add_release(record)
        store.set_current_release(env.name, release.id, updated_at=release.created_at)
    app.audit.append(
        "release.created",
        actor=principal.name,
        environment=env.name,
        release_id=release.id,
        payload={
            "version": release.version,
            "key_id": release.key_id,
            "code": release.code_digest,
            "deps": release.deps.digest,
            "config": release.config.digest,
            "git_commit": release.git_commit,
            "promoted_from": release.promoted_from,
            "min_version": release.min_version,
            "via": "server",
        },
    )
    return {"release": _json(record), "current": True}


def listing(call: Call) -> dict[str, Any]:
    store = call.worker.app.store
    environment = call.query.get("environment")
    if environment is not None:
        call.worker.app.project.environment(environment)  # UsageError for an unknown one
    records = store.list_releases(environment)
    names = sorted({r.environment for r in records})
    current = {name: store.current_release_id(name) for name in names}
    return {"releases": [_json(r) for r in records], "current": current}


def _record(
    rid: str, raw: bytes, signature: bytes | None, key_id: str | None, entries: str | None
) -> ReleaseRecord:
    """A row built from the document's own fields, so the row checks compare like with like."""
    import json

    from oneoff._store.interface import ReleaseRecord

    try:
        doc = json.loads(raw)
        environment, version = str(doc["environment"]), doc["version"]
        created_at, created_by = str(doc["created_at"]), str(doc["created_by"])
    except (ValueError, KeyError, TypeError):
        raise ReleaseError("the release document is malformed") from None
    if type(version) is not int:
        raise ReleaseError("the release document's version is not an integer")
    return ReleaseRecord(
        id=rid, environment=environment, version=version,
        document=raw.decode("utf-8", "surrogateescape"), signature=signature, key_id=key_id,
        created_at=created_at, created_by=created_by, code_entries=entries,
    )  # fmt: skip


def _json(record: ReleaseRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "environment": record.environment,
        "version": record.version,
        "document": record.document,
        "signature": None
        if record.signature is None
        else base64.b64encode(record.signature).decode(),
        "key_id": record.key_id,
        "created_at": record.created_at,
        "created_by": record.created_by,
    }


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return [
        api_route(
            ctx, "POST", "/v1/releases", push, auth="sign", body=PUSH, status=201,
            summary="Push a signed release document; it becomes the environment's current",
        ),
        api_route(
            ctx, "GET", "/v1/releases", listing, auth="session", query={"environment": ENV},
            summary="Releases (newest first per environment) and each one's current release",
        ),
    ]  # fmt: skip
