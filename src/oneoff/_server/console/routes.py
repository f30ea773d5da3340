"""The web console's routes: read pages (GET) here, actions in ``actions``, streams in
``stream``. Registered in ``oneoff._server.app.ROUTE_MODULES``.

Reading needs a console session (a cookie from a signed login link, see
``oneoff._weblogin``). Approving never needs less than a key signature over the plan
hash: see docs/console.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneoff._server.console.render import html, redirect, secure
from oneoff.errors import OneoffError, UsageError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from oneoff._server.console.session import Session
    from oneoff._server.context import ServerContext

__all__ = ["Console", "routes"]

_RUN_FILTERS = ("task", "environment", "status")


class Console:
    """The console's handlers over one ServerContext (each runs in a worker thread)."""

    def __init__(self, ctx: ServerContext) -> None:
        from oneoff._server.console.session import console_key

        self.ctx = ctx
        self.key = console_key(ctx.session_key)

    # -- sessions ------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        from oneoff._server.console.session import cookie_name, read_cookie

        value = request.cookies.get(cookie_name(request.url.scheme == "https"))
        gate = self.ctx.worker().gate
        return read_cookie(self.key, value, self.ctx.server_id, gate.signers)

    def page(self, request: Request, template: str, build: Any) -> Response:
        """A page for a logged-in person; the login page for anyone else."""
        session = self.session(request)
        if session is None:
            return redirect("/console/login")
        worker = self.ctx.worker()
        try:
            context = build(worker.app, worker.gate, session)
        except OneoffError as exc:
            from oneoff.errors import NotPermitted

            if isinstance(exc, NotPermitted):
                status = 403
            else:
                status = 404 if isinstance(exc, UsageError) else 400
            return html(request, "error.html", status=status, session=session, error=exc)
        return html(request, template, session=session, **context)

    # -- pages ---------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        from oneoff._server.console.views import pending_requests

        return self.page(
            request, "index.html", lambda app, gate, s: {"pending": pending_requests(app)}
        )

    def pending_fragment(self, request: Request) -> Response:
        from oneoff._server.console.views import pending_requests

        if self.session(request) is None:
            return secure(_text(401, "log in again: oneoff login --web"))
        return self.page(
            request, "pending.html", lambda app, gate, s: {"pending": pending_requests(app)}
        )

    def request_page(self, request: Request) -> Response:
        return self.page(request, "request.html", self._request_context(request))

    def approvals_fragment(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return secure(_text(401, "log in again: oneoff login --web"))
        return self.page(request, "approvals.html", self._request_context(request))

    def _request_context(self, request: Request) -> Any:
        from oneoff._identity import iso, utc_now
        from oneoff._server.console.views import approval_to_sign, request_view

        request_id = request.path_params["request_id"]

        def build(app: Any, gate: Any, session: Session) -> dict[str, Any]:
            view = request_view(app, gate, request_id, session.principal.name)
            to_sign = approval_to_sign(view.request, gate.version, iso(utc_now()))
            base = f"{request.url.scheme}://{request.url.netloc}"
            return {"view": view, "to_sign": to_sign, "server_url": base}

        return build

    def runs(self, request: Request) -> Response:
        filters = {k: request.query_params.get(k, "").strip() for k in _RUN_FILTERS}
        limit = _int(request.query_params.get("limit"), 50, 500)

        def build(app: Any, gate: Any, session: Session) -> dict[str, Any]:
            from oneoff._store.interface import RUN_STATUSES

            status = filters["status"]
            if status and status not in RUN_STATUSES:
                raise UsageError(f"unknown status {status!r}")
            found = app.store.list_runs(limit=limit, **{k: v or None for k, v in filters.items()})
            return {"runs": found, "filters": filters, "statuses": RUN_STATUSES, "limit": limit}

        return self.page(request, "runs.html", build)

    def run_page(self, request: Request) -> Response:
        from oneoff._server.console.views import Decoder, output_pieces

        run_id = request.path_params["run_id"]

        def build(app: Any, gate: Any, session: Session) -> dict[str, Any]:
            run = app.store.get_run(run_id)
            pieces, last = output_pieces(app, run.id)
            # Decoded to the end: the stream, if any, resumes after the last whole chunk.
            return {"run": run, "pieces": Decoder().decode(pieces, final=True), "last": last}

        return self.page(request, "run.html", build)

    def audit(self, request: Request) -> Response:
        from oneoff._server.console.audit_view import audit_rows

        kind = request.query_params.get("kind", "").strip()
        run_id = request.query_params.get("run", "").strip()
        limit = _int(request.query_params.get("limit"), 100, 500)

        def build(app: Any, gate: Any, session: Session) -> dict[str, Any]:
            from oneoff._auth.operations import app_resource, whole_app

            # Reading events is exporting them, as over the API: the pinned policy decides.
            gate.decide_operation(
                session.principal, "audit-export", app_resource(), whole_app(app.project)
            )
            rows, summary = audit_rows(app, kind=kind, run_id=run_id, limit=limit)
            return {"rows": rows, "summary": summary, "kind": kind, "run": run_id, "limit": limit}

        return self.page(request, "audit.html", build)

    def break_glass(self, request: Request) -> Response:
        from oneoff._breakglass import break_glass_runs

        return self.page(
            request, "breakglass.html", lambda app, gate, s: {"runs": break_glass_runs(app)}
        )

    def login_page(self, request: Request) -> Response:
        return html(
            request, "login.html", server_url=f"{request.url.scheme}://{request.url.netloc}"
        )


def _int(text: str | None, default: int, most: int) -> int:
    try:
        value = int(text) if text else default
    except ValueError:
        value = default
    return max(1, min(value, most))


def _text(status: int, message: str) -> Response:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(message, status_code=status)


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The console's routes, for ``oneoff._server.app``."""
    from starlette.routing import Route

    from oneoff._server.console.actions import Actions
    from oneoff._server.console.stream import run_stream, static_file

    console = Console(ctx)
    actions = Actions(console)
    return [
        Route("/", lambda request: redirect("/console/"), methods=["GET"]),
        Route("/console", lambda request: redirect("/console/"), methods=["GET"]),
        Route("/favicon.ico", lambda request: secure(_text(404, "")), methods=["GET"]),
        Route("/console/", console.home, methods=["GET"]),
        Route("/console/pending", console.pending_fragment, methods=["GET"]),
        Route("/console/login", console.login_page, methods=["GET"]),
        Route("/console/login", actions.login, methods=["POST"]),
        Route("/console/logout", actions.logout, methods=["POST"]),
        Route("/console/requests/{request_id}", console.request_page, methods=["GET"]),
        Route(
            "/console/requests/{request_id}/approvals",
            console.approvals_fragment,
            methods=["GET"],
        ),
        Route("/console/requests/{request_id}/approve", actions.approve, methods=["POST"]),
        Route("/console/requests/{request_id}/deny", actions.deny, methods=["POST"]),
        Route("/console/runs", console.runs, methods=["GET"]),
        Route("/console/runs/{run_id}", console.run_page, methods=["GET"]),
        Route("/console/runs/{run_id}/stream", run_stream(console), methods=["GET"]),
        Route("/console/audit", console.audit, methods=["GET"]),
        Route("/console/break-glass", console.break_glass, methods=["GET"]),
        Route("/static/{name}", static_file, methods=["GET"]),
    ]
