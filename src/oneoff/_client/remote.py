"""A connection to one team server for one command: public, read and acting calls.

* public calls (``/v1/server``, checkpoints, proofs) carry nothing;
* read calls carry the cached session token (``oneoff._client.session``), got by one
  signed ``POST /v1/session`` when there is none; a token the server refuses is dropped
  and a new one asked for, once;
* acting calls carry the signed envelope (``oneoff._envelope``) over their exact
  body bytes, for the server id ``/v1/server`` announced.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from oneoff.errors import OneoffError, StoreError, UsageError

if TYPE_CHECKING:
    from oneoff._client.http import Client
    from oneoff._client.url import ServerURL
    from oneoff._identity import Signer

__all__ = ["Remote", "segment"]

SESSION_PATH = "/v1/session"


def segment(value: str) -> str:
    """One path segment (an id from the command line), escaped so it stays one."""
    return quote(value, safe="")


class Remote:
    """One server, one signer (None: only public calls work), one open connection."""

    def __init__(self, server: ServerURL, signer: Signer | None) -> None:
        from oneoff._client.http import Client

        self.server = server
        self.signer = signer
        self.client: Client = Client(server)
        self._info: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.client.close()

    def info(self) -> dict[str, Any]:
        """``GET /v1/server``: the server's id, app, version and audit public key."""
        if self._info is None:
            _, data = self.client.call("GET", "/v1/server")
            if not isinstance(data, dict) or not isinstance(data.get("server_id"), str):
                raise StoreError(f"the server at {self.url} did not say who it is (/v1/server)")
            self._info = data
        return self._info

    def need_signer(self) -> Signer:
        """The signer, or a usage error saying how to give one."""
        if self.signer is None:
            raise UsageError(
                f"talking to the server at {self.url} needs your signature: pass --key "
                "~/.ssh/id_ed25519 (or a .pub with ssh-agent), or set ONEOFF_SIGNING_KEY"
            )
        return self.signer

    def public(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self.client.call("GET", path, query=_query(query))[1]

    def act(self, path: str, body: Any, *, method: str = "POST") -> Any:
        """A signed acting call with ``body`` (JSON-encoded here, hashed as sent)."""
        from oneoff._envelope import sign_envelope

        signer = self.need_signer()
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = sign_envelope(signer, method, path, "", data, self.info()["server_id"])
        return self.client.call(method, path, body=data, headers=headers)[1]

    def _token(self, *, fresh: bool = False) -> str:
        from oneoff._client.session import cached_token, drop_token, store_token

        signer = self.need_signer()
        if fresh:
            drop_token(self.url, signer)
        else:
            token = cached_token(self.url, signer)
            if token is not None:
                return token
        return store_token(self.url, signer, self.act(SESSION_PATH, {}))

    def read(self, path: str, query: dict[str, Any] | None = None) -> Any:
        """A read call with the session token (renewed once if the server refuses it)."""
        q = _query(query)
        for fresh in (False, True):
            headers = {"Authorization": f"Bearer {self._token(fresh=fresh)}"}
            try:
                return self.client.call("GET", path, query=q, headers=headers)[1]
            except OneoffError as exc:
                if fresh or getattr(exc, "http_status", None) != 401:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def _query(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    return urlencode({k: v for k, v in query.items() if v is not None})
