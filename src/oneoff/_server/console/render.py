"""Rendering the console: Jinja2 templates (autoescaped), security headers on every answer.

Every response of the console carries a strict Content-Security-Policy: scripts, styles
and images only from our own ``/static/`` files (no inline script or style, no CDN),
fetches and event streams only to us, forms only to us, never framed, no ``<base>``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["CSP", "SECURITY_HEADERS", "html", "redirect", "secure", "templates"]

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Pages show plans and output: nothing of them is kept by a shared browser's cache.
    "Cache-Control": "no-store",
}


@cache
def templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader

    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        # Everything is escaped, whatever the template's file name: a task description or
        # a param holding "<script>" is shown as text.
        autoescape=True,
        # HTML escaping leaves bidi overrides and control characters in the page, where
        # they reorder or hide text (an approver must read what is there): every value
        # is shown with them spelled out as \uXXXX (oneoff._text).
        finalize=_spelled_out,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _spelled_out(value: Any) -> Any:
    from markupsafe import Markup

    from oneoff._text import escape_lines

    if isinstance(value, Markup):  # already HTML (tojson...): escaping keeps it HTML
        return Markup(escape_lines(str(value)))  # noqa: S704 (its text was escaped HTML)
    return escape_lines(value) if isinstance(value, str) else value


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def html(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    """A page (or a fragment) rendered from ``template`` with the security headers."""
    from starlette.responses import HTMLResponse

    context.setdefault("session", None)
    context.setdefault("error", None)
    body = templates().get_template(template).render(request_path=request.url.path, **context)
    return secure(HTMLResponse(body, status_code=status))


def redirect(url: str) -> Response:
    """303 See Other: after a POST the browser GETs ``url`` (a local path only)."""
    from starlette.responses import RedirectResponse

    if not url.startswith("/") or url.startswith("//"):
        url = "/console/"
    return secure(RedirectResponse(url, status_code=303))
