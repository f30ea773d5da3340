"""The ASGI app: the core routes plus every module in ``ROUTE_MODULES``.

Each route module exposes ``routes(ctx: ServerContext) -> list[BaseRoute]``; a helper
landing a module adds one line to ``ROUTE_MODULES``. Unexpected failures (bugs) answer a
JSON 500 without a traceback, and are logged.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse

from oneoff._server.errors import error_body
from oneoff._server.routing import Call, api_route
from oneoff.errors import OneoffError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from oneoff._server.context import ServerContext

__all__ = ["ROUTE_MODULES", "create_app"]

ROUTE_MODULES: tuple[str, ...] = (
    "oneoff._server.api_access",
    "oneoff._server.api_releases",
    "oneoff._server.api_audit",
    "oneoff._server.api_runs",
    "oneoff._server.console.routes",
)


def core_routes(ctx: ServerContext) -> list[BaseRoute]:
    def health(call: Call) -> dict[str, Any]:
        return {"ok": True}

    def server(call: Call) -> dict[str, Any]:
        return call.ctx.info()

    return [
        api_route(
            ctx, "GET", "/v1/health", health, auth="none",
            summary="Is the server up (no authentication)",
        ),
        api_route(
            ctx, "GET", "/v1/server", server, auth="none",
            summary="Server id (the audience every signed call names), app, version, audit "
            "public key, pinned access version",
        ),
    ]  # fmt: skip


def create_app(ctx: ServerContext) -> Starlette:
    from starlette.routing import Route

    from oneoff._server.openapi import openapi_document

    routes = core_routes(ctx)
    for name in ROUTE_MODULES:
        routes += importlib.import_module(name).routes(ctx)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(app))

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import anyio.to_thread

        # One store connection per worker thread: bound how many there are.
        anyio.to_thread.current_default_thread_limiter().total_tokens = ctx.threads
        try:
            yield
        finally:
            ctx.close()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: _crashed})
    app.state.ctx = ctx
    return app


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    from oneoff._log import log

    log("server.crashed", f"{request.method} {request.url.path}: {exc!r}", level="error")
    error = OneoffError("internal server error; see the server's log")
    return JSONResponse(error_body(error), status_code=500)
