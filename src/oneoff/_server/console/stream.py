"""Live run output for the console (Server-Sent Events), and the console's static files.

The stream reads the run's stored output, which the runner redacted before storing it
(and the server's output endpoint redacted again): the console never sees raw bytes. A
browser's EventSource cannot send a bearer token, so this stream is the console's own,
authenticated by the session cookie; it ends with the run, or with the session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from oneoff._server.console.render import HERE, secure
from oneoff._text import escape_lines
from oneoff.errors import OneoffError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from oneoff._server.console.routes import Console

__all__ = ["POLL_SECONDS", "run_stream", "static_file"]

POLL_SECONDS = 0.25
# A stream ends after this long and the browser reconnects (after RETRY_MS, resuming from
# the last chunk it got, by Last-Event-ID): no connection outlives a server's shutdown by
# more than this, and a session's end is noticed.
STREAM_SECONDS = 15.0
RETRY_MS = 500
_STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
}


def run_stream(console: Console) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """The handler of ``GET /console/runs/{id}/stream``."""

    async def handler(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import PlainTextResponse, StreamingResponse

        session = await run_in_threadpool(console.session, request)
        if session is None:
            return secure(PlainTextResponse("log in again: oneoff login --web", status_code=401))
        run_id = request.path_params["run_id"]
        try:
            run = await run_in_threadpool(lambda: console.ctx.worker().app.store.get_run(run_id))
        except OneoffError as exc:
            return secure(PlainTextResponse(exc.message, status_code=404))
        # Where to start: the last chunk this browser got (a reconnect), else the last one
        # the page was rendered with.
        after = request.headers.get("last-event-id") or request.query_params.get("after", "0")
        start = int(after) if after.isdigit() and len(after) < 12 else 0

        async def events() -> AsyncIterator[bytes]:
            import time

            from oneoff._server.console.views import Decoder

            decoder = Decoder()
            last = start
            until = min(time.time() + STREAM_SECONDS, session.expires)
            yield f"retry: {RETRY_MS}\n\n".encode()
            while True:
                pieces, last, status, exit_code = await run_in_threadpool(
                    _poll, console, run.id, last
                )
                ended = status != "running"
                for stream, text in decoder.decode(pieces, final=ended):
                    data = json.dumps({"stream": stream, "text": escape_lines(text)})
                    yield f"id: {last}\nevent: output\ndata: {data}\n\n".encode()
                if ended:
                    data = json.dumps({"status": status, "exit_code": exit_code})
                    yield f"event: end\ndata: {data}\n\n".encode()
                    return
                if time.time() >= until or await request.is_disconnected():
                    # The browser resumes after chunk ``last``: show what the decoder held.
                    for stream, text in decoder.decode([], final=True):
                        data = json.dumps({"stream": stream, "text": escape_lines(text)})
                        yield f"id: {last}\nevent: output\ndata: {data}\n\n".encode()
                    return
                await asyncio.sleep(POLL_SECONDS)

        response = StreamingResponse(events(), media_type="text/event-stream")
        response.headers["X-Accel-Buffering"] = "no"
        return secure(response)

    return handler


def _poll(
    console: Console, run_id: str, after: int
) -> tuple[list[tuple[int, bytes]], int, str, Any]:
    from oneoff._server.console.views import output_pieces

    app = console.ctx.worker().app
    # Status first: output stored before the run ended is then surely read below.
    run = app.store.get_run(run_id)
    pieces, last = output_pieces(app, run_id, after)
    return pieces, last, run.status, run.exit_code


def static_file(request: Request) -> Response:
    """One of the console's own static files (a fixed list: no path is ever built)."""
    from starlette.responses import PlainTextResponse, Response

    name = request.path_params["name"]
    media = _STATIC.get(name)
    if media is None:
        return secure(PlainTextResponse("not found", status_code=404))
    body = (HERE / "static" / name).read_bytes()
    response = secure(Response(body, media_type=media))
    response.headers["Cache-Control"] = "no-cache"
    return response
