"""One declared API route: its method, path, who may call it, the body schema it checks.

Every ``/v1`` route is an ``ApiRoute``; ``oneoff._server.openapi`` documents the app from
the same specs, so what is validated is what is documented. The endpoint reads the body
(at most ``ctx.max_body`` bytes, counted while reading: 413 beyond), proves the caller
(a signed envelope for ``auth="sign"``, a bearer token for ``auth="session"``), then
parses and validates the JSON body, then calls the handler in a worker thread. Every
``OneoffError`` becomes the JSON error answer of ``oneoff._server.errors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oneoff._record import dataclass, field
from oneoff._server.errors import ApiError, RefusedCredential, error_response
from oneoff._server.schema import SchemaViolation, check_schema, validate
from oneoff.errors import OneoffError, StoreError, UsageError

if TYPE_CHECKING:
    from starlette.requests import Request

    from oneoff._app import App
    from oneoff._identity import Principal
    from oneoff._server.auth import PendingNonce
    from oneoff._server.context import ServerContext, Worker

__all__ = ["ApiRoute", "Call", "Spec", "api_route", "documented", "read_body"]

# "runner": the body carries a run token or run grant, which the handler checks; a refused
# one (RefusedCredential) counts toward the address's failure limit like a bad signature.
Auth = Literal["none", "sign", "session", "runner"]


@dataclass(frozen=True)
class Call:
    """What a handler gets: the caller, the validated body, path and query parameters."""

    ctx: ServerContext
    worker: Worker
    principal: Principal | None
    body: Any
    params: dict[str, str]
    query: dict[str, str]
    raw_body: bytes = b""
    #: The call's nonce, for a route whose handler spends it with its outcome
    #: (``spends_nonce``); spent afterwards if the handler did not.
    nonce: PendingNonce | None = None


@dataclass(frozen=True)
class Spec:
    method: str
    path: str
    auth: Auth
    summary: str
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int = 200
    response: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    spends_nonce: bool = False


class ApiRoute(Route):
    """A Starlette route that also carries its ``Spec`` (for /openapi.json)."""

    spec: Spec


def api_route(
    ctx: ServerContext,
    method: str,
    path: str,
    handler: Callable[[Call], Any],
    *,
    auth: Auth,
    summary: str,
    body: dict[str, Any] | None = None,
    query: dict[str, dict[str, Any]] | None = None,
    status: int = 200,
    response: dict[str, Any] | None = None,
    spends_nonce: bool = False,
) -> ApiRoute:
    """Declare one route; ``handler(call)`` runs in a worker thread and returns JSON.
    ``spends_nonce``: the handler spends the signed call's nonce (``call.nonce``) in the
    transaction that records its outcome (see ``oneoff._server.auth.PendingNonce``)."""
    if method != "GET" and auth == "session":
        raise TypeError(f"{method} {path}: a call that acts must be signed, not a session")
    if spends_nonce and auth != "sign":
        raise TypeError(f"{method} {path}: only a signed call has a nonce to spend")
    spec = Spec(
        method, path, auth, summary,
        body=None if body is None else check_schema(body),
        query={k: check_schema(v) for k, v in (query or {}).items()},
        status=status, response=response or {"type": "object"}, spends_nonce=spends_nonce,
    )  # fmt: skip

    async def endpoint(request: Request) -> Response:
        try:
            raw = await read_body(request, ctx.max_body)
            result = await run_in_threadpool(_handle, ctx, spec, handler, request, raw)
        except (OneoffError, ApiError) as exc:
            return error_response(exc)
        answer = JSONResponse(result, status_code=spec.status)
        if spec.auth != "none":
            # What a person may read is theirs alone: no proxy or browser cache keeps it.
            answer.headers["Cache-Control"] = "no-store"
        return answer

    route = ApiRoute(path, endpoint, methods=[method], name=f"{method} {path}")
    route.spec = spec
    return route


def documented(route: Route, spec: Spec) -> Route:
    """Attach ``spec`` to a hand-made route (e.g. a stream) so /openapi.json lists it."""
    route.spec = spec  # type: ignore[attr-defined]
    return route


def _handle(
    ctx: ServerContext, spec: Spec, handler: Callable[[Call], Any], request: Request, raw: bytes
) -> Any:
    try:
        return _handle_once(ctx, spec, handler, request, raw)
    except StoreError:
        ctx.discard_worker()
        raise


def _handle_once(
    ctx: ServerContext, spec: Spec, handler: Callable[[Call], Any], request: Request, raw: bytes
) -> Any:
    principal = None
    pending: list[PendingNonce] | None = [] if spec.spends_nonce else None
    if spec.auth == "runner":
        _not_throttled(ctx.worker().app, client_address(request), _now())
    elif spec.auth != "none":
        principal = _caller(ctx, spec, request, raw, pending)
    body = None
    if spec.body is not None:
        body = parse_json(raw)
        _validate(body, spec.body, "body")
    elif raw:
        raise UsageError(f"{spec.method} {spec.path} takes no body")
    query = dict(request.query_params)
    for name, value in query.items():
        if name not in spec.query:
            raise ApiError(422, UsageError(f"unknown query parameter {name[:40]!r}"))
        _validate(value, spec.query[name], f"query parameter {name}")
    nonce = pending[0] if pending else None
    call = Call(ctx, ctx.worker(), principal, body, dict(request.path_params), query, raw, nonce)
    if spec.auth == "runner":
        try:
            return handler(call)
        except RefusedCredential:
            counted_failure(ctx.worker().app, client_address(request), _now(), request.url.path)
            raise
    if nonce is None:
        return handler(call)
    try:
        result = handler(call)
    except StoreError:
        raise  # nothing of the call was written: the same call may be sent again
    except BaseException:
        if not nonce.spent:  # refused: spent all the same, never to pass later
            _spend(ctx, request, nonce)
        elif nonce.replayed:
            counted_failure(ctx.worker().app, client_address(request), _now(), request.url.path)
        raise
    if not nonce.spent:
        _spend(ctx, request, nonce)
    return result


def _spend(ctx: ServerContext, request: Request, nonce: PendingNonce) -> None:
    """Spend a call's nonce in its own commit; a replay is 409, audited and counted."""
    try:
        nonce.spend_alone()
    except ApiError:
        counted_failure(ctx.worker().app, client_address(request), _now(), request.url.path)
        raise


def _now() -> float:
    import time

    return time.time()


def _validate(value: Any, schema: dict[str, Any], where: str) -> None:
    try:
        validate(value, schema, where)
    except SchemaViolation as exc:
        raise ApiError(422, UsageError(f"bad request: {exc}")) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, UsageError(f"request body larger than {limit} bytes refused"))


def _caller(
    ctx: ServerContext,
    spec: Spec,
    request: Request,
    raw: bytes,
    defer: list[PendingNonce] | None = None,
) -> Principal:
    """Who signed the call, or whose token it carries; each failure counts toward the
    caller's address's limit, and an address over it is refused first (ratelimit)."""
    app = ctx.worker().app
    address, now = client_address(request), _now()
    _not_throttled(app, address, now)
    try:
        if spec.auth == "sign":
            return ctx.authenticate(request, raw, defer=defer)
        return ctx.session(request)
    except ApiError as exc:
        if exc.status in (401, 409):
            counted_failure(app, address, now, request.url.path)
        raise


def _not_throttled(app: App, address: str, now: float) -> None:
    """429 for an address over its failure limit, before its credentials are looked at."""
    from oneoff._server.ratelimit import throttled

    refusal = throttled(app.store, address, now)
    if refusal is not None:
        raise refusal


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def counted_failure(app: App, address: str, now: float, path: str) -> None:
    """Count one failed authentication from ``address``; audit the one that reaches the
    limit (the refusals after it are not audited: a flood does not grow the log)."""
    from oneoff._server.ratelimit import WINDOW, count_failure, limit

    if count_failure(app.store, address, now):
        app.audit.append(
            "auth.throttled", actor="unknown",
            payload={"address": address, "failures": limit(), "window": WINDOW, "path": path},
        )  # fmt: skip


def parse_json(raw: bytes) -> Any:
    """The body as JSON; 400 for bytes that are not UTF-8 JSON (duplicate keys, NaN too)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise ValueError("duplicate key")
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "malformed JSON"
        raise UsageError(f"bad request body: {reason}") from None
