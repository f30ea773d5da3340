"""``/openapi.json``: the OpenAPI 3.1 document, built from the routes' own specs.

The body and query schemas here are the very objects the routes validate with
(``oneoff._server.routing``), so the document cannot drift from what the server accepts.
Every route carrying a ``spec`` is documented: an ``ApiRoute``, or a hand-made route (a
stream) given one with ``routing.documented``. HTML pages and static files are not API.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from oneoff._envelope import SIGNATURE_HEADER, STATEMENT_HEADER
from oneoff._server.routing import Spec

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["exit", "kind", "message", "hint"],
            "properties": {
                "exit": {"type": "integer", "description": "the oneoff exit code"},
                "kind": {"type": "string", "description": "the oneoff error class"},
                "message": {"type": "string"},
                "hint": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "bad input (exit 2)",
    "401": "bad or missing signature or session token",
    "403": "not permitted by policy (exit 3)",
    "404": "not found",
    "409": "conflict: not pending, lock held, replayed statement",
    "413": "body too large",
    "422": "body or query does not match its schema",
    "503": "store unavailable (exit 7)",
}


def openapi_document(app: Starlette) -> dict[str, Any]:
    from oneoff._version import __version__

    paths: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        spec = getattr(route, "spec", None)
        if isinstance(spec, Spec):
            paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {"title": "oneoff team server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "signedStatement": {
                    "type": "apiKey",
                    "in": "header",
                    "name": STATEMENT_HEADER,
                    "description": f"with {SIGNATURE_HEADER}: an SSHSIG (namespace oneoff-api) "
                    "over the statement; see docs/server.md",
                },
                "session": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _operation(spec: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(spec.status): {
            "description": "success",
            "content": {"application/json": {"schema": spec.response}},
        }
    }
    for code, text in _ERRORS.items():
        responses[code] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", spec.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in spec.query.items()
    ]
    operation: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": f"{spec.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', spec.path.lower())}",
        "parameters": params,
        "responses": responses,
        "security": {
            "none": [],
            "sign": [{"signedStatement": []}],
            "session": [{"session": []}],
            "runner": [],  # a run token or grant in the body, not an HTTP credential
        }[spec.auth],
    }
    if spec.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": spec.body}},
        }
    return operation
