"""Run grants and the runs they record: the endpoints over ``grants`` and ``runs``.

``POST /v1/grants`` is an acting call (the signed envelope) carrying, in its body, the
person's statement over the plan hash. The runner's calls for a granted run prove
themselves with what the grant answer gave: ``start`` with the grant itself (once), the
others with the run token (in the body, ``run_token``). Reads need a session token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from oneoff._server.errors import ApiError
from oneoff._server.routing import ApiRoute, Call, Spec, api_route
from oneoff._server.run_output import output_after
from oneoff._server.runs import Conflict, RunDesk
from oneoff.errors import OneoffError, UsageError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from oneoff._server.context import ServerContext

__all__ = ["routes"]

_ID = {"type": "string", "maxLength": 80}
_OBJ: dict[str, Any] = {"type": "object"}
_TOKEN = {"type": "string", "maxLength": 200}
GRANT = {
    "type": "object",
    "required": ["plan", "plan_hash", "statement", "signature"],
    "additionalProperties": False,
    "properties": {
        "plan": _OBJ, "plan_hash": {"type": "string", "maxLength": 80},
        "request": {"type": ["string", "null"], "maxLength": 80},
        "break_glass": {"type": ["object", "null"]}, "statement": _OBJ,
        "signature": {"type": "string", "maxLength": 4096}, "runner": _OBJ,
    },
}  # fmt: skip
START = {
    "type": "object",
    "required": ["grant", "signature", "plan_hash"],
    "additionalProperties": False,
    "properties": {
        "grant": _OBJ, "signature": {"type": "string", "maxLength": 200},
        "plan_hash": {"type": "string", "maxLength": 80}, "started": _OBJ,
        "run_token": _TOKEN,
    },
}  # fmt: skip
CHUNK = {
    "type": "object",
    "required": ["seq", "stream", "data"],
    "additionalProperties": False,
    "properties": {
        "seq": {"type": "integer", "minimum": 1},
        "stream": {"type": "integer", "enum": [1, 2]},
        "data": {"type": "string"},
    },
}
OUTPUT = {
    "type": "object",
    "required": ["run_token", "chunks"],
    "additionalProperties": False,
    "properties": {"run_token": _TOKEN, "chunks": {"type": "array", "items": CHUNK}},
}
HEARTBEAT = {
    "type": "object",
    "required": ["run_token"],
    "additionalProperties": False,
    "properties": {"run_token": _TOKEN},
}
FINISH = {
    "type": "object",
    "required": ["run_token", "status", "exit_code", "output"],
    "additionalProperties": False,
    "properties": {
        "run_token": _TOKEN,
        "status": {"type": "string", "maxLength": 20},
        "exit_code": {"type": ["integer", "null"]},
        "output": _OBJ,
        "error": {"type": "string", "maxLength": 2000},
    },
}
RUNS_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "string", "pattern": "[0-9]{1,4}"},
    "task": {"type": "string", "maxLength": 200},
    "environment": {"type": "string", "maxLength": 200},
    "status": {"type": "string", "maxLength": 20},
}
AFTER: dict[str, dict[str, Any]] = {"after": {"type": "string", "pattern": "[0-9]{1,9}"}}


class _Desk:
    """The one ``RunDesk`` of this server process, made on first use."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._desk: RunDesk | None = None
        self._lock = threading.Lock()

    def __call__(self, call: Call) -> RunDesk:
        with self._lock:
            if self._desk is None:
                self._desk = RunDesk(call.worker.app.state_dir, self.ctx.server_id)
            return self._desk


def _conflicts(handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
    def wrapped(call: Call) -> Any:
        try:
            return handler(call)
        except Conflict as exc:
            raise ApiError(409, exc.error) from None

    return wrapped


def routes(ctx: ServerContext) -> list[BaseRoute]:
    desk = _Desk(ctx)

    def grant(call: Call) -> Any:
        from oneoff._server.grants import issue_grant

        w = call.worker
        return issue_grant(desk(call), w.app, w.gate, call.principal, call.body)

    def runner_call(name: str) -> Callable[[Call], Any]:
        def handler(call: Call) -> Any:
            d, app = desk(call), call.worker.app
            run = d.authorize(app, call.params["id"], call.body.get("run_token"))
            if name == "output":
                return d.output(app, run, call.body["chunks"])
            if name == "heartbeat":
                return d.heartbeat(app, run)
            return d.finish(app, run, call.body)

        return _conflicts(handler)

    def start(call: Call) -> Any:
        return desk(call).start(call.worker.app, call.params["id"], call.body)

    def list_runs(call: Call) -> Any:
        from oneoff.cli._runs import run_as_dict

        app, q = call.worker.app, call.query
        desk(call).reap(app)
        found = app.store.list_runs(
            limit=int(q.get("limit", "20")), task=q.get("task"),
            environment=q.get("environment"), status=q.get("status"),
        )  # fmt: skip
        return {"runs": [run_as_dict(r) for r in found]}

    def show_run(call: Call) -> Any:
        from oneoff.cli._runs import run_as_dict

        app = call.worker.app
        desk(call).reap(app)
        return run_as_dict(app.store.get_run(call.params["id"]))

    def output(call: Call) -> Any:
        return output_after(call.worker.app, call.params["id"], int(call.query.get("after", "0")))

    def locks(call: Call) -> Any:
        app = call.worker.app
        d = desk(call)
        d.reap(app)
        shown = []
        for lock in app.store.lock_holders():
            if lock.name.startswith("run:"):
                continue  # a run's own liveness lease, not a resource
            try:
                fencing = d.granted(app, lock.run_id).get("seq")
            except UsageError:
                fencing = None  # taken by a local run on the server's store, not granted
            shown.append({
                "name": lock.name, "run_id": lock.run_id, "holder": lock.holder,
                "acquired_at": lock.acquired_at, "expires_at": lock.expires_at,
                "fencing": fencing,
            })  # fmt: skip
        return {"locks": shown}

    run = "/v1/runs/{id}"
    return [
        api_route(ctx, "POST", "/v1/grants", grant, auth="sign", body=GRANT,
                  summary="Decide a planned run and grant it: signed, single-use, bound to "
                  "the plan hash, with its locks' lease and fencing tokens"),
        api_route(ctx, "POST", run + "/start", _conflicts(start), auth="runner", body=START,
                  summary="Start a granted run by presenting its grant (once)"),
        api_route(ctx, "POST", run + "/output", runner_call("output"), auth="runner",
                  body=OUTPUT, summary="Output chunks of a run, idempotent by sequence number"),
        api_route(ctx, "POST", run + "/heartbeat", runner_call("heartbeat"), auth="runner",
                  body=HEARTBEAT, summary="Renew a run's lease (409: it was lost)"),
        api_route(ctx, "POST", run + "/finish", runner_call("finish"), auth="runner",
                  body=FINISH, summary="Record a run's outcome (idempotent)"),
        api_route(ctx, "GET", "/v1/runs", list_runs, auth="session", query=RUNS_QUERY,
                  summary="Runs, newest first"),
        api_route(ctx, "GET", run, show_run, auth="session", summary="One run"),
        api_route(ctx, "GET", run + "/output", output, auth="session", query=AFTER,
                  summary="A run's stored (redacted) output chunks after a sequence number"),
        _stream_route(ctx),
        api_route(ctx, "GET", "/v1/locks", locks, auth="session",
                  summary="Locks held, with their runs and fencing tokens"),
    ]  # fmt: skip


def _stream_route(ctx: ServerContext) -> ApiRoute:
    """``GET /v1/runs/{id}/stream``: Server-Sent Events of the run's redacted output as it
    is stored (``output`` events, JSON ``{seq, stream, text}``), then one ``end`` event."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import StreamingResponse

    from oneoff._server.errors import error_response

    def poll(request: Request, after: int) -> dict[str, Any]:
        ctx.session(request)  # every poll: a token that expired ends the stream
        return output_after(ctx.worker().app, request.path_params["id"], after)

    async def endpoint(request: Request) -> Response:
        try:
            first = await run_in_threadpool(poll, request, 0)
        except (OneoffError, ApiError) as exc:
            return error_response(exc)

        async def events() -> AsyncIterator[bytes]:
            answer, after = first, 0
            while True:
                for chunk in answer["chunks"]:
                    after = chunk["seq"]
                    text = base64.b64decode(chunk["data"]).decode("utf-8", "replace")
                    data = json.dumps({"seq": after, "stream": chunk["stream"], "text": text})
                    yield f"event: output\ndata: {data}\n\n".encode()
                if answer["status"] != "running" and not answer["chunks"]:
                    end = {"status": answer["status"], "exit_code": answer["exit_code"]}
                    yield f"event: end\ndata: {json.dumps(end)}\n\n".encode()
                    return
                if not answer["chunks"]:
                    yield b": waiting\n\n"  # a comment: keeps proxies from timing out
                    await asyncio.sleep(0.25)
                try:
                    answer = await run_in_threadpool(poll, request, after)
                except (OneoffError, ApiError):
                    return

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    route = ApiRoute("/v1/runs/{id}/stream", endpoint, methods=["GET"], name="stream")
    route.spec = Spec(
        "GET", "/v1/runs/{id}/stream", "session",
        "Live output of a run (Server-Sent Events: output, then end)",
        response={"type": "string"},
    )  # fmt: skip
    return route
