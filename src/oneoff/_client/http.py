"""One JSON call to the team server over stdlib ``http.client``, errors mapped back.

The server answers a failure with ``{"error": {"exit", "kind", "message", "hint"}}``;
:func:`error_from` turns it into the same oneoff error class with the same message and
exit code, so a command prints exactly what it prints in local mode. A server that cannot
be reached, answers garbage, or takes longer than the timeout is one line and exit 7 (the
server is the client's store), never a traceback.

TLS: an ``https://`` server's certificate is verified against the system's CAs, or only
against ``$ONEOFF_SERVER_CA`` (a PEM file) when set. Timeout: ``$ONEOFF_SERVER_TIMEOUT``
seconds (default 30) for connecting and for each read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff import errors
from oneoff.errors import OneoffError, StoreError, UsageError

if TYPE_CHECKING:
    import http.client

    from oneoff._client.url import ServerURL

__all__ = ["CA_VAR", "MAX_RESPONSE", "Client", "RemoteError", "ServerUnreachable", "error_from"]

CA_VAR = "ONEOFF_SERVER_CA"
TIMEOUT_VAR = "ONEOFF_SERVER_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
# Run output is the largest thing a read returns; the stored output cap is far below this.
MAX_RESPONSE = 256 * 1024 * 1024


class ServerUnreachable(StoreError):
    """The server did not answer (refused, name unknown, TLS failure, timed out)."""


class RemoteError(OneoffError):
    """A server error whose kind this client does not know: its exit code, as sent."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


def _known(kind: object) -> type[OneoffError] | None:
    if not isinstance(kind, str) or kind not in errors.__all__:
        return None
    cls = getattr(errors, kind, None)
    return cls if isinstance(cls, type) and issubclass(cls, OneoffError) else None


def error_from(status: int, data: object, where: str) -> OneoffError:
    """The oneoff error a server's error body stands for (exit 7 when there is none)."""
    body = data.get("error") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return StoreError(f"the server at {where} answered HTTP {status} without a oneoff error")
    message: str = body["message"]
    hint = body.get("hint") if isinstance(body.get("hint"), str) else None
    code = body.get("exit")
    if type(code) is not int or not 1 <= code <= 255:
        code = 1
    cls = _known(body.get("kind"))
    error = cls(message, hint=hint) if cls is not None and cls.exit_code == code else None
    error = error or RemoteError(message, hint=hint, exit_code=code)
    error.http_status = status  # type: ignore[attr-defined]  # a 401 renews a session
    return error


def _timeout(environ: Mapping[str, str]) -> float:
    raw = environ.get(TIMEOUT_VAR, "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise UsageError(f"{TIMEOUT_VAR} must be seconds between 0 and 3600, not {raw!r}")
    return value


class Client:
    """Calls one server; keeps its connection open between calls of one command."""

    def __init__(self, server: ServerURL, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.server = server
        self.timeout = _timeout(env)
        self.cafile = env.get(CA_VAR) or None
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        import http.client

        if self._conn is not None:
            return self._conn
        s = self.server
        if s.scheme == "https":
            import ssl

            if self.cafile is not None and not os.path.isfile(self.cafile):
                raise UsageError(f"{CA_VAR} names {self.cafile}, which is not a readable file")
            context = ssl.create_default_context(cafile=self.cafile)
            self._conn = http.client.HTTPSConnection(
                s.host, s.port, timeout=self.timeout, context=context
            )
        else:
            self._conn = http.client.HTTPConnection(s.host, s.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON)`` of a 2xx answer; a oneoff error for anything else."""
        target = self.server.prefix + path + (f"?{query}" if query else "")
        sent = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        # A kept-alive connection the server closed in between: one retry on a fresh one.
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                status, raw = self._exchange(method, target, body, sent)
                break
            except OSError as exc:
                self.close()
                if attempt == 0 and reused and not isinstance(exc, TimeoutError):
                    continue
                raise self._unreachable(exc) from None
        return status, self._parse(status, raw)

    def _exchange(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        import http.client

        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > MAX_RESPONSE:
                raise StoreError(f"the server's answer ({length} bytes) is too large")
            raw = response.read(MAX_RESPONSE + 1)
        except http.client.HTTPException as exc:  # a garbled or cut-off answer
            raise ConnectionError(f"bad HTTP answer: {type(exc).__name__}") from None
        if len(raw) > MAX_RESPONSE:
            self.close()
            raise StoreError(f"the server's answer is larger than {MAX_RESPONSE} bytes")
        if response.will_close:
            self.close()
        return response.status, raw

    def _unreachable(self, exc: OSError) -> ServerUnreachable:
        import ssl

        url = self.server.url
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, ssl.SSLError):
            why = f"TLS failed: {getattr(exc, 'reason', None) or exc}"
        else:
            why = exc.strerror or str(exc) or type(exc).__name__
        return ServerUnreachable(
            f"cannot reach the oneoff server at {url}: {why}",
            hint="is `oneoff server` running there? (--server, $ONEOFF_SERVER, [server] url)",
        )

    def _parse(self, status: int, raw: bytes) -> Any:
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            data = None
            if 200 <= status < 300:
                raise StoreError(
                    f"the server at {self.server.url} answered HTTP {status} with invalid JSON"
                ) from None
        if 200 <= status < 300:
            return data
        raise error_from(status, data, self.server.url)
